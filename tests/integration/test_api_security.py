"""The api's database access is read-only (migration 010's role), checked on real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from services.api.store import PostgresStore


async def test_the_api_pool_cannot_write(db_url: str) -> None:
    store = PostgresStore(dsn=db_url, role="watch_api_ro", max_size=2)
    await store.start()
    try:
        assert await store.ping()
        assert await store.list_services(active_only=False) == []
        rows = await store._fetch("SELECT current_user AS u")
        assert rows[0]["u"] == "watch_api_ro"
        for sql in (
            "INSERT INTO services (id, name, interval_seconds, timeout_ms, sla_target, "
            "defined_at) VALUES ('x', 'x', 30, 1000, 99.9, now())",
            "DELETE FROM api_call_logs",
            "UPDATE uptime_records SET status = 'o'",
            "CREATE TABLE sneaky (id int)",
            "SELECT error_message FROM watch_server_logs",  # not a column the api may read
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await store._fetch(sql)
        # A connection returned to the pool and reused still has the role.
        for _ in range(3):
            again = await store._fetch("SELECT current_user AS u")
            assert again[0]["u"] == "watch_api_ro"
    finally:
        await store.close()
    plain = PostgresStore(dsn=db_url, role=None, max_size=1)
    try:
        rows = await plain._fetch("SELECT current_user AS u")
        assert rows[0]["u"] != "watch_api_ro"  # API_DB_READONLY=0 keeps the login role
    finally:
        await plain.close()
