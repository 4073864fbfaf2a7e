"""The analysis stage with the local backend against a real PostgreSQL: OCR, hashes, colours
in a decoder worker, and `mediad duplicates` grouping a re-encoded copy with its original."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image

from mediad import daemon
from mediad.commands import duplicates
from mediad.stages import analysis
from tests import media
from tests.acceptance.test_cli import mediad
from tests.archive_support import downloaded_rows, events, store_of
from tests.support import make_config, row


async def test_the_local_backend_reads_text_and_groups_near_duplicates(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """Offline analysis of a rendered caption finds its words, and a re-encoded, resized copy
    of it (other bytes) is grouped with it by `mediad duplicates`, while a different picture
    is not."""
    cfg = make_config(storage_root=str(tmp_path), analysis_enabled="true", analysis_backend="local")
    caption = media.text_picture("ARCHIVE 2026 MEDIA", 900, 600, size=80)
    smaller = caption.resize((810, 540), Image.Resampling.LANCZOS)
    files = [
        (media.encoded(caption, "PNG"), "images", "png"),
        (media.encoded(smaller, "JPEG", quality=60), "images", "jpg"),
        (media.encoded(media.photo_like(900, 600, seed=3), "JPEG", quality=90), "images", "jpg"),
    ]
    original, copy, other = [
        d.media_id
        for d in await downloaded_rows(pool, store_of(cfg), files, analysis="not_started")
    ]
    await pool.execute(
        "UPDATE post_media SET mime_type = 'image/png' WHERE media_id = $1", original
    )
    await daemon.run(cfg, once=True, url=db_url, openers={"analysis": analysis.open_stage})
    r = await row(pool, original)
    assert r["ai_analysis_status"] == "completed"
    doc = json.loads(r["ai_analysis"])
    assert (doc["schema"], doc["backend"]) == ("mediad.analysis/1", "local")
    assert doc["model"].startswith("rapidocr-")
    assert "ARCHIVE 2026 MEDIA" in doc["visible_text"]
    assert {"dhash", "phash", "phash256", "quality"} <= set(doc["hashes"])
    assert doc["colors"][0]["hex"] == "#ffffff"
    assert doc["blank"]["is_blank"] is False
    [done] = events(r, "ai_analysis_completed")
    assert (done["details"]["backend"], done["details"]["tokens_used"]) == ("local", 0)

    found = await duplicates.groups(pool, post_id=None, max_distance=10)
    assert [sorted(m for f in g for m in f["media_ids"]) for g in found] == [
        sorted([original, copy])
    ]
    code, out, _ = await mediad("duplicates", "--json", env={"MEDIAD_DATABASE_URL": db_url})
    assert code == 0
    assert other not in out and original in out
