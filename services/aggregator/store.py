"""The aggregator's PostgreSQL side: one transaction per batch, the outbox, partitions.

Each table written here has the aggregator as its only writer. Locks are taken in one
order (applied checks, service_state, daily, hourly, uptime_records, region states, outbox),
each in key order, so replicas sharing the consumer do not deadlock on one another's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.aggregator import quorum, rollups
from services.aggregator.quorum import RegionState
from services.aggregator.rollups import ServiceState
from shared import db, rules
from shared.events import (
    SLA_SUBJECT,
    STATUS_SUBJECT,
    CheckCompleted,
    SlaBreached,
    SlaRecovered,
    SlaWindow,
    StatusChanged,
)
from shared.rollup_row import ROLLUP_COLUMNS
from shared.settings import Settings

APPLIED_TABLE = "aggregator_applied"
_MAINTENANCE_LOCK = 0x5741_5443_4803  # "WATCH" + 3: one replica maintains partitions at a time
_OUTBOX_LOCK = 0x5741_5443_4833  # one replica relays the outbox at a time, keeping its order
_UNKNOWN_INTERVAL_SECONDS = 60.0  # a region's vote lasts two intervals; this before ServiceDefined

Conn = asyncpg.Connection | PoolConnectionProxy

_COUNTER_COLUMNS = ", ".join(ROLLUP_COLUMNS)
_UNNEST_TYPES = (
    "$1::text[], $2::{key}[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], "
    "$7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::float8[], "
    "$13::float8[], $14::float8[], $15::text[], $16::text[]"
)
_ADD_ON_CONFLICT = """
    total_checks = t.total_checks + excluded.total_checks,
    up_checks = t.up_checks + excluded.up_checks,
    degraded_checks = t.degraded_checks + excluded.degraded_checks,
    down_checks = t.down_checks + excluded.down_checks,
    total_requests = t.total_requests + excluded.total_requests,
    successful_requests = t.successful_requests + excluded.successful_requests,
    failed_requests = t.failed_requests + excluded.failed_requests,
    within_threshold = t.within_threshold + excluded.within_threshold,
    timed_requests = t.timed_requests + excluded.timed_requests,
    sum_response_time_ms = t.sum_response_time_ms + excluded.sum_response_time_ms,
    min_response_time_ms = least(t.min_response_time_ms, excluded.min_response_time_ms),
    max_response_time_ms = greatest(t.max_response_time_ms, excluded.max_response_time_ms),
    errors = watch_hist_merge(t.errors, excluded.errors),
    latency_hist = watch_hist_merge(t.latency_hist, excluded.latency_hist),
    updated_at = now()"""


def _upsert_sql(table: str, key: str, key_type: str) -> str:
    return f"""
        INSERT INTO {table} AS t (service_id, {key}, {_COUNTER_COLUMNS})
        SELECT s, k, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, e::jsonb, h::jsonb
        FROM unnest({_UNNEST_TYPES.format(key=key_type)})
             WITH ORDINALITY AS u(s, k, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, e, h, n)
        ORDER BY n
        ON CONFLICT (service_id, {key}) DO UPDATE SET {_ADD_ON_CONFLICT}
        RETURNING service_id, {key}, total_requests, successful_requests"""


_DAILY_SQL = _upsert_sql("api_call_logs", "day", "date")
_HOURLY_SQL = _upsert_sql("api_call_logs_hourly", "hour", "timestamptz")


@dataclass(frozen=True)
class OutboxEvent:
    """An event decided in a transaction, published after it commits."""

    msg_id: str
    subject: str
    payload: bytes


@dataclass
class Applied:
    """What one batch changed."""

    applied: list[CheckCompleted] = field(default_factory=list)
    duplicates: int = 0
    events: list[OutboxEvent] = field(default_factory=list)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    msg_id: str
    subject: str
    payload: bytes


class RollupStore:
    """Rollups, uptime records, service state and the event outbox in PostgreSQL."""

    def __init__(
        self, *, pool: asyncpg.Pool, settings: Settings, acquire_timeout: float = 10.0
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._acquire_timeout = acquire_timeout
        self._partitions: set[date] = set()

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
            await conn.fetchval("SELECT 1")

    def forget_partitions(self) -> None:
        """Drop the partition cache (after an error that may mean one is missing)."""
        self._partitions.clear()

    async def ensure_days(self, days: set[date]) -> None:
        """Make sure `aggregator_applied` has a partition for each day."""
        missing = sorted(days - self._partitions)
        if not missing:
            return
        async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
            for day in missing:
                await db.ensure_partitions(conn, APPLIED_TABLE, day, day)  # type: ignore[arg-type]
        self._partitions.update(missing)

    async def maintain(self, today: date) -> tuple[int, int] | None:
        """Create partitions for the retention window and a week ahead, drop older ones.

        Returns (created, dropped), or None when another replica holds the lock.
        """
        first, last = db.partition_window(today, self._settings.retention_days)
        async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MAINTENANCE_LOCK):
                return None
            try:
                created = await db.ensure_partitions(conn, APPLIED_TABLE, first, last)  # type: ignore[arg-type]
                dropped = await db.drop_partitions_before(conn, APPLIED_TABLE, first)  # type: ignore[arg-type]
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MAINTENANCE_LOCK)
        self._partitions = {d for d in self._partitions if d >= first}
        self._partitions.update(first + timedelta(days=i) for i in range((last - first).days + 1))
        return created, dropped

    async def apply(self, checks: list[CheckCompleted], *, now: datetime) -> Applied:
        """Count the checks not yet counted, in one transaction; return what changed."""
        out = Applied()
        if not checks:
            return out
        checks = sorted({c.check_id: c for c in checks}.values(), key=lambda c: str(c.check_id))
        async with self._pool.acquire(timeout=self._acquire_timeout) as conn, conn.transaction():
            rows = await conn.fetch(
                f"""INSERT INTO {APPLIED_TABLE} (check_id, started_at)
                    SELECT c, s FROM unnest($1::uuid[], $2::timestamptz[]) AS u(c, s) ORDER BY c
                    ON CONFLICT DO NOTHING RETURNING check_id""",
                [c.check_id for c in checks],
                [c.started_at for c in checks],
            )
            new_ids = {r["check_id"] for r in rows}
            out.applied = [c for c in checks if c.check_id in new_ids]
            out.duplicates = len(checks) - len(out.applied)
            if out.applied:
                out.events = await self._apply_new(conn, out.applied, now=now)
        return out

    async def _apply_new(
        self, conn: Conn, checks: list[CheckCompleted], *, now: datetime
    ) -> list[OutboxEvent]:
        services = sorted({c.service_id for c in checks})
        states = await self._lock_states(conn, services)
        regions = await self._region_states(conn, services, states)
        targets, intervals = await self._targets(conn, services)

        sums = rollups.rollup(checks)
        daily = await conn.fetch(_DAILY_SQL, *rollups.columns(sums.daily))
        await conn.execute(_HOURLY_SQL, *rollups.columns(sums.hourly))
        await self._write_uptime(
            conn, sorted(daily, key=lambda r: (r["service_id"], r["day"])), targets
        )

        events: list[OutboxEvent] = []
        by_service: dict[str, list[CheckCompleted]] = {}
        for check in checks:
            by_service.setdefault(check.service_id, []).append(check)
        window_uptime = await self._window_uptime(conn, services, now.astimezone(UTC).date())
        updates = []
        region_updates: list[tuple[str, str, RegionState]] = []
        for service in services:
            state, breached = states[service]
            new_state, new_regions, moves = quorum.decide(
                state,
                regions[service],
                by_service[service],
                stale_after=timedelta(seconds=2 * intervals[service]),
                region_of=self._region_of,
            )
            region_updates += [
                (service, r, v)
                for r, v in sorted(new_regions.items())
                if regions[service].get(r) != v
            ]
            events += [_status_event(t) for t in moves]
            flip = rollups.sla_flip(breached, window_uptime.get(service), targets[service])
            if flip is not None:
                newest = max(by_service[service], key=lambda c: (c.started_at, str(c.check_id)))
                events.append(
                    self._sla_event(
                        service,
                        flip,
                        window_uptime[service],
                        targets[service],
                        newest.check_id,
                        now,
                    )
                )
            updates.append(
                (service, new_state, breached if flip is None else flip, flip is not None)
            )
        await conn.execute(
            """UPDATE service_state AS s SET
                   last_status = u.st, last_check_id = u.cid, last_started_at = u.sa,
                   sla_breached = u.br,
                   sla_changed_at = CASE WHEN u.flipped THEN now() ELSE s.sla_changed_at END,
                   updated_at = now()
               FROM unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[],
                           $5::bool[], $6::bool[])
                    AS u(id, st, cid, sa, br, flipped)
               WHERE s.service_id = u.id""",
            [u[0] for u in updates],
            [u[1].last_status for u in updates],
            [u[1].last_check_id for u in updates],
            [u[1].last_started_at for u in updates],
            [u[2] for u in updates],
            [u[3] for u in updates],
        )
        if self._settings.status_quorum and region_updates:
            await conn.execute(
                """INSERT INTO service_region_state AS t
                       (service_id, region, last_status, last_check_id, last_started_at)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[],
                                        $5::timestamptz[])
                   ON CONFLICT (service_id, region) DO UPDATE SET
                       last_status = excluded.last_status,
                       last_check_id = excluded.last_check_id,
                       last_started_at = excluded.last_started_at, updated_at = now()""",
                [u[0] for u in region_updates],
                [u[1] for u in region_updates],
                [u[2].status for u in region_updates],
                [u[2].check_id for u in region_updates],
                [u[2].started_at for u in region_updates],
            )
        if events:
            await conn.execute(
                """INSERT INTO event_outbox (msg_id, subject, payload)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
                   ON CONFLICT (msg_id) DO NOTHING""",
                [e.msg_id for e in events],
                [e.subject for e in events],
                [e.payload for e in events],
            )
        return events

    async def _lock_states(
        self, conn: Conn, services: list[str]
    ) -> dict[str, tuple[ServiceState, bool]]:
        await conn.execute(
            """INSERT INTO service_state (service_id)
               SELECT s FROM unnest($1::text[]) AS u(s) ORDER BY s ON CONFLICT DO NOTHING""",
            services,
        )
        rows = await conn.fetch(
            """SELECT service_id, last_status, last_check_id, last_started_at, sla_breached
               FROM service_state WHERE service_id = ANY($1::text[])
               ORDER BY service_id FOR UPDATE""",
            services,
        )
        return {
            r["service_id"]: (
                ServiceState(r["last_status"], r["last_check_id"], r["last_started_at"]),
                r["sla_breached"],
            )
            for r in rows
        }

    def _region_of(self, check: CheckCompleted) -> str:
        return check.region if self._settings.status_quorum else quorum.ONE_REGION

    async def _region_states(
        self, conn: Conn, services: list[str], states: dict[str, tuple[ServiceState, bool]]
    ) -> dict[str, dict[str, RegionState]]:
        """Each region's latest check per service (read under the service_state row locks)."""
        out: dict[str, dict[str, RegionState]] = {s: {} for s in services}
        if not self._settings.status_quorum:
            # One region: its latest check is the service's.
            for service, (state, _) in states.items():
                status, check_id = state.last_status, state.last_check_id
                started_at = state.last_started_at
                if status is not None and check_id is not None and started_at is not None:
                    out[service][quorum.ONE_REGION] = RegionState(status, check_id, started_at)
            return out
        rows = await conn.fetch(
            """SELECT service_id, region, last_status, last_check_id, last_started_at
               FROM service_region_state WHERE service_id = ANY($1::text[])""",
            services,
        )
        for r in rows:
            out[r["service_id"]][r["region"]] = RegionState(
                r["last_status"], r["last_check_id"], r["last_started_at"]
            )
        return out

    async def _targets(
        self, conn: Conn, services: list[str]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Each service's SLA target and check interval (defaults for one not yet defined)."""
        rows = await conn.fetch(
            "SELECT id, sla_target, interval_seconds FROM services WHERE id = ANY($1::text[])",
            services,
        )
        known = {r["id"]: r for r in rows}
        targets = {
            s: float(known[s]["sla_target"]) if s in known else self._settings.sla_target
            for s in services
        }
        intervals = {
            s: float(known[s]["interval_seconds"]) if s in known else _UNKNOWN_INTERVAL_SECONDS
            for s in services
        }
        return targets, intervals

    async def _write_uptime(
        self, conn: Conn, daily: list[asyncpg.Record], targets: dict[str, float]
    ) -> None:
        below = self._settings.major_outage_below
        await conn.execute(
            """INSERT INTO uptime_records AS t
                   (service_id, day, status, uptime, total_requests, successful_requests,
                    sla_target)
               SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::float8[],
                                    $5::bigint[], $6::bigint[], $7::float8[])
               ON CONFLICT (service_id, day) DO UPDATE SET
                   status = excluded.status, uptime = excluded.uptime,
                   total_requests = excluded.total_requests,
                   successful_requests = excluded.successful_requests,
                   sla_target = excluded.sla_target, updated_at = now()""",
            [r["service_id"] for r in daily],
            [r["day"] for r in daily],
            [
                rules.day_status(
                    r["successful_requests"], r["total_requests"], targets[r["service_id"]], below
                )
                for r in daily
            ],
            [rules.uptime_percent(r["successful_requests"], r["total_requests"]) for r in daily],
            [r["total_requests"] for r in daily],
            [r["successful_requests"] for r in daily],
            [targets[r["service_id"]] for r in daily],
        )

    async def _window_uptime(
        self, conn: Conn, services: list[str], today: date
    ) -> dict[str, float]:
        first, last = rollups.sla_window(today, self._settings.sla_window_days)
        rows = await conn.fetch(
            """SELECT service_id, sum(successful_requests) AS ok, sum(total_requests) AS total
               FROM api_call_logs
               WHERE service_id = ANY($1::text[]) AND day BETWEEN $2 AND $3
               GROUP BY service_id""",
            services,
            first,
            last,
        )
        out = {}
        for r in rows:
            uptime = rules.uptime_percent(int(r["ok"]), int(r["total"]))
            if uptime is not None:
                out[r["service_id"]] = uptime
        return out

    def _sla_event(
        self,
        service: str,
        breached: bool,
        current: float,
        target: float,
        check_id: UUID,
        now: datetime,
    ) -> OutboxEvent:
        days = self._settings.sla_window_days
        first, _ = rollups.sla_window(now.astimezone(UTC).date(), days)
        window = SlaWindow(
            days=days, start=datetime.combine(first, datetime.min.time(), UTC), end=now
        )
        model = SlaBreached if breached else SlaRecovered
        event = model(service_id=service, target=target, current=current, window=window, at=now)
        return OutboxEvent(
            msg_id=f"sla-{event.kind}-{service}-{check_id}",
            subject=SLA_SUBJECT.format(service_id=service),
            payload=event.to_wire(),
        )

    async def pending_events(self, conn: Conn, limit: int) -> list[OutboxRow]:
        """The oldest unpublished events (call inside `outbox_lock`)."""
        rows = await conn.fetch(
            "SELECT id, msg_id, subject, payload FROM event_outbox ORDER BY id LIMIT $1", limit
        )
        return [OutboxRow(r["id"], r["msg_id"], r["subject"], bytes(r["payload"])) for r in rows]

    async def outbox_lock(self, conn: Conn) -> None:
        """Serialise relaying across replicas for the current transaction."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _OUTBOX_LOCK)

    async def delete_events(self, conn: Conn, ids: list[int]) -> None:
        """Forget events JetStream has acknowledged."""
        await conn.execute("DELETE FROM event_outbox WHERE id = ANY($1::bigint[])", ids)

    def acquire(self) -> asyncpg.pool.PoolAcquireContext:
        """A pooled connection, with the store's acquire timeout."""
        return self._pool.acquire(timeout=self._acquire_timeout)


def _status_event(t: rollups.Transition) -> OutboxEvent:
    event = StatusChanged(
        service_id=t.service_id,
        from_status=t.from_status,
        to_status=t.to_status,
        at=t.at,
        check_id=t.check_id,
        regions=t.regions,
    )
    return OutboxEvent(
        msg_id=f"status-{t.check_id}",
        subject=STATUS_SUBJECT.format(service_id=t.service_id),
        payload=event.to_wire(),
    )
