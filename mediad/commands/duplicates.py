"""`mediad duplicates`: groups of media that are one picture re-encoded or resized, found by the
local analyser's perceptual hashes (exact duplicates are already one file).

Two files are near when `analysis.hashes.near_duplicate` says so (every hash within the
distance, the same text, detail enough); a group is what nearness links, transitively.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
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
    linked: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for index, root in enumerate(linked_roots([f["hashes"] for f in files], max_distance)):
        found = files[index]
        linked[root].append(
            {
                "sha256": found["sha256_sum"],
                "media_ids": list(found["media_ids"]),
                "post_ids": list(found["post_ids"] or []),
            }
        )
    found_groups = [sorted(g, key=lambda f: f["sha256"]) for g in linked.values() if len(g) > 1]
    return sorted(found_groups, key=lambda g: (-len(g), g[0]["sha256"]))


def linked_roots(all_hashes: list[dict[str, Any]], max_distance: int) -> list[int]:
    """For each file's hashes, the index of its group's representative: files are linked when
    `near_duplicate` says so, transitively."""
    parent = list(range(len(all_hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in _candidate_pairs(all_hashes, max_distance):
        if root(a) != root(b) and _near(all_hashes[a], all_hashes[b], max_distance):
            parent[root(a)] = root(b)
    return [root(i) for i in range(len(all_hashes))]


def _candidate_pairs(
    all_hashes: list[dict[str, Any]], max_distance: int
) -> Iterator[tuple[int, int]]:
    """Pairs of files that may be near one another: every near pair is among them (some more
    than once), and few others.

    Comparing every pair is quadratic (a million photos without text are one bucket), so pairs
    are found through the pigeonhole principle: two 64-bit hashes that differ in at most d bits
    agree exactly on at least one of d+1 disjoint chunks. A pair near in both dhash and phash
    therefore shares some (dhash chunk, phash chunk) pairing; for random hashes about one pair
    in 5,000 shares one.
    """
    chunked: list[tuple[int, Any, int, int, list[int], list[int]]] = []
    # near_duplicate requires the same text, so files of different texts are never paired.
    unchunked: dict[Any, list[int]] = defaultdict(list)
    for index, h in enumerate(all_hashes):
        d_chunks, p_chunks = (
            _chunks(h.get("dhash"), max_distance),
            _chunks(h.get("phash"), max_distance),
        )
        if d_chunks is None or p_chunks is None:
            # Not the 64-bit hashes the chunks assume (another analyser version): such files
            # are comparable only with one another.
            unchunked[h.get("text")].append(index)
        else:
            d, p = int(h["dhash"], 16), int(h["phash"], 16)
            chunked.append((index, h.get("text"), d, p, d_chunks, p_chunks))
    pieces = max_distance + 1
    # One pairing at a time, so memory grows with the files, not with files times pairings;
    # a list is made only for a key that two files share.
    for d_piece, p_piece in itertools.product(range(pieces), repeat=2):
        first: dict[tuple[Any, int, int], int] = {}
        shared: dict[tuple[Any, int, int], list[int]] = {}
        for position, (_, text, _, _, d_chunks, p_chunks) in enumerate(chunked):
            key = (text, d_chunks[d_piece], p_chunks[p_piece])
            earlier = first.setdefault(key, position)
            if earlier != position:
                shared.setdefault(key, [earlier]).append(position)
        for members in shared.values():
            for a, b in itertools.combinations((chunked[m] for m in members), 2):
                # The cheap half of near_duplicate first: most pairs sharing a key are far.
                if (a[2] ^ b[2]).bit_count() <= max_distance >= (a[3] ^ b[3]).bit_count():
                    yield a[0], b[0]
    for members in unchunked.values():
        yield from itertools.combinations(members, 2)


def _chunks(hex_hash: Any, max_distance: int) -> list[int] | None:
    """The bits of a 64-bit hash in each of max_distance + 1 disjoint ranges."""
    pieces = max_distance + 1
    if not isinstance(hex_hash, str) or len(hex_hash) != 16 or pieces > 64:
        return None
    try:
        value = int(hex_hash, 16)
    except ValueError:
        return None
    bounds = [64 * n // pieces for n in range(pieces + 1)]
    return [(value >> low) & ((1 << (high - low)) - 1) for low, high in itertools.pairwise(bounds)]


def _near(a: dict[str, Any], b: dict[str, Any], max_distance: int) -> bool:
    try:
        return hashes.near_duplicate(a, b, max_distance=max_distance)
    except ValueError:
        return False  # hashes of another version of the analyser: not comparable
