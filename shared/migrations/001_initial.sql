-- Watch Server schema, version 1: the seed's five tables, the hourly rollup and the
-- aggregator's bookkeeping. Days and hours are UTC. Raw tables are partitioned by day.

CREATE TABLE services (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    description      text NOT NULL DEFAULT '',
    active           boolean NOT NULL DEFAULT true,
    interval_seconds double precision NOT NULL,
    timeout_ms       integer NOT NULL,
    sla_target       double precision NOT NULL,
    endpoints        jsonb NOT NULL DEFAULT '[]',
    defined_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per check (raw). Written by the recorder only.
CREATE TABLE watch_server_logs (
    check_id         uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    service_id       text NOT NULL,
    scheduled_at     timestamptz,
    status           text NOT NULL CHECK (status IN ('up', 'degraded', 'down')),
    response_time_ms real NOT NULL,
    endpoint_count   smallint NOT NULL,
    failed_count     smallint NOT NULL,
    error_type       text,
    error_message    text,
    region           text NOT NULL,
    prober_id        text NOT NULL,
    trigger          text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (check_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX watch_server_logs_service_time ON watch_server_logs (service_id, started_at);

-- One row per endpoint call (raw). Written by the recorder only.
CREATE TABLE api_response_times (
    check_id         uuid NOT NULL,
    endpoint_index   smallint NOT NULL,
    started_at       timestamptz NOT NULL,
    service_id       text NOT NULL,
    endpoint_name    text NOT NULL,
    method           text NOT NULL,
    status_code      smallint,
    response_time_ms real NOT NULL,
    ok               boolean NOT NULL,
    within_threshold boolean NOT NULL,
    error_type       text,
    PRIMARY KEY (check_id, endpoint_index, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX api_response_times_service_time ON api_response_times (service_id, started_at);

-- Daily counters per service over endpoint calls. Written by the aggregator only.
-- timed_requests counts the calls that got an HTTP response: only they feed the
-- response-time sum/min/max and the latency histogram (a timeout has no response time).
CREATE TABLE api_call_logs (
    service_id           text NOT NULL,
    day                  date NOT NULL,
    total_checks         bigint NOT NULL DEFAULT 0,
    up_checks            bigint NOT NULL DEFAULT 0,
    degraded_checks      bigint NOT NULL DEFAULT 0,
    down_checks          bigint NOT NULL DEFAULT 0,
    total_requests       bigint NOT NULL DEFAULT 0,
    successful_requests  bigint NOT NULL DEFAULT 0,
    failed_requests      bigint NOT NULL DEFAULT 0,
    within_threshold     bigint NOT NULL DEFAULT 0,
    timed_requests       bigint NOT NULL DEFAULT 0,
    sum_response_time_ms double precision NOT NULL DEFAULT 0,
    min_response_time_ms double precision,
    max_response_time_ms double precision,
    errors               jsonb NOT NULL DEFAULT '{}',
    latency_hist         jsonb NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, day)
);

-- The same counters per hour, for trends.
CREATE TABLE api_call_logs_hourly (
    service_id           text NOT NULL,
    hour                 timestamptz NOT NULL,
    total_checks         bigint NOT NULL DEFAULT 0,
    up_checks            bigint NOT NULL DEFAULT 0,
    degraded_checks      bigint NOT NULL DEFAULT 0,
    down_checks          bigint NOT NULL DEFAULT 0,
    total_requests       bigint NOT NULL DEFAULT 0,
    successful_requests  bigint NOT NULL DEFAULT 0,
    failed_requests      bigint NOT NULL DEFAULT 0,
    within_threshold     bigint NOT NULL DEFAULT 0,
    timed_requests       bigint NOT NULL DEFAULT 0,
    sum_response_time_ms double precision NOT NULL DEFAULT 0,
    min_response_time_ms double precision,
    max_response_time_ms double precision,
    errors               jsonb NOT NULL DEFAULT '{}',
    latency_hist         jsonb NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, hour)
);

-- The day's status per service: o / po / mo (a day with no row is nd).
CREATE TABLE uptime_records (
    service_id          text NOT NULL,
    day                 date NOT NULL,
    status              text NOT NULL CHECK (status IN ('o', 'po', 'mo', 'nd')),
    uptime              double precision,
    total_requests      bigint NOT NULL DEFAULT 0,
    successful_requests bigint NOT NULL DEFAULT 0,
    sla_target          double precision NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, day)
);

-- Checks the aggregator has counted: inserted in the same transaction as their
-- contribution, so a redelivered check is recognised and counts once.
CREATE TABLE aggregator_applied (
    check_id   uuid NOT NULL,
    started_at timestamptz NOT NULL,
    PRIMARY KEY (check_id, started_at)
) PARTITION BY RANGE (started_at);

-- The aggregator's view of each service, to publish each transition once.
CREATE TABLE service_state (
    service_id      text PRIMARY KEY,
    last_status     text,
    last_check_id   uuid,
    last_started_at timestamptz,
    sla_breached    boolean NOT NULL DEFAULT false,
    sla_changed_at  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events written in the transaction that decided them, published afterwards
-- (Nats-Msg-Id = msg_id, so a retry after a crash is deduplicated by JetStream).
CREATE TABLE event_outbox (
    id         bigserial PRIMARY KEY,
    msg_id     text NOT NULL UNIQUE,
    subject    text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Merge two latency histograms ({"bucket": count}) by adding counts.
CREATE FUNCTION watch_hist_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k, s), '{}'::jsonb)
    FROM (
        SELECT k, sum(v::bigint) AS s
        FROM (
            SELECT key AS k, value AS v FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT key, value FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) x
        GROUP BY k
    ) y
$$;

-- Create the daily partitions of a table for [p_from, p_to]; returns how many were new.
CREATE FUNCTION watch_ensure_partitions(p_table text, p_from date, p_to date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    created integer := 0;
BEGIN
    FOR d IN SELECT generate_series(p_from, p_to, interval '1 day')::date LOOP
        part := format('%s_p%s', p_table, to_char(d, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                part, p_table, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the daily partitions of a table that end on or before p_before; returns how many.
CREATE FUNCTION watch_drop_partitions(p_table text, p_before date) RETURNS integer
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
        WHERE p.relname = p_table AND c.relname ~ '_p[0-9]{8}$'
    LOOP
        IF to_date(right(part.relname, 8), 'YYYYMMDD') + 1 <= p_before THEN
            EXECUTE format('DROP TABLE IF EXISTS %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;
