"""`python -m shared.migrate`: apply the database migrations (what `make migrate` runs)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from shared.db import SchemaError, migrate
from shared.settings import load_settings


async def _main() -> int:
    settings = load_settings("migrate")
    try:
        conn = await asyncpg.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"ERROR migrate: cannot connect to DATABASE_URL: {exc}", file=sys.stderr)
        return 1
    try:
        applied = await migrate(conn)
    except SchemaError as exc:
        print(f"ERROR migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    print(f"INFO migrate applied={applied or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
