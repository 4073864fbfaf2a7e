"""`mediad derive` and the derivative half of `mediad verify`.

`requeue` puts rows back in the derive queue (after a change of sizes): every row holding the
same bytes goes with them, since they share one set of files. `check` re-hashes every recorded
derivative of this node's rows against its SHA-256; with `repair` a missing or damaged one is
made again from its original (the local file, or the archived object proven by its SHA-256)
and every row sharing those bytes records the new files.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from mediad import queries, stages
from mediad.commands import verify
from mediad.stage import Result, Row
from mediad.storage.local import Store

log = structlog.get_logger(__name__)

_PAGE = 200
# Statuses a named row is re-queued from (anything but in flight), and those --all takes: the
# rows still waiting are already queued.
_NAMED = ["failed", "completed", "skipped", "not_started"]
_ALL = ["failed", "completed", "skipped"]
_ROW_FIELDS = (
    "post_id", "media_type", "local_file_path", "hosted_url", "md5_sum", "sha256_sum",
    "file_size", "mime_type", "width", "height", "archive_url",
)  # fmt: skip

Rederive = Callable[[Row], Awaitable[Result]]


async def requeue(
    pool: asyncpg.Pool[Any],
    *,
    media_ids: Sequence[str] = (),
    post_id: str | None = None,
    everything: bool = False,
    by: str = "mediad derive",
) -> list[str]:
    """Re-queue the derive stage of the rows named (and of those sharing their bytes), of a
    post, or of every row; the media_ids re-queued."""
    sql = queries.for_stage(stages.DERIVE)["requeue"]
    if everything:
        return [r["media_id"] for r in await pool.fetch(sql, _ALL, None, None, None, by)]
    siblings = await pool.fetch(queries.plain()["derive_siblings"], list(media_ids), post_id)
    if not siblings:
        return []
    named = [sibling["media_id"] for sibling in siblings]
    return [r["media_id"] for r in await pool.fetch(sql, _NAMED, named, None, None, by)]


async def check(
    pool: asyncpg.Pool[Any],
    store: Store,
    report: verify.Report,
    *,
    rederive: Rederive | None = None,
    by: str = "mediad verify",
) -> None:
    """Re-hash every derivative recorded for this node's rows, adding what is missing or wrong
    to `report`; with `rederive` (verify --repair), make each damaged set again."""
    sql = queries.plain()
    checked: dict[str, str | None] = {}  # path -> problem, for files rows share
    repaired: dict[str, bool] = {}  # source sha256 -> made again
    after = ""
    while page := await pool.fetch(sql["derived_rows"], after, _PAGE, store.node):
        after = page[-1]["media_id"]
        for record in page:
            damage = []
            for kind, entry in sorted((record["derivatives"] or {}).items()):
                if not isinstance(entry, dict) or entry.get("original") or not entry.get("path"):
                    continue
                path = str(entry["path"])
                if path not in checked:
                    checked[path] = await _problem(store, path, str(entry.get("sha256", "")))
                    report.derivatives_checked += 1
                problem = checked[path]
                if problem is not None:
                    damage.append(
                        verify.Damage(problem, path, [record["media_id"]], f"{kind}: {problem}")
                    )
            if not damage:
                continue
            sha256 = record["sha256_sum"]
            if rederive is not None and sha256 not in repaired:
                repaired[sha256] = await _repair(pool, store, record, rederive, by)
            for item in damage:
                item.repaired = repaired.get(sha256, False)
            report.damage.extend(damage)


async def _problem(store: Store, path: str, sha256: str) -> str | None:
    """None when the file at `path` (inside the store) hashes to `sha256`."""
    try:
        store.relative(path)
    except ValueError:
        return "derivative_outside_store"
    if not await asyncio.to_thread(os.path.isfile, path):
        return "derivative_missing"
    if not await asyncio.to_thread(store.verify, Path(path), sha256):
        return "derivative_corrupt"
    return None


async def _repair(
    pool: asyncpg.Pool[Any], store: Store, record: asyncpg.Record, rederive: Rederive, by: str
) -> bool:
    """Derive the row's bytes again and record the new files in every row sharing them."""
    row = Row(media_id=record["media_id"], attempt=1, **{f: record[f] for f in _ROW_FIELDS})
    try:
        result = await rederive(row)
    except Exception as exc:
        log.warning("derivative_repair_failed", media_id=row.media_id, error=str(exc))
        return False
    details = {**result.details, "by": by}
    await pool.execute(
        queries.plain()["derivatives_repaired"],
        record["sha256_sum"],
        result.columns["derivatives"],
        result.columns["thumbnail_url"],
        result.metadata["derive"],
        details,
        store.node,
    )
    log.info("derivatives_repaired", media_id=row.media_id, kinds=details.get("kinds"))
    return True
