"""PostgreSQL plumbing: the pool, versioned migrations under an advisory lock, partitions.

Errors: `SchemaError` (the database is behind or ahead of this build, or a migration file
was edited after it was applied). Connection errors are asyncpg's / OSError, unchanged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources

import asyncpg

MIGRATIONS_PACKAGE = "shared.migrations"
_LOCK_ID = 0x5741_5443_4801  # "WATCH" + 1: one advisory lock for migrations
RAW_TABLES = ("check_results", "endpoint_results")


class SchemaError(RuntimeError):
    """The database schema does not match what this build expects."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migration files shipped with this build, in version order."""
    out = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = re.fullmatch(r"(\d+)_([\w-]+)\.sql", entry.name)
        if match:
            out.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    return out


def expected_version() -> int:
    """The schema version this build needs."""
    return load_migrations()[-1].version


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections speak UTC and decode jsonb to Python objects."""

    async def init(conn: asyncpg.Connection) -> None:
        import json

        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )

    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        server_settings={"timezone": "UTC", "application_name": "watch-server"},
    )


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations not yet applied, under an advisory lock; return their versions."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for m in load_migrations():
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise SchemaError(
                        f"migration {m.version:03d}_{m.name}.sql was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            applied.append(m.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied


async def schema_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def check_schema(conn: asyncpg.Connection) -> int:
    """Raise SchemaError unless the database is at the version this build expects."""
    have, want = await schema_version(conn), expected_version()
    if have < want:
        raise SchemaError(
            f"database schema is at version {have}, this build needs {want}: run `make migrate`"
        )
    if have > want:
        raise SchemaError(
            f"database schema is at version {have}, newer than this build ({want}): "
            "upgrade the service"
        )
    return have


async def ensure_partitions(conn: asyncpg.Connection, table: str, first: date, last: date) -> int:
    """Create the daily partitions of `table` for [first, last]; return how many were new."""
    return int(
        await conn.fetchval("SELECT watch_ensure_partitions($1, $2, $3)", table, first, last)
    )


async def drop_partitions_before(conn: asyncpg.Connection, table: str, before: date) -> int:
    """Drop the daily partitions of `table` that end on or before `before`."""
    return int(await conn.fetchval("SELECT watch_drop_partitions($1, $2)", table, before))


def partition_window(today: date, retention_days: int, ahead_days: int = 7) -> tuple[date, date]:
    """The days that must have partitions: the retention window and a week ahead."""
    return today - timedelta(days=retention_days), today + timedelta(days=ahead_days)
