-- When each prober (region, proberId) last had a check stored, kept by the recorder with
-- each batch and by the insert trigger of the watch_server_logs view: /api/status reads its
-- prober heartbeats here instead of scanning the last hour of raw rows (millions of rows at
-- 50,000 endpoints).
ALTER TABLE raw_sources ADD COLUMN last_check_at timestamptz;

UPDATE raw_sources AS s SET last_check_at = m.last_check_at
FROM (SELECT source_ref, max(started_at) AS last_check_at
      FROM check_results WHERE started_at >= now() - interval '1 hour'
      GROUP BY source_ref) AS m
WHERE s.id = m.source_ref;

-- Writes through the old name (tools, fixtures) keep it too.
CREATE OR REPLACE FUNCTION watch_server_logs_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    src integer := watch_source_ref(NEW.region, NEW.prober_id);
BEGIN
    INSERT INTO check_results (
        check_id, started_at, service_ref, source_ref, response_time_ms, endpoint_count,
        failed_count, status, trigger, error_type, within_threshold, error_message)
    VALUES (
        NEW.check_id, NEW.started_at, watch_service_ref(NEW.service_id), src,
        NEW.response_time_ms, NEW.endpoint_count, NEW.failed_count,
        CASE NEW.status WHEN 'up' THEN 'u' WHEN 'degraded' THEN 'g' ELSE 'd' END::"char",
        CASE NEW.trigger WHEN 'manual' THEN 'm' ELSE 's' END::"char",
        watch_error_code(NEW.error_type), NEW.status = 'up', NEW.error_message)
    ON CONFLICT DO NOTHING;
    UPDATE raw_sources SET last_check_at = NEW.started_at
    WHERE id = src AND (last_check_at IS NULL OR last_check_at < NEW.started_at);
    RETURN NEW;
END
$$;
