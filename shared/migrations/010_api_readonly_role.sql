-- The api's read-only role: the api runs `SET ROLE watch_api_ro` on each connection
-- (API_DB_READONLY=1, the default), so even a bug in the api cannot write. NOLOGIN: it is
-- entered from the login role, never logged into (a deployment may ALTER ROLE ... LOGIN
-- PASSWORD and point the api's DATABASE_URL at it instead). Roles are cluster-wide, so it is
-- created only when missing; the grants are per database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'watch_api_ro') THEN
        CREATE ROLE watch_api_ro NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database of the cluster created it at the same moment
END
$$;

-- The login role that migrates is the one the services connect as: it may SET ROLE.
GRANT watch_api_ro TO CURRENT_USER;

GRANT USAGE ON SCHEMA public TO watch_api_ro;
GRANT SELECT ON schema_migrations, services, api_call_logs, api_call_logs_hourly,
    uptime_records, service_state TO watch_api_ro;
-- From the raw results only what /api/status needs (prober heartbeats).
GRANT SELECT (service_id, prober_id, region, started_at) ON watch_server_logs TO watch_api_ro;
