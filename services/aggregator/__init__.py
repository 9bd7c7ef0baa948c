"""The aggregator: daily and hourly rollups, uptime records, status and SLA events."""
