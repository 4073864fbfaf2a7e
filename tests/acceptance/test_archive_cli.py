"""`mediad verify`, `url` and `evict` as users type them, against a real S3 (SeaweedFS)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg

from tests import media
from tests.archive_support import archive_settings, downloaded_rows, run_archive, store_of
from tests.s3server import SeaweedFS
from tests.support import make_config, row


async def mediad(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run `python -m mediad ARGS` with only `env` for MEDIAD_* and AWS_*; (status, out, err)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAD_", "AWS_"))} | env
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediad", *args, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_env(settings: dict[str, str], server: SeaweedFS, db_url: str) -> dict[str, str]:
    env = {"MEDIAD_" + k.upper(): v for k, v in settings.items()}
    return env | server.env() | {"MEDIAD_DATABASE_URL": db_url}


async def test_verify_exits_1_on_damage_and_0_once_repaired(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """verify prints a summary by problem kind and exits 1 while damage remains; --repair mends a
    deleted local file from the archive and exits 0."""
    settings = archive_settings(s3_server, tmp_path / "store")
    cfg = make_config(**settings)
    [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg_with_exif(seed=50)])
    await run_archive(cfg, db_url)
    original = done.stored.path.read_bytes()
    done.stored.path.unlink()
    env = cli_env(settings, s3_server, db_url)

    code, out, err = await mediad("verify", env=env)
    assert code == 1, err
    assert "local_missing" in out and "damage remaining: 1" in out
    assert "verify: 1/1 files" in err

    code, out, err = await mediad("verify", "--repair", "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    assert report["problems"] == {"local_missing": {"found": 1, "repaired": 1}}
    assert report["remaining"] == []
    assert done.stored.path.read_bytes() == original

    code, out, err = await mediad("verify", "--deep", env=env)
    assert (code, out.splitlines()[-1]) == (0, "damage remaining: 0"), err


async def test_url_and_evict_on_the_command_line(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """url prints the hosted URL alone; evict frees the store to the limit; url then prints a
    presigned URL, and with --json says which kind and why."""
    settings = archive_settings(s3_server, tmp_path / "store")
    cfg = make_config(**settings)
    [done] = await downloaded_rows(pool, store_of(cfg), [media.png(seed=51)])
    await run_archive(cfg, db_url)
    env = cli_env(settings, s3_server, db_url)

    code, out, err = await mediad("url", done.media_id, env=env)
    assert (code, out) == (0, f"{done.stored.hosted_url}\n"), err

    code, out, err = await mediad("evict", "--max-bytes", "0", env=env)
    assert code == 0, err
    assert f"evicted 1 file(s), {done.stored.size} bytes" in out
    assert not done.stored.path.exists()
    assert (await row(pool, done.media_id))["local_file_path"] is None

    code, out, err = await mediad("url", done.media_id, "--json", env=env)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["kind"] == "presigned" and answer["url"].startswith(s3_server.endpoint)
    assert "no local copy" in answer["reason"] and answer["expires_at"]
    assert s3_server.secret_key not in out + err

    code, out, err = await mediad("url", "med-unknown", env=env)
    assert code == 1 and "no row with media_id" in err

    code, out, err = await mediad("evict", "--max-bytes", "lots", env=env)
    assert code == 2 and "--max-bytes" in err
