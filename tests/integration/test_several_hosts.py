"""Several hosts on one database, each with a store of its own: a row records the node that
stores its file, and only that node archives, verifies or evicts it. Each "host" here is a
config with its own `storage.node`, run in-process against the same PostgreSQL and SeaweedFS."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import asyncpg

from mediad import daemon
from mediad.commands import evict, verify
from tests import media
from tests.archive_support import archive_config, downloaded_rows, events, run_archive, store_of
from tests.integration.test_verify import tools
from tests.origin import body, serving
from tests.s3server import SeaweedFS
from tests.support import make_config, row


async def test_a_download_records_the_node_that_stores_it(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """storage.node names the store in the row; left empty, it is the host name."""
    async with serving() as origin:
        url = origin.route("/a.jpg", body(media.jpeg_with_exif(seed=7), content_type="image/jpeg"))
        ids = {}
        for node in ("host-a", ""):
            ids[node] = await pool.fetchval(
                "INSERT INTO post_media (post_id, media_url, media_type)"
                " VALUES ($1, $2, 'image') RETURNING media_id",
                f"post-{node}",
                url,
            )
            cfg = make_config(
                storage_root=str(tmp_path / "media"),
                storage_node=node,
                download_allowed_networks="127.0.0.1/32",
            )
            async with asyncio.timeout(30):
                await daemon.run(cfg, once=True, url=db_url)
    named, default = await row(pool, ids["host-a"]), await row(pool, ids[""])
    assert (named["download_status"], named["storage_node"]) == ("completed", "host-a")
    assert (default["download_status"], default["storage_node"]) == (
        "completed",
        socket.gethostname(),
    )


async def test_each_host_archives_only_the_files_it_stores(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Host B's archive pool leaves host A's rows alone (its `run --once` still ends) and takes
    its own and those stored before rows recorded a node; host A then archives its own."""
    cfg_a = archive_config(s3_server, tmp_path / "a", storage_node="host-a")
    cfg_b = archive_config(s3_server, tmp_path / "b", storage_node="host-b")
    on_a = await downloaded_rows(
        pool, store_of(cfg_a), [media.jpeg_with_exif(seed=s) for s in (1, 2)], node="host-a"
    )
    on_b = await downloaded_rows(
        pool, store_of(cfg_b), [media.jpeg_with_exif(seed=3)], node="host-b"
    )
    legacy = await downloaded_rows(pool, store_of(cfg_b), [media.jpeg_with_exif(seed=4)])

    async with asyncio.timeout(30):
        await run_archive(cfg_b, db_url)
    for done in (*on_b, *legacy):
        assert (await row(pool, done.media_id))["archive_status"] == "completed"
    for done in on_a:
        r = await row(pool, done.media_id)
        assert (r["archive_status"], r["archive_attempts"], r["error_code"]) == (
            "not_started",
            0,
            None,
        )
        assert not events(r, "archive_started")

    async with asyncio.timeout(30):
        await run_archive(cfg_a, db_url)
    for done in on_a:
        r = await row(pool, done.media_id)
        assert (r["archive_status"], r["archive_attempts"]) == ("completed", 1)


async def test_verify_and_evict_leave_another_hosts_files_alone(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Two hosts with the same storage.root path on different disks: host A's files are not on
    host B's disk, yet B's verify neither reports nor "repairs" them, and B's eviction neither
    clears their rows nor counts them, while it verifies and evicts its own file."""
    root = tmp_path / "media"
    cfg_a = archive_config(s3_server, root, storage_node="host-a")
    cfg_b = archive_config(s3_server, root, storage_node="host-b")
    on_a = await downloaded_rows(
        pool, store_of(cfg_a), [media.jpeg_with_exif(seed=s) for s in (5, 6)], node="host-a"
    )
    await run_archive(cfg_a, db_url)
    [on_b] = await downloaded_rows(
        pool, store_of(cfg_b), [media.jpeg_with_exif(seed=8)], node="host-b"
    )
    await run_archive(cfg_b, db_url)
    for done in on_a:  # what host B sees of host A's files: nothing
        done.stored.path.unlink()

    async with tools(cfg_b) as (store, client, archiver):
        verified = await verify.verify(pool, store, client, archiver, repair=True)
        assert (verified.local_checked, verified.objects_checked, verified.damage) == (1, 1, [])
        evicted = await evict.evict(pool, store, client, 0, by="test")
        assert (evicted.evicted, evicted.freed) == (1, on_b.stored.size)

    assert not on_b.stored.path.exists()
    assert (await row(pool, on_b.media_id))["local_file_path"] is None
    for done in on_a:
        r = await row(pool, done.media_id)
        assert r["local_file_path"] == str(done.stored.path)
        assert not done.stored.path.exists()  # not "repaired" onto host B's disk
        names = [entry["event"] for entry in r["ai_analysis_log"]]
        assert not {"local_file_damaged", "local_file_repaired", "local_file_evicted"} & set(names)
