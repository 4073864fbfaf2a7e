"""The command line as users type it: answers on stdout, one-line errors, exit statuses."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg

from tests.support import row


async def mediad(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m mediad ARGS`; returns (exit status, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAD_")}
    full_env["MEDIAD_HTTP_LISTEN"] = ""  # tests that serve HTTP pick their own port
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediad",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_enqueue_prints_media_ids_and_status_counts_them(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """enqueue inserts one row per URL and prints their ids; status --json counts them."""
    env = {"MEDIAD_DATABASE_URL": db_url}
    code, out, err = await mediad(
        "enqueue",
        "https://pbs.twimg.com/media/A.jpg",
        "https://scontent.cdninstagram.com/v/b.jpg?oe=7A000000&oh=sig",
        "--post-id",
        "p-9",
        env=env,
    )
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 2 and all(i.startswith("med-") for i in ids)
    first, second = await row(pool, ids[0]), await row(pool, ids[1])
    assert (first["post_id"], first["platform"], first["media_type"]) == ("p-9", "twitter", "image")
    assert second["platform"] == "instagram"
    assert second["url_expires_at"] is not None

    code, out, err = await mediad("status", "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    assert report["stages"]["download"]["rows"] == {"not_started": 2}
    assert report["queue_depth"]["download"] == 2
    assert report["stages"]["archive"]["due"] == 0
    assert report["failures"] == []

    code, out, err = await mediad("status", env=env)
    assert code == 0 and "download" in out and "no failures" in out


async def test_failures_are_grouped_listed_shown_and_retried(
    db_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """status groups failures by error_code; list, show and retry find and re-queue them."""
    env = {"MEDIAD_DATABASE_URL": db_url}
    _, out, _ = await mediad("enqueue", "https://e.org/a.jpg", "https://e.org/b.jpg", env=env)
    a, b = out.split()
    await pool.execute(
        "UPDATE post_media SET download_status = 'failed', error_code = 'http_404',"
        " ai_analysis_log = ai_analysis_log || mediad_event('download_failed', 'failure',"
        ' \'{"error_code": "http_404"}\') WHERE media_id = $1',
        a,
    )
    report = json.loads((await mediad("status", "--json", env=env))[1])
    assert report["failures"] == [{"stage": "download", "error_code": "http_404", "rows": 1}]

    code, out, _ = await mediad("list", "--status", "failed", "--json", env=env)
    assert code == 0 and [r["media_id"] for r in json.loads(out)] == [a]

    code, out, _ = await mediad("show", a, env=env)
    assert code == 0
    assert f"media_id: {a}" in out and "download_failed" in out

    code, out, err = await mediad("retry", "--failed", "--error-code", "http_404", env=env)
    assert code == 0, err
    assert out.split() == [a]
    assert (await row(pool, a))["download_status"] == "not_started"
    assert (await row(pool, b))["download_status"] == "not_started"


async def test_show_unknown_row_fails_with_one_line(db_url: str) -> None:
    """show of an id that does not exist says so in one line and exits 1."""
    code, out, err = await mediad("show", "med-nope", env={"MEDIAD_DATABASE_URL": db_url})
    assert code == 1 and out == ""
    assert err.strip() == "mediad: no row with media_id 'med-nope'"


async def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    """A config mistake exits 2 with one line that names the key, and no traceback."""
    config = tmp_path / "config.toml"
    config.write_text('[download]\nconcurrency = "lots"\n')
    code, _, err = await mediad("--config", str(config), "status")
    assert code == 2
    assert err.strip().splitlines() == [
        "mediad: config: download.concurrency: expected an integer, got 'lots'"
    ]
    code, _, err = await mediad("status", env={"MEDIAD_DAEMON_LEASE": "forever"})
    assert code == 2 and "MEDIAD_DAEMON_LEASE" in err and "Traceback" not in err


async def test_unreachable_database_is_one_line_exit_1() -> None:
    """A database that does not answer is a one-line error and exit 1, password not shown."""
    code, _, err = await mediad(
        "status", env={"MEDIAD_DATABASE_URL": "postgresql://u:secret@127.0.0.1:9/x"}
    )
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "cannot connect to the database at 127.0.0.1:9/x" in err
    assert "secret" not in err


async def test_malformed_database_url_is_a_config_error() -> None:
    """A database URL that is not one exits 2 naming where it came from."""
    code, _, err = await mediad("status", env={"MEDIAD_DATABASE_URL": "not a url"})
    assert code == 2, err
    assert "MEDIAD_DATABASE_URL: expected a postgresql:// URL" in err
    assert len(err.strip().splitlines()) == 1


async def test_run_once_on_the_embedded_database_leaves_nothing_running(tmp_path: Path) -> None:
    """With no database configured, `run --once` starts the embedded PostgreSQL in its state
    folder and, on its way out (which skips the interpreter's teardown), stops it again."""
    state = tmp_path / "state"
    empty = tmp_path / "config.toml"
    empty.write_text("")
    code, _, err = await mediad(
        "run",
        "--once",
        env={
            "MEDIAD_CONFIG": str(empty),
            "MEDIAD_DAEMON_STATE_DIR": str(state),
            "MEDIAD_STORAGE_ROOT": str(tmp_path / "media"),
        },
    )
    assert code == 0, err
    assert (state / "postgres" / "PG_VERSION").exists()
    assert not (state / "postgres" / "postmaster.pid").exists()


async def test_usage_errors_exit_2() -> None:
    """An unknown command is bad usage: exit 2."""
    code, _, err = await mediad("frobnicate")
    assert code == 2 and "invalid choice" in err


async def test_import_queues_the_media_of_post_files_once(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """import reads a directory of post files (seed 001 posts as JSON Lines, a Twitter v1.1
    tweet), queues each medium once however often it runs, and names a file that is not JSON
    (exit 1) without losing the others."""
    posts = tmp_path / "posts"
    posts.mkdir()
    (posts / "seed.jsonl").write_text(
        json.dumps(
            {"post_id": "p-1", "media": {"type": "image", "url": "https://cdn.example/a.jpg"}}
        )
        + "\n"
        + json.dumps({"post_id": "p-2", "text": "no media"})
        + "\n"
    )
    tweet = {
        "id_str": "1790000000000000001",
        "extended_entities": {
            "media": [
                {"type": "photo", "media_url_https": "https://pbs.twimg.com/media/A.jpg"},
                {
                    "type": "video",
                    "video_info": {
                        "variants": [
                            {
                                "bitrate": 256000,
                                "content_type": "video/mp4",
                                "url": "https://video.twimg.com/lo.mp4",
                            },
                            {
                                "bitrate": 2176000,
                                "content_type": "video/mp4",
                                "url": "https://video.twimg.com/hi.mp4",
                            },
                        ]
                    },
                },
            ]
        },
    }
    (posts / "tweet.json").write_text(json.dumps(tweet))
    broken = tmp_path / "broken.json"
    broken.write_text("<html>503</html>")
    env = {"MEDIAD_DATABASE_URL": db_url}

    code, out, err = await mediad("import", str(posts), str(broken), env=env)
    assert code == 1
    assert (
        err.strip()
        == f"mediad import: {broken}: not JSON: Expecting value: line 1 column 1 (char 0)"
    )
    assert out.splitlines() == [
        f"{posts / 'seed.jsonl'}: 2 posts, 1 media queued, 0 already queued",
        f"{posts / 'tweet.json'}: 1 posts, 2 media queued, 0 already queued",
    ]
    rows = await pool.fetch(
        "SELECT post_id, media_url, media_type, platform, variants, download_status"
        " FROM post_media ORDER BY media_url"
    )
    assert [(r["post_id"], r["media_url"], r["media_type"], r["platform"]) for r in rows] == [
        ("p-1", "https://cdn.example/a.jpg", "image", "other"),
        ("1790000000000000001", "https://pbs.twimg.com/media/A.jpg", "image", "twitter"),
        ("1790000000000000001", "https://video.twimg.com/hi.mp4", "video", "twitter"),
    ]
    assert len(rows[2]["variants"]) == 2
    assert {r["download_status"] for r in rows} == {"not_started"}

    code, out, err = await mediad("import", "--json", str(posts), env=env)
    assert code == 0, err
    report = json.loads(out)
    assert [(f["queued"], f["already_queued"]) for f in report] == [(0, 1), (0, 2)]
    assert await pool.fetchval("SELECT count(*) FROM post_media") == 3
