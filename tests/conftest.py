"""Session fixtures: a real nats-server with JetStream and a real PostgreSQL, started the
same way `make run` starts them (deploy/local/embedded.py), on throwaway ports and folders."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres
from shared.db import migrate
from shared.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m unit` etc. select by kind."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in ("unit", "integration", "e2e"):
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))


class Infra:
    """The servers of one test session; tests may stop and start them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = EmbeddedPostgres(root / "postgres", fast_unsafe=True)
        self.nats = EmbeddedNats(root / "nats")

    def start(self) -> None:
        self.pg.start()
        self.nats.start()

    def stop(self) -> None:
        self.nats.stop()
        self.pg.stop()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Real PostgreSQL and NATS (JetStream) for the whole session."""
    # Not under pytest's basetemp: pytest resets it to mode 0700 (the embedded PostgreSQL
    # runs as another user when we are root) and prunes old ones while other runs use them.
    root = Path(tempfile.mkdtemp(prefix="watch-test-infra-"))
    infra = Infra(root)
    try:
        infra.start()
        yield infra
    finally:
        infra.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_db(infra: Infra) -> str:
    """A migrated database that each test's database is copied from."""
    conn = await asyncpg.connect(infra.pg.url("postgres"))
    try:
        await conn.execute("CREATE DATABASE watch_template")
    finally:
        await conn.close()
    conn = await asyncpg.connect(infra.pg.url("watch_template"))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return "watch_template"


@pytest.fixture
async def db_url(infra: Infra, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(infra.pg.url("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield infra.pg.url(name)


@pytest.fixture
async def empty_db_url(infra: Infra) -> AsyncIterator[str]:
    """A fresh database with no schema, for migration tests."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(infra.pg.url("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield infra.pg.url(name)


@pytest.fixture
async def nats_url(infra: Infra) -> str:
    """The session's NATS, with every stream deleted so each test starts empty."""
    nc = await nats.connect(infra.nats.url)
    try:
        js = nc.jetstream()
        for name in await js.streams_info():
            await js.delete_stream(name.config.name)  # type: ignore[arg-type]
    finally:
        await nc.close()
    return infra.nats.url


@pytest.fixture
def settings(db_url: str, nats_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at this test's database and the session's NATS."""
    return Settings(
        database_url=db_url,
        nats_url=nats_url,
        services_file=str(tmp_path / "services.yaml"),
        region="test",
        prober_id="prober-test",
        ops_port=0,
        api_port=0,
    )
