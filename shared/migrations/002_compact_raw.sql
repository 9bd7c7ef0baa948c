-- Schema version 2: compact raw storage (~130 bytes per one-endpoint check instead of ~450).
--
-- check_results holds one row per check; for a one-endpoint check it also holds the call
-- (status code, time, threshold), so endpoint_results only has rows for checks with two
-- or more endpoints. Names (service, region/prober, endpoint) are small ids into lookup
-- tables; status, trigger and error type are one-byte codes. `scheduled_at` and
-- `recorded_at` are no longer kept. The seed's names, watch_server_logs and
-- api_response_times, are now views with the version-1 columns (minus those two), so
-- readers are unchanged; an INSERT into watch_server_logs still works (a trigger).

CREATE TABLE raw_service_ids (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id text NOT NULL UNIQUE
);

CREATE TABLE raw_sources (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region    text NOT NULL,
    prober_id text NOT NULL,
    UNIQUE (region, prober_id)
);

-- smallint ids: up to 32,767 distinct (service, endpoint name, method).
CREATE TABLE raw_endpoints (
    id          smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_ref integer NOT NULL REFERENCES raw_service_ids (id),
    name        text NOT NULL,
    method      text NOT NULL,
    UNIQUE (service_ref, name, method)
);

-- Column order keeps the row at 80 bytes: widest first, no alignment padding.
CREATE TABLE check_results (
    check_id         uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    service_ref      integer NOT NULL,
    source_ref       integer NOT NULL,
    response_time_ms real NOT NULL,      -- the call's time for one endpoint, else the check's
    endpoint_ref     smallint,           -- one-endpoint checks: the endpoint
    status_code      smallint,           -- one-endpoint checks: its HTTP status
    endpoint_count   smallint NOT NULL,
    failed_count     smallint NOT NULL,
    status           "char" NOT NULL,    -- u up, g degraded, d down
    trigger          "char" NOT NULL,    -- s scheduled, m manual
    error_type       "char",             -- the first failure, see watch_error_name()
    within_threshold boolean NOT NULL,   -- every call ok and within its latency threshold
    error_message    text,
    PRIMARY KEY (check_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX check_results_started_at ON check_results USING brin (started_at);

CREATE TABLE endpoint_results (
    check_id         uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    response_time_ms real NOT NULL,
    endpoint_ref     smallint NOT NULL,
    endpoint_index   smallint NOT NULL,
    status_code      smallint,
    ok               boolean NOT NULL,
    within_threshold boolean NOT NULL,
    error_type       "char",
    PRIMARY KEY (check_id, endpoint_index, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX endpoint_results_started_at ON endpoint_results USING brin (started_at);

CREATE FUNCTION watch_error_name(code "char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE code WHEN 't' THEN 'timeout' WHEN 'c' THEN 'connection' WHEN 'n' THEN 'dns'
        WHEN 's' THEN 'tls' WHEN 'h' THEN 'http_status' WHEN 'a' THEN 'assertion'
        WHEN 'o' THEN 'other' END
$$;

CREATE FUNCTION watch_error_code(name text) RETURNS "char"
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE name WHEN 'timeout' THEN 't' WHEN 'connection' THEN 'c' WHEN 'dns' THEN 'n'
        WHEN 'tls' THEN 's' WHEN 'http_status' THEN 'h' WHEN 'assertion' THEN 'a'
        WHEN 'other' THEN 'o' END::"char"
$$;

-- Get-or-create the id of a name; ids are never deleted, so a cached id stays valid.
CREATE FUNCTION watch_service_ref(p_service text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE ref integer;
BEGIN
    SELECT id INTO ref FROM raw_service_ids WHERE service_id = p_service;
    IF ref IS NULL THEN
        INSERT INTO raw_service_ids (service_id) VALUES (p_service)
        ON CONFLICT DO NOTHING RETURNING id INTO ref;
        IF ref IS NULL THEN  -- another writer created it meanwhile
            SELECT id INTO ref FROM raw_service_ids WHERE service_id = p_service;
        END IF;
    END IF;
    RETURN ref;
END
$$;

CREATE FUNCTION watch_source_ref(p_region text, p_prober text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE ref integer;
BEGIN
    SELECT id INTO ref FROM raw_sources WHERE region = p_region AND prober_id = p_prober;
    IF ref IS NULL THEN
        INSERT INTO raw_sources (region, prober_id) VALUES (p_region, p_prober)
        ON CONFLICT DO NOTHING RETURNING id INTO ref;
        IF ref IS NULL THEN
            SELECT id INTO ref FROM raw_sources WHERE region = p_region AND prober_id = p_prober;
        END IF;
    END IF;
    RETURN ref;
END
$$;

CREATE FUNCTION watch_endpoint_ref(p_service text, p_name text, p_method text) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    svc integer := watch_service_ref(p_service);
    ref smallint;
BEGIN
    SELECT id INTO ref FROM raw_endpoints
    WHERE service_ref = svc AND name = p_name AND method = p_method;
    IF ref IS NULL THEN
        INSERT INTO raw_endpoints (service_ref, name, method) VALUES (svc, p_name, p_method)
        ON CONFLICT DO NOTHING RETURNING id INTO ref;
        IF ref IS NULL THEN
            SELECT id INTO ref FROM raw_endpoints
            WHERE service_ref = svc AND name = p_name AND method = p_method;
        END IF;
    END IF;
    RETURN ref;
END
$$;

-- Partitions are managed under the seed's names too, so callers need not know the change.
CREATE OR REPLACE FUNCTION watch_raw_table(p_table text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_table WHEN 'watch_server_logs' THEN 'check_results'
        WHEN 'api_response_times' THEN 'endpoint_results' ELSE p_table END
$$;

CREATE OR REPLACE FUNCTION watch_ensure_partitions(p_table text, p_from date, p_to date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    parent text := watch_raw_table(p_table);
    part text;
    created integer := 0;
BEGIN
    FOR d IN SELECT generate_series(p_from, p_to, interval '1 day')::date LOOP
        part := format('%s_p%s', parent, to_char(d, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                part, parent, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Retention: DROP TABLE of whole daily partitions (no row-by-row delete, no long lock).
CREATE OR REPLACE FUNCTION watch_drop_partitions(p_table text, p_before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = watch_raw_table(p_table) AND c.relname ~ '_p[0-9]{8}$'
    LOOP
        IF to_date(right(part.relname, 8), 'YYYYMMDD') + 1 <= p_before THEN
            EXECUTE format('DROP TABLE IF EXISTS %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;

-- Carry version-1 rows over.
ALTER TABLE watch_server_logs RENAME TO watch_server_logs_v1;
ALTER TABLE api_response_times RENAME TO api_response_times_v1;

SELECT watch_ensure_partitions('check_results', min(started_at AT TIME ZONE 'UTC')::date,
                               max(started_at AT TIME ZONE 'UTC')::date)
FROM watch_server_logs_v1 HAVING count(*) > 0;
SELECT watch_ensure_partitions('endpoint_results', min(started_at AT TIME ZONE 'UTC')::date,
                               max(started_at AT TIME ZONE 'UTC')::date)
FROM watch_server_logs_v1 HAVING count(*) > 0;

INSERT INTO check_results
SELECT l.check_id, l.started_at, watch_service_ref(l.service_id),
       watch_source_ref(l.region, l.prober_id),
       CASE WHEN l.endpoint_count = 1 THEN coalesce(t.response_time_ms, l.response_time_ms)
            ELSE l.response_time_ms END,
       CASE WHEN l.endpoint_count = 1 AND t.check_id IS NOT NULL
            THEN watch_endpoint_ref(l.service_id, t.endpoint_name, t.method) END,
       CASE WHEN l.endpoint_count = 1 THEN t.status_code END,
       l.endpoint_count, l.failed_count,
       CASE l.status WHEN 'up' THEN 'u' WHEN 'degraded' THEN 'g' ELSE 'd' END::"char",
       CASE l.trigger WHEN 'manual' THEN 'm' ELSE 's' END::"char",
       watch_error_code(l.error_type),
       coalesce(t.within_threshold, l.failed_count = 0 AND l.status = 'up'),
       l.error_message
FROM watch_server_logs_v1 l
LEFT JOIN api_response_times_v1 t
    ON l.endpoint_count = 1 AND t.check_id = l.check_id AND t.started_at = l.started_at
       AND t.endpoint_index = 0;

INSERT INTO endpoint_results
SELECT t.check_id, t.started_at, t.response_time_ms,
       watch_endpoint_ref(t.service_id, t.endpoint_name, t.method), t.endpoint_index,
       t.status_code, t.ok, t.within_threshold, watch_error_code(t.error_type)
FROM api_response_times_v1 t
JOIN watch_server_logs_v1 l ON l.check_id = t.check_id AND l.started_at = t.started_at
WHERE l.endpoint_count > 1;

DROP TABLE watch_server_logs_v1;
DROP TABLE api_response_times_v1;

CREATE VIEW watch_server_logs AS
SELECT r.check_id, r.started_at, s.service_id,
       CASE r.status WHEN 'u' THEN 'up' WHEN 'g' THEN 'degraded' ELSE 'down' END AS status,
       r.response_time_ms, r.endpoint_count, r.failed_count,
       watch_error_name(r.error_type) AS error_type, r.error_message, src.region, src.prober_id,
       CASE r.trigger WHEN 'm' THEN 'manual' ELSE 'scheduled' END AS trigger
FROM check_results r
JOIN raw_service_ids s ON s.id = r.service_ref
JOIN raw_sources src ON src.id = r.source_ref;

CREATE VIEW api_response_times AS
SELECT r.check_id, 0::smallint AS endpoint_index, r.started_at, s.service_id,
       e.name AS endpoint_name, e.method, r.status_code, r.response_time_ms,
       r.failed_count = 0 AS ok, r.within_threshold, watch_error_name(r.error_type) AS error_type
FROM check_results r
JOIN raw_service_ids s ON s.id = r.service_ref
LEFT JOIN raw_endpoints e ON e.id = r.endpoint_ref
WHERE r.endpoint_count = 1
UNION ALL
SELECT x.check_id, x.endpoint_index, x.started_at, s.service_id, e.name, e.method,
       x.status_code, x.response_time_ms, x.ok, x.within_threshold,
       watch_error_name(x.error_type)
FROM endpoint_results x
JOIN raw_endpoints e ON e.id = x.endpoint_ref
JOIN raw_service_ids s ON s.id = e.service_ref;

-- Writes through the old name (tools, fixtures): one check row, idempotent on check_id.
CREATE FUNCTION watch_server_logs_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO check_results (
        check_id, started_at, service_ref, source_ref, response_time_ms, endpoint_count,
        failed_count, status, trigger, error_type, within_threshold, error_message)
    VALUES (
        NEW.check_id, NEW.started_at, watch_service_ref(NEW.service_id),
        watch_source_ref(NEW.region, NEW.prober_id), NEW.response_time_ms,
        NEW.endpoint_count, NEW.failed_count,
        CASE NEW.status WHEN 'up' THEN 'u' WHEN 'degraded' THEN 'g' ELSE 'd' END::"char",
        CASE NEW.trigger WHEN 'manual' THEN 'm' ELSE 's' END::"char",
        watch_error_code(NEW.error_type), NEW.status = 'up', NEW.error_message)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER watch_server_logs_insert INSTEAD OF INSERT ON watch_server_logs
FOR EACH ROW EXECUTE FUNCTION watch_server_logs_insert();
