"""CPU per request of a small file's archive, against SeaweedFS: the PUT by each transport, and
the verifying HEAD with each of botocore's shortcuts.

    .venv/bin/python benchmarks/s3_requests.py [--files 300] [--rounds 5] [--batch 20]
        [--concurrency 8]

One SeaweedFS (`weed mini`, auth on, 127.0.0.1) in a temporary directory; `--files` random files
of 50-300 kB, `--concurrency` requests at once, each file under a fresh key every time.

The variants, each its own client, all open at once and warmed up:
- PUT (If-None-Match, Content-MD5, SHA-256, our metadata) by mediad's own signed aiohttp request
  (`S3.put_bytes`, storage/s3put.py); by aiobotocore's `put_object` with every botocore shortcut
  (what `S3.put_bytes` did before); and by obstore (the Rust object_store) where it is installed
  (the bench extra), which computes and sends the SHA-256 itself and answers only the ETag.
- HEAD (`S3.check`, judged) with every shortcut of `mediad.storage.s3shortcuts.ALL`, none, and
  all but each one.
A round sends every file through every variant, a `--batch` of files at a time, the variants
taking turns batch by batch: the machine's load (shared, noisy) then weighs on every variant
alike. The CPU is this process's own (all threads, obstore's included; SeaweedFS excluded)
while a batch runs, garbage collected between batches. Medians of the rounds; what a shortcut
buys is (all but it) - (all), paired round by round. Exits 1 when mediad's PUT takes more CPU
than either peer transport.
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mediad import config
from mediad.storage import checksums, s3, s3shortcuts
from tests.s3server import SeaweedFS

SMALL_MIN, SMALL_MAX = 50_000, 300_000
WARM_UP = 20
OWN_PUT = "PUT: mediad (signed aiohttp request)"
BOTOCORE_PUT = "PUT: aiobotocore put_object, all shortcuts"
OBSTORE_PUT = "PUT: obstore"
ALL_SHORTCUTS = "HEAD: all shortcuts"


@dataclass(frozen=True)
class File:
    data: bytearray
    md5: str
    sha256: str


# Sends one file's request under a key: (client, file, key).
Send = Callable[["s3.S3", File, str], Awaitable[None]]


@dataclass(frozen=True)
class Variant:
    name: str
    shortcuts: frozenset[str]
    send: Send
    # HEAD variants check objects their PUT variant wrote first, untimed.
    heads: bool = False


def make_files(count: int, seed: int) -> list[File]:
    rng = random.Random(seed)
    files = []
    for _ in range(count):
        data = bytearray(rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX)))
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        files.append(File(data, md5, hashlib.sha256(data).hexdigest()))
    return files


async def own_put(client: s3.S3, f: File, key: str) -> None:
    uploaded = await client.put_bytes(key, f.data, md5=f.md5, sha256=f.sha256, if_none_match=True)
    if uploaded is None or uploaded.etag != f.md5:
        raise RuntimeError(f"{key}: not uploaded ({uploaded})")


async def botocore_put(client: s3.S3, f: File, key: str) -> None:
    answer = await client.client.put_object(
        Bucket=client.bucket, Key=key, Body=f.data, ContentLength=len(f.data),
        ContentMD5=checksums.b64(f.md5), ChecksumSHA256=checksums.b64(f.sha256),
        IfNoneMatch="*", Metadata={s3.METADATA_SHA256: f.sha256},
    )  # fmt: skip
    if answer["ETag"].strip('"') != f.md5:
        raise RuntimeError(f"{key}: not uploaded ({answer})")


def obstore_put(server: SeaweedFS) -> Send | None:
    try:
        import obstore
        from obstore.store import S3Store
    except ImportError:
        return None
    store = S3Store(
        server.bucket, endpoint=server.endpoint, region="us-east-1",
        access_key_id=server.access_key, secret_access_key=server.secret_key,
        checksum_algorithm="sha256", unsigned_payload=True, client_options={"allow_http": True},
    )  # fmt: skip

    async def send(client: s3.S3, f: File, key: str) -> None:
        answer = await obstore.put_async(
            store, key, f.data, mode="create", use_multipart=False,
            attributes={s3.METADATA_SHA256: f.sha256},
        )  # fmt: skip
        if (answer["e_tag"] or "").strip('"') != f.md5:
            raise RuntimeError(f"{key}: not uploaded ({answer})")

    return send


async def head(client: s3.S3, f: File, key: str) -> None:
    _, verdict = await client.check(key, checksums.Expected(len(f.data), f.sha256, f.md5))
    if not verdict.ok:
        raise RuntimeError(f"{key}: not verified ({verdict.how})")


def variants(server: SeaweedFS) -> list[Variant]:
    found = [
        Variant(OWN_PUT, s3shortcuts.ALL, own_put),
        Variant(BOTOCORE_PUT, s3shortcuts.ALL, botocore_put),
    ]
    if (send := obstore_put(server)) is not None:
        found.append(Variant(OBSTORE_PUT, frozenset(), send))
    found += [
        Variant(ALL_SHORTCUTS, s3shortcuts.ALL, head, heads=True),
        Variant("HEAD: none", frozenset(), head, heads=True),
    ]
    for name in sorted(s3shortcuts.ALL):
        found.append(Variant(f"HEAD: all but {name}", s3shortcuts.ALL - {name}, head, heads=True))
    return found


async def each_file(
    client: s3.S3, send: Send, files: Sequence[File], prefix: str, at_once: int
) -> None:
    """`send` each file under `prefix`, `at_once` at a time."""
    slots = asyncio.Semaphore(at_once)

    async def one(f: File) -> None:
        async with slots:
            await send(client, f, f"{prefix}/{f.sha256[:2]}/{f.sha256}.bin")

    await asyncio.gather(*(one(f) for f in files))


async def rounds(
    cfg: config.ArchiveConfig,
    runs: Sequence[Variant],
    files: Sequence[File],
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """CPU microseconds per request of each variant, round by round."""
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
            warm = f"warm-{secrets.token_hex(4)}"
            if variant.heads:
                await each_file(client, own_put, files[:WARM_UP], warm, 8)
            await each_file(client, variant.send, files[:WARM_UP], warm, 8)
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
                        variant, client = runs[turn], clients[turn]
                        if variant.heads:  # the objects to check, untimed
                            await each_file(client, own_put, batch, prefixes[turn], 8)
                        gc.collect()
                        before = time.process_time()
                        await each_file(
                            client, variant.send, batch, prefixes[turn], args.concurrency
                        )
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
    parser.add_argument("--batch", type=int, default=20, help="files per turn of a variant")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    args = parser.parse_args(argv)
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"S3 request benchmark on {machine}, {platform.system()} {platform.release()}")
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
            runs = variants(server)
            started = time.perf_counter()
            spent = await rounds(cfg, runs, files, args)
            elapsed = time.perf_counter() - started
        finally:
            server.stop()

    print()
    print(
        f"CPU per request of a small file, median of {args.rounds} rounds of {args.files} files,"
        f" {args.concurrency} at once ({elapsed:.0f} s in all), in us:"
    )
    print(f"{'variant':<44}{'cpu/request':>12}{'best':>8}{'worst':>8}{'x mediad':>10}")
    own = statistics.median(spent[OWN_PUT])
    for variant in runs:
        median = statistics.median(spent[variant.name])
        print(
            f"{variant.name:<44}{median:>12.0f}{min(spent[variant.name]):>8.0f}"
            f"{max(spent[variant.name]):>8.0f}{median / own:>10.2f}"
        )
    if OBSTORE_PUT not in spent:
        print("(obstore is not installed: pip install -e '.[bench]' to measure it too)")
    print()
    base = statistics.median(spent[ALL_SHORTCUTS])
    for name in sorted(s3shortcuts.ALL):
        saved = [
            x - a for x, a in zip(spent[f"HEAD: all but {name}"], spent[ALL_SHORTCUTS], strict=True)
        ]
        median = statistics.median(saved)
        print(
            f"{name}: saves {median:.0f} us per HEAD, {median / (base + median) * 100:.1f}% of"
            f" its CPU without it (rounds: {', '.join(f'{x:.0f}' for x in saved)})"
        )
    peers = [statistics.median(spent[n]) for n in (BOTOCORE_PUT, OBSTORE_PUT) if n in spent]
    if own > min(peers):
        print("\nTARGET NOT MET: mediad's PUT takes more CPU than a peer transport")
        return 1
    print("\nmediad's PUT takes the least CPU of the transports measured")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
