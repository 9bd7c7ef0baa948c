"""The prober: runs the catalog's checks on schedule and publishes each result to JetStream."""
