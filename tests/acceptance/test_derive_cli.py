"""`mediad derive`, `url --kind`, `verify` on derivatives and `restore`, as users type them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import asyncpg

from mediad.commands import evict
from mediad.storage import s3
from mediad.storage.local import Store
from tests import media
from tests.acceptance.test_archive_cli import cli_env, mediad
from tests.archive_support import archive_settings, events
from tests.derive_support import derived_rows, flip_a_byte, run_derive
from tests.s3server import SeaweedFS
from tests.support import make_config, row


def exists(path: str) -> bool:
    return os.path.exists(path)


async def test_derivatives_on_the_command_line(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """url --kind prints each derivative's URL (the original's for a public copy with nothing
    to strip); verify exits 1 on a damaged thumbnail and --repair mends it; restore brings the
    evicted original back; derive re-queues."""
    settings = archive_settings(s3_server, tmp_path / "store", media_workers="1")
    cfg = make_config(**settings)
    env = cli_env(settings, s3_server, db_url)
    [media_id] = await derived_rows(
        pool, Store.from_config(cfg.storage), [(media.jpeg(64, 48, seed=70), "image/jpeg")]
    )
    await run_derive(cfg, db_url, with_archive=True)
    r = await row(pool, media_id)

    code, out, err = await mediad("url", media_id, "--kind", "thumbnail", env=env)
    assert (code, out) == (0, r["thumbnail_url"] + "\n"), err
    code, out, err = await mediad("url", media_id, "--kind", "public", env=env)
    assert (code, out) == (0, r["hosted_url"] + "\n"), err  # nothing to strip: the original
    code, out, err = await mediad("url", media_id, "--json", env=env)
    assert code == 0, err
    listed = json.loads(out)["derivatives"]
    assert listed["preview"]["url"] == r["derivatives"]["preview"]["url"]
    assert listed["public"]["original"] is True

    flip_a_byte(r["derivatives"]["thumbnail"]["path"])
    code, out, err = await mediad("verify", env=env)
    assert code == 1 and "derivative_corrupt" in out, err
    code, out, err = await mediad("verify", "--repair", "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["problems"] == {"derivative_corrupt": {"found": 1, "repaired": 1}}

    async with s3.open_client(cfg.archive) as client:
        await evict.evict(pool, Store.from_config(cfg.storage), client, 0, by="test")
    assert not exists(r["local_file_path"])
    code, out, err = await mediad("restore", "--media-id", media_id, env=env)
    assert (code, out) == (0, media_id + "\n"), err
    assert exists(r["local_file_path"])
    assert events(await row(pool, media_id), "local_file_restored")

    code, out, err = await mediad("derive", "--media-id", media_id, env=env)
    assert (code, out) == (0, media_id + "\n"), err
    assert (await row(pool, media_id))["derive_status"] == "not_started"
    code, out, err = await mediad("derive", env=env)
    assert code == 2 and "--media-id, --post-id or --all" in err
    code, out, err = await mediad("url", "med-unknown", "--kind", "preview", env=env)
    assert code == 1 and "no row with media_id" in err
