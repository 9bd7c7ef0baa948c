-- The api reads prober heartbeats from raw_sources (migration 004).
GRANT SELECT (region, prober_id, last_check_at) ON raw_sources TO watch_api_ro;
