"""The api service: a thin HTTP API over the rollups, manual checks through the prober."""
