"""`mediad import` of Facebook and Instagram Graph API pages, its progress bar on a terminal and
its errors, run as users run it."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from tests import graph_api
from tests.acceptance.test_cli import mediad

ROWS = """
SELECT post_id, media_url, media_type, platform, url_expires_at, download_status,
    ai_analysis_log -> 0 ->> 'event' AS event,
    (ai_analysis_log -> 0 -> 'details' ->> 'position')::integer AS position,
    (ai_analysis_log -> 0 -> 'details' ->> 'primary')::boolean AS is_primary
FROM post_media ORDER BY post_id, position
"""


def _graph_files(root: Path) -> list[Path]:
    """The Facebook page as one JSON document, the Instagram media one per line."""
    facebook = root / "facebook.json"
    facebook.write_text(json.dumps(graph_api.FACEBOOK_PAGE_POSTS))
    instagram = root / "instagram.jsonl"
    instagram.write_text(
        "".join(json.dumps(m) + "\n" for m in graph_api.INSTAGRAM_USER_MEDIA["data"])
    )
    return [facebook, instagram]


def _environment(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAD_")}
    return env | {"MEDIAD_DATABASE_URL": db_url}


async def test_facebook_and_instagram_pages_are_queued_once_with_expiry_and_position(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """Graph API pages queue each post's media under the post's id, in the post's order, with
    the oe= expiry parsed and the first medium marked primary; a second import adds nothing."""
    facebook, instagram = _graph_files(tmp_path)
    env = {"MEDIAD_DATABASE_URL": db_url}

    code, out, err = await mediad("import", str(facebook), str(instagram), env=env)
    assert code == 0, err
    assert out.splitlines() == [
        f"{facebook}: 4 posts, 7 media queued, 0 already queued",
        f"{instagram}: 3 posts, 7 media queued, 0 already queued",
    ]
    rows = [dict(r) for r in await pool.fetch(ROWS)]
    album = [r for r in rows if r["post_id"] == "104259875185493_187431583534960"]
    assert [(r["media_url"], r["position"], r["is_primary"]) for r in album] == [
        (graph_api.fbcdn("album1"), 0, True),
        (graph_api.fbcdn("album2", graph_api.OE_LATER), 1, False),
        (graph_api.fbcdn("album3"), 2, False),
    ]
    assert [r["url_expires_at"] for r in album] == [
        graph_api.EXPIRES,
        graph_api.EXPIRES + timedelta(days=1),
        graph_api.EXPIRES,
    ]
    reel = [r for r in rows if r["post_id"] == "17912345678901234"]
    assert [(r["media_url"], r["media_type"], r["platform"]) for r in reel] == [
        (graph_api.igvideo("reel"), "video", "instagram"),
        (graph_api.igcdn("reel-cover"), "image", "instagram"),
    ]
    assert {r["event"] for r in rows} == {"media_imported"}
    assert {r["download_status"] for r in rows} == {"not_started"}
    assert all(r["url_expires_at"] is not None for r in rows)
    assert {r["platform"] for r in rows if r["post_id"].startswith("104259875185493_")} == {
        "facebook"
    }

    code, out, err = await mediad("import", "--json", str(facebook), str(instagram), env=env)
    assert code == 0, err
    assert [(f["queued"], f["already_queued"]) for f in json.loads(out)] == [(0, 7), (0, 7)]
    assert await pool.fetchval("SELECT count(*) FROM post_media") == 14


async def test_a_bad_line_fails_its_file_naming_the_line_and_queues_none_of_it(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A line PostgreSQL could not store fails its whole file (exit 1) with the file and line
    named; the other files are queued."""
    good, _ = _graph_files(tmp_path)
    bad = tmp_path / "bad.jsonl"
    lines = [
        {"id": "1", "media_type": "IMAGE", "media_url": graph_api.igcdn("ok")},
        {"id": "2\u0000", "media_type": "IMAGE", "media_url": graph_api.igcdn("nul")},
    ]
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))

    code, out, err = await mediad(
        "import", str(bad), str(good), env={"MEDIAD_DATABASE_URL": db_url}
    )
    assert code == 1
    assert err.strip() == (
        f"mediad import: {bad}: line 2: its post_id holds a NUL character (\\u0000)"
    )
    assert out.splitlines() == [f"{good}: 4 posts, 7 media queued, 0 already queued"]
    assert await pool.fetchval("SELECT count(*) FROM post_media WHERE post_id = '1'") == 0
    assert await pool.fetchval("SELECT count(*) FROM post_media") == 7


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `python -m mediad ARGS` with a pseudo-terminal as stdout and stderr; (status, all it
    wrote)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediad", *args], stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    written = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, "mediad import wrote nothing for a minute"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=60), written.decode()


async def test_a_terminal_gets_a_progress_bar_and_a_pipe_does_not(
    db_url: str, tmp_path: Path
) -> None:
    """On a terminal the import redraws a bar (files, media queued, rate) and leaves the final
    one; with --json, or piped, it prints its report alone."""
    facebook, instagram = _graph_files(tmp_path)
    code, screen = await asyncio.to_thread(
        _run_on_a_terminal, ["import", str(facebook), str(instagram)], _environment(db_url)
    )
    assert code == 0, screen
    assert "\r\x1b[K[" in screen
    final = screen.rstrip().rsplit("\x1b[K", 1)[-1]
    assert final.startswith(f"[{'#' * 24}] 2/2 files, 14 media queued, 0 already queued, ")
    assert final.endswith(" media/s")
    assert f"{instagram}: 3 posts, 7 media queued, 0 already queued" in screen

    # --json on a terminal: the report alone, for a script reading it.
    code, screen = await asyncio.to_thread(
        _run_on_a_terminal, ["import", "--json", str(facebook)], _environment(db_url)
    )
    assert code == 0, screen
    assert "\x1b" not in screen and json.loads(screen)[0]["already_queued"] == 7

    code, out, err = await mediad("import", str(facebook), str(instagram), env=_environment(db_url))
    assert code == 0, err
    assert "\r" not in out and "\x1b" not in out and "media/s" not in out + err
    assert out.splitlines() == [
        f"{facebook}: 4 posts, 0 media queued, 7 already queued",
        f"{instagram}: 3 posts, 0 media queued, 7 already queued",
    ]
