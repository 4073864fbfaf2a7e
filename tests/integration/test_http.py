"""The HTTP endpoint inside `mediad run`: /metrics against the database, /healthz and /readyz,
bounded connections, and the bearer token off loopback."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from mediad import errors
from mediad.http.pages import FAILURE_EXAMPLES
from mediad.stage import Result, Row
from tests import media
from tests.http_support import names, serving_daemon, value
from tests.nginx_support import free_port
from tests.origin import Origin, serving, status
from tests.support import insert_rows, insert_urls, noop, run_once, trivial_openers, wait_for

ALLOWED = "127.0.0.1/32"
GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serving() as served:
        yield served


def download_settings(tmp_path: Path) -> dict[str, str]:
    return {
        "storage_root": str(tmp_path / "media"),
        "download_allowed_networks": ALLOWED,
        "derive_enabled": "false",
        "daemon_poll_interval": "200ms",
        # The store is measured at every scrape.
        "storage_evict_interval": "1ms",
    }


async def all_downloads_finished(pool: asyncpg.Pool[Any]) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM post_media WHERE download_status NOT IN ('completed', 'failed')"
    )


async def test_metrics_match_the_database_after_a_run(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, tmp_path: Path
) -> None:
    """After the daemon downloaded three photos (one the same bytes as another) and failed a
    404, /metrics parsed by prometheus_client says what the database says: rows per stage and
    status, failures by error_code, and this run's outcomes, bytes, fetch count and dedup hit."""
    photo = media.jpeg(320, 240, seed=1)
    urls = [
        origin.serve("/a.jpg", photo, content_type="image/jpeg"),
        origin.serve("/b.jpg", media.jpeg(200, 100, seed=2), content_type="image/jpeg"),
        origin.serve("/same-as-a.jpg", photo, content_type="image/jpeg"),
        origin.route("/gone.jpg", status(404)),
    ]
    async with serving_daemon(db_url, download_settings(tmp_path)) as served:
        before = await served.metrics()
        await insert_urls(pool, urls)
        await wait_for(lambda: all_downloads_finished(pool), within=60)
        after = await served.metrics()
        exposed = names((await served.get("/metrics"))[1])

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    counts = {
        (r["download_status"], r["error_code"]): r["n"]
        for r in await pool.fetch(
            "SELECT download_status, error_code, count(*) AS n FROM post_media GROUP BY 1, 2"
        )
    }
    assert counts == {("completed", None): 3, ("failed", "http_404"): 1}
    assert value(after, "mediad_rows", stage="download", status="completed") == 3
    assert value(after, "mediad_rows", stage="download", status="failed") == 1
    assert value(after, "mediad_rows", stage="archive", status="skipped") == 3
    assert value(after, "mediad_rows_failed", stage="download", error_code="http_404") == 1
    assert value(after, "mediad_rows_due", stage="download") == 0
    assert value(after, "mediad_rows_stale") == 0
    stored = await pool.fetchval(
        "SELECT sum(file_size) FROM post_media WHERE download_status = 'completed'"
    )
    assert delta("mediad_outcomes_total", stage="download", status="completed", error_code="") == 3
    assert delta("mediad_outcomes_total", stage="download", status="failed", error_code="http_404")
    assert delta("mediad_download_bytes_total") == stored
    assert delta("mediad_download_seconds_count") == 3
    assert delta("mediad_dedup_hits_total") == 1
    assert value(after, "mediad_stage_paused", stage="download") == 0
    assert value(after, "mediad_store_bytes") == stored - len(photo)  # the duplicate is one file
    # Every metric the shipped Grafana dashboard graphs is one the endpoint serves.
    graphed = set(re.findall(r"mediad_[a-z_]+", GRAFANA.read_text()))
    missing = {g for g in graphed if g not in exposed and g.removesuffix("_total") not in exposed}
    assert graphed and not missing, missing


async def test_metrics_answer_while_the_database_is_down(
    db_url: str, pg_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """With the database refusing every connection, /metrics still answers with the process
    counters and mediad_rows_stale 1, /readyz says 503; once it is back, both recover."""
    await insert_rows(pool, 2)
    name = urlsplit(db_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_url)
    try:
        async with serving_daemon(
            db_url, openers=trivial_openers(noop), daemon_poll_interval="200ms"
        ) as served:
            await wait_for(lambda: all_downloads_finished(pool))
            fresh = await served.metrics()
            assert value(fresh, "mediad_rows", stage="download", status="completed") == 2
            assert (await served.get("/readyz"))[0] == 200

            await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            assert (await served.get("/readyz"))[0] == 503
            down = await served.metrics()
            assert value(down, "mediad_rows_stale") == 1
            # The last counts stay, with their time; the process counters are all there.
            assert value(down, "mediad_rows", stage="download", status="completed") == 2
            assert value(down, "mediad_rows_refreshed_timestamp_seconds") > 0
            assert ("mediad_download_bytes_total", frozenset()) in down
            assert (await served.get("/"))[0] == 503

            await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            await wait_for(lambda: _is(served.status("/readyz"), 200))
            assert value(await served.metrics(), "mediad_rows_stale") == 0
    finally:
        await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        await admin.close()


async def _is(status_of: Any, expected: int) -> bool:
    return bool(await status_of == expected)


async def test_healthz_turns_503_while_a_stage_loop_is_stuck(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """A stage loop wedged on the database (its claim blocked behind a table lock) turns
    /healthz 503 once daemon.stuck_after passes, and 200 again when the loop turns."""
    async with serving_daemon(
        db_url,
        openers=trivial_openers(noop),
        daemon_poll_interval="100ms",
        daemon_stuck_after="1s",
    ) as served:
        assert await served.get("/healthz") == (200, "ok\n")
        async with pool.acquire() as conn:
            lock = conn.transaction()
            await lock.start()
            await conn.execute("LOCK TABLE post_media IN ACCESS EXCLUSIVE MODE")
            try:
                await wait_for(lambda: _is(served.status("/healthz"), 503))
                assert await served.get("/healthz") == (503, "stuck: download\n")
            finally:
                await lock.rollback()
        await wait_for(lambda: _is(served.status("/healthz"), 200))


async def test_ten_thousand_idle_connections_do_not_stop_the_stages(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, tmp_path: Path
) -> None:
    """10,000 connections opened to the endpoint and left idle: the daemon holds at most
    http.max_connections of them, and a photo enqueued meanwhile is still downloaded."""
    url = origin.serve("/photo.jpg", media.jpeg(seed=5), content_type="image/jpeg")
    async with serving_daemon(db_url, download_settings(tmp_path)) as served:
        port = int(served.base.rsplit(":", 1)[1])
        idle: list[socket.socket] = []
        try:
            for _ in range(10_000):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))  # EINPROGRESS: left to finish or not
                idle.append(sock)
            [media_id] = await insert_urls(pool, [url])
            await wait_for(lambda: all_downloads_finished(pool), within=60)
            done = await pool.fetchrow(
                "SELECT download_status, error_code FROM post_media WHERE media_id = $1",
                media_id,
            )
            assert done is not None
            assert dict(done) == {"download_status": "completed", "error_code": None}
            held = len(os.listdir(f"/proc/{os.getpid()}/fd"))
            # The 10,000 client ends are ours too (same process); the server's ends are bounded.
            assert held < 10_000 + 64 + 200
        finally:
            for sock in idle:
                sock.close()


async def test_the_front_page_shows_the_latest_failures_of_an_error_code(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """Of many rows failed with one error_code, the front page's examples are the ones that
    failed last: not the ones somebody's UPDATE touched last."""

    async def refuse(row: Row) -> Result:
        raise errors.PermanentError("the origin refuses this photo", error_code="http_403")

    early = await insert_rows(pool, 5, url="https://cdn.example/early-{i}.jpg")
    await run_once(db_url, refuse)
    late = await insert_rows(pool, FAILURE_EXAMPLES, url="https://cdn.example/late-{i}.jpg")
    await run_once(db_url, refuse)
    # A scraper editing an old failure's row makes it the last updated, not the last failed.
    await pool.execute(
        "UPDATE post_media SET post_id = 'edited' WHERE media_id = ANY($1)", early[:2]
    )
    async with serving_daemon(db_url, derive_enabled="false") as served:
        code, page = await served.get("/")
    assert code == 200
    failures = page.partition("<h2>Failures</h2>")[2].partition("<h2>Recent media</h2>")[0]
    assert "download · http_403 · 8 rows" in failures
    assert sorted(m for m in early + late if m in failures) == sorted(late)


async def test_a_request_without_the_token_off_loopback_gets_401_and_no_data(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound to 0.0.0.0 (reached here through 127.0.0.1), every path wants the bearer token:
    none or a wrong one gets 401 and not a byte of metrics; the right one gets through."""
    monkeypatch.setenv("MEDIAD_HTTP_TOKEN", "s3cret-token")
    async with serving_daemon(db_url, openers=trivial_openers(noop), host="0.0.0.0") as served:
        for path in ("/metrics", "/", "/api/media/x", "/healthz"):
            code, body = await served.get(path)
            assert code == 401
            assert "mediad_" not in body
        code, body = await served.get("/metrics", Authorization="Bearer wrong-token")
        assert (code, "mediad_" in body) == (401, False)
        code, body = await served.get("/metrics", Authorization="Bearer s3cret-token")
        assert code == 200
        assert "mediad_rows_stale" in body


async def test_the_daemon_refuses_a_public_address_without_a_token(
    db_url: str, tmp_path: Path
) -> None:
    """`mediad run` with http.listen on 0.0.0.0 and no MEDIAD_HTTP_TOKEN exits 2 at once,
    naming the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAD_")}
    env |= {
        "MEDIAD_DATABASE_URL": db_url,
        "MEDIAD_STORAGE_ROOT": str(tmp_path / "media"),
        "MEDIAD_HTTP_LISTEN": f"0.0.0.0:{free_port()}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediad", "run", "--once", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, (out, err)
    assert b"MEDIAD_HTTP_TOKEN" in err
