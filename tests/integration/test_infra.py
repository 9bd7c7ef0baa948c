"""The embedded servers and the migrations, as every other test relies on them."""

from __future__ import annotations

from datetime import date

import asyncpg
import nats
import pytest

from shared import db
from shared.settings import Settings
from shared.streams import ensure_streams


async def test_migrations_apply_once_and_check(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        with pytest.raises(db.SchemaError, match="make migrate"):
            await db.check_schema(conn)
        assert await db.migrate(conn) == [m.version for m in db.load_migrations()]
        assert await db.migrate(conn) == []
        assert await db.check_schema(conn) == db.expected_version()
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        for t in (
            "services",
            "watch_server_logs",
            "api_response_times",
            "api_call_logs",
            "uptime_records",
            "api_call_logs_hourly",
        ):
            assert t in tables or await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", t)
    finally:
        await conn.close()


async def test_partitions_created_and_dropped(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert (
            await db.ensure_partitions(conn, "check_results", date(2026, 1, 1), date(2026, 1, 10))
            == 10
        )
        assert (
            await db.ensure_partitions(conn, "check_results", date(2026, 1, 1), date(2026, 1, 10))
            == 0
        )
        assert await db.drop_partitions_before(conn, "check_results", date(2026, 1, 5)) == 4
        names = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'check_results'::regclass ORDER BY 1"
        )
        assert names[0]["relname"] == "check_results_p20260105"
        assert len(names) == 6
    finally:
        await conn.close()


async def test_streams_declared_idempotently(settings: Settings) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        await ensure_streams(js, settings)
        info = await js.stream_info("WATCH_CHECKS")
        assert info.config.duplicate_window is not None and info.config.duplicate_window >= 120
        ack1 = await js.publish("watch.check.x", b"{}", headers={"Nats-Msg-Id": "same"})
        ack2 = await js.publish("watch.check.x", b"{}", headers={"Nats-Msg-Id": "same"})
        assert ack2.duplicate and ack1.seq == ack2.seq
    finally:
        await nc.close()
