"""`mediad duplicates` finds through its chunk index exactly the groups that comparing every
pair finds, so the index loses no near pair."""

from __future__ import annotations

import random
from typing import Any

from mediad.analysis import hashes
from mediad.commands.duplicates import linked_roots


def _flip(hex_hash: str, bits: int, rng: random.Random) -> str:
    width = len(hex_hash) * 4
    value = int(hex_hash, 16)
    for bit in rng.sample(range(width), bits):
        value ^= 1 << bit
    return f"{value:0{len(hex_hash)}x}"


def _random_hashes(rng: random.Random, text: str) -> dict[str, Any]:
    return {
        "dhash": f"{rng.getrandbits(64):016x}",
        "phash": f"{rng.getrandbits(64):016x}",
        "phash256": f"{rng.getrandbits(256):064x}",
        "quality": 40,
        "text": text,
    }


def _groups(roots: list[int]) -> set[frozenset[int]]:
    by_root: dict[int, set[int]] = {}
    for index, root in enumerate(roots):
        by_root.setdefault(root, set()).add(index)
    return {frozenset(g) for g in by_root.values() if len(g) > 1}


def _every_pair(all_hashes: list[dict[str, Any]], max_distance: int) -> set[frozenset[int]]:
    parent = list(range(len(all_hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a in range(len(all_hashes)):
        for b in range(a + 1, len(all_hashes)):
            if hashes.near_duplicate(all_hashes[a], all_hashes[b], max_distance=max_distance):
                parent[root(a)] = root(b)
    return _groups([root(i) for i in range(len(all_hashes))])


def test_the_chunk_index_finds_the_groups_that_every_pair_finds() -> None:
    rng = random.Random(7)
    max_distance = hashes.MAX_DISTANCE
    files = [_random_hashes(rng, rng.choice(["", "", "SALE"])) for _ in range(300)]
    # Copies at every distance up to the limit and just past it, some chained (a copy of a
    # copy), the same text or another.
    for original in list(files[:120]):
        copy = dict(original)
        distance = rng.randint(0, max_distance + 1)
        copy["dhash"] = _flip(original["dhash"], distance, rng)
        copy["phash"] = _flip(original["phash"], rng.randint(0, max_distance), rng)
        copy["phash256"] = _flip(original["phash256"], rng.randint(0, 4 * max_distance), rng)
        if rng.random() < 0.1:
            copy["text"] = "other"
        files.append(copy)
    files.append({"dhash": "abc", "quality": 40})  # an older analyser's hashes: never grouped
    expected = _every_pair(files[:-1], max_distance)
    assert len(expected) > 50  # the planted copies make groups, so the comparison can fail
    assert _groups(linked_roots(files, max_distance)) == expected
