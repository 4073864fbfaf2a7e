"""What each botocore shortcut of mediad's S3 client buys: CPU per small file, against SeaweedFS.

    .venv/bin/python benchmarks/s3_requests.py [--files 300] [--rounds 5] [--batch 20]
        [--concurrency 8]

One SeaweedFS (`weed mini`, auth on, 127.0.0.1) in a temporary directory. Per file, the requests
the archive stage makes for a small file: `S3.put_bytes` (If-None-Match, Content-MD5, SHA-256)
and `S3.check` (the verifying HEAD, judged), `--concurrency` files at once; `--files` random
files of 50-300 kB, each under a fresh key every time.

The variants: every shortcut in `mediad.storage.s3shortcuts.ALL`, none, and all but each one,
each its own client, all open at once and warmed up. A round sends every file through every
client, a `--batch` of files at a time, the clients taking turns batch by batch: the machine's
load (shared, noisy) then weighs on every variant alike. The CPU is this process's own (all
threads; SeaweedFS excluded) while a batch runs, garbage collected between batches. What a
shortcut buys is (all but it) - (all), paired round by round; the table gives the medians.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory would come first on sys.path, and benchmarks/queue.py
# would then shadow the standard library's queue module.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import asyncio
import contextlib
import gc
import hashlib
import os
import platform
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mediad import config
from mediad.storage import checksums, s3, s3shortcuts
from tests.s3server import SeaweedFS

SMALL_MIN, SMALL_MAX = 50_000, 300_000
WARM_UP = 20


@dataclass(frozen=True)
class File:
    data: bytearray
    md5: str
    sha256: str


@dataclass(frozen=True)
class Variant:
    name: str
    shortcuts: frozenset[str]


def make_files(count: int, seed: int) -> list[File]:
    rng = random.Random(seed)
    files = []
    for _ in range(count):
        data = bytearray(rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX)))
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        files.append(File(data, md5, hashlib.sha256(data).hexdigest()))
    return files


def variants() -> list[Variant]:
    found = [Variant("all", s3shortcuts.ALL), Variant("none", frozenset())]
    for name in sorted(s3shortcuts.ALL):
        found.append(Variant(f"all but {name}", s3shortcuts.ALL - {name}))
    return found


async def archive_files(client: s3.S3, files: Sequence[File], prefix: str, at_once: int) -> None:
    """PUT and verify each file under `prefix`, as the archive stage does a small file."""
    slots = asyncio.Semaphore(at_once)

    async def one(f: File) -> None:
        key = f"{prefix}/{f.sha256[:2]}/{f.sha256}.bin"
        async with slots:
            uploaded = await client.put_bytes(
                key, f.data, md5=f.md5, sha256=f.sha256, if_none_match=True
            )
            expected = checksums.Expected(len(f.data), f.sha256, f.md5)
            _, verdict = await client.check(key, expected)
        if uploaded is None or not verdict.ok:
            raise RuntimeError(f"{key}: not uploaded and verified ({verdict.how})")

    await asyncio.gather(*(one(f) for f in files))


async def rounds(
    cfg: config.ArchiveConfig,
    runs: Sequence[Variant],
    files: Sequence[File],
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """CPU microseconds per file of each variant, round by round."""
    spent: dict[str, list[float]] = {v.name: [] for v in runs}
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for variant in runs:
            client = await stack.enter_async_context(
                s3.open_client(cfg, shortcuts=variant.shortcuts)
            )
            if client.shortcuts != variant.shortcuts:
                missing = ", ".join(sorted(variant.shortcuts - client.shortcuts))
                raise RuntimeError(f"{variant.name}: not taken with this botocore: {missing}")
            await archive_files(client, files[:WARM_UP], f"warm-{secrets.token_hex(4)}", 8)
            clients.append(client)
        gc.disable()  # collected between batches, never inside one
        try:
            for r in range(args.rounds):
                cpu = [0.0] * len(runs)
                prefixes = [f"bench-{secrets.token_hex(4)}" for _ in runs]
                for b, start in enumerate(range(0, len(files), args.batch)):
                    batch = files[start : start + args.batch]
                    for n in range(len(runs)):
                        turn = (n + b + r) % len(runs)  # who goes first rotates
                        gc.collect()
                        before = time.process_time()
                        await archive_files(clients[turn], batch, prefixes[turn], args.concurrency)
                        cpu[turn] += time.process_time() - before
                for variant, seconds in zip(runs, cpu, strict=True):
                    spent[variant.name].append(seconds / len(files) * 1e6)
                load = os.getloadavg()[0]
                print(f"round {r + 1}/{args.rounds} done, load average {load:.2f}")
        finally:
            gc.enable()
    return spent


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=300, help="small files (50-300 kB)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the files")
    parser.add_argument("--batch", type=int, default=20, help="files per turn of a client")
    parser.add_argument("--concurrency", type=int, default=8, help="files in flight at once")
    args = parser.parse_args(argv)
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"S3 client benchmark on {machine}, {platform.system()} {platform.release()}")
    files = make_files(max(args.files, WARM_UP), seed=1)
    print(f"files: {len(files)} of 50-300 kB ({sum(len(f.data) for f in files) / 1e6:.0f} MB)")

    with tempfile.TemporaryDirectory(prefix="mediad-s3-bench-") as tmp:
        server = SeaweedFS(Path(tmp) / "s3")
        server.start()
        try:
            os.environ.update(server.env())
            cfg = config.load(
                None,
                env={
                    "MEDIAD_ARCHIVE_ENABLED": "true",
                    "MEDIAD_ARCHIVE_BUCKET": server.bucket,
                    "MEDIAD_ARCHIVE_ENDPOINT_URL": server.endpoint,
                    "MEDIAD_ARCHIVE_ADDRESSING_STYLE": "path",
                    "MEDIAD_ARCHIVE_CONCURRENCY": str(args.concurrency),
                },
            ).archive
            runs = variants()
            started = time.perf_counter()
            spent = await rounds(cfg, runs, files, args)
            elapsed = time.perf_counter() - started
        finally:
            server.stop()

    base = statistics.median(spent["all"])
    print()
    print(
        f"CPU per small file (PUT + verifying HEAD), median of {args.rounds} rounds of"
        f" {args.files} files, {args.concurrency} at once ({elapsed:.0f} s in all), in us:"
    )
    print(f"{'variant':<30}{'cpu/file':>10}{'best':>8}{'- all':>8}{'min':>8}{'max':>8}{'%':>7}")
    for variant in runs:
        saved = [x - a for x, a in zip(spent[variant.name], spent["all"], strict=True)]
        median = statistics.median(saved)
        print(
            f"{variant.name:<30}{statistics.median(spent[variant.name]):>10.0f}"
            f"{min(spent[variant.name]):>8.0f}{median:>8.0f}{min(saved):>8.0f}{max(saved):>8.0f}"
            f"{median / base * 100:>7.1f}"
        )
    print()
    for name in sorted(s3shortcuts.ALL):
        saved = [x - a for x, a in zip(spent[f"all but {name}"], spent["all"], strict=True)]
        median = statistics.median(saved)
        print(
            f"{name}: saves {median:.0f} us per file, {median / (base + median) * 100:.1f}% of"
            f" the CPU without it (rounds: {', '.join(f'{x:.0f}' for x in saved)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
