"""`mediad duplicates`: groups of media that are one picture re-encoded or resized, found by the
local analyser's perceptual hashes (exact duplicates are already one file).

Two files are near when `analysis.hashes.near_duplicate` says so (every hash within the
distance, the same text, detail enough); a group is what nearness links, transitively.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from mediad import queries
from mediad.analysis import hashes


async def groups(
    pool: asyncpg.Pool[Any], *, post_id: str | None, max_distance: int
) -> list[list[dict[str, Any]]]:
    """The groups of two or more distinct files whose pictures are near-duplicates."""
    records = await pool.fetch(queries.plain()["analysis_hashes"], post_id)
    files = [dict(r) for r in records if isinstance(r["hashes"], dict)]
    # near_duplicate requires the same text, so only files with the same text are compared.
    by_text: dict[Any, list[int]] = defaultdict(list)
    for index, found in enumerate(files):
        by_text[found["hashes"].get("text")].append(index)
    parent = list(range(len(files)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for members in by_text.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if root(a) != root(b) and _near(files[a], files[b], max_distance):
                    parent[root(a)] = root(b)
    linked: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for index, found in enumerate(files):
        linked[root(index)].append(
            {
                "sha256": found["sha256_sum"],
                "media_ids": list(found["media_ids"]),
                "post_ids": list(found["post_ids"] or []),
            }
        )
    found_groups = [sorted(g, key=lambda f: f["sha256"]) for g in linked.values() if len(g) > 1]
    return sorted(found_groups, key=lambda g: (-len(g), g[0]["sha256"]))


def _near(a: dict[str, Any], b: dict[str, Any], max_distance: int) -> bool:
    try:
        return hashes.near_duplicate(a["hashes"], b["hashes"], max_distance=max_distance)
    except ValueError:
        return False  # hashes of another version of the analyser: not comparable
