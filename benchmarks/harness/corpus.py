"""The files measured: camera photos (platform-sized and full-size 12 MP), PNG bombs, large PNGs
and one big MP4 (cached between runs), random stored files."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import os
import random
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.harness import report
from mediad.storage.local import Store, StoredFile

# What a platform serves as a photo.
SMALL_MIN, SMALL_MAX = 50_000, 300_000
# Distinct pictures encoded; every photo is one of them plus its own JPEG comment (COM)
# segment, so all photos are real, decodable JPEGs with distinct bytes (no dedup).
BASE_PHOTOS = 200
# Part of every cached corpus's name: bump it when what is generated changes.
CORPUS_VERSION = "v2"


@dataclass(frozen=True)
class CorpusFile:
    name: str  # path below the corpus root (nginx's root)
    size: int
    md5: str
    sha256: str


def make_photo(target: int, seed: int) -> bytes:
    """A 4:3 camera-style JPEG within 3 % of `target` bytes.

    Seeded noise upscaled 4x: smooth enough to cost about 0.4 byte per pixel like a real
    photo, so a 300 kB photo is about 1000x750 pixels (what a platform serves), not a small
    block of pure noise. Its EXIF (make, model, time taken, GPS) makes probing read real EXIF.
    """
    from PIL import Image

    from tests import media

    rng = random.Random(seed)
    exif = media.camera_exif(
        taken_at=datetime(2024, 5, 1 + seed % 28, 7, 8, 9),
        gps=(rng.uniform(0, 80), rng.uniform(0, 170)),
    )
    pixels = target / 0.41
    data = b""
    for _ in range(8):
        width = max(16, round(math.sqrt(pixels * 4 / 3) / 4) * 4)
        height = max(12, round(width * 3 / 4 / 4) * 4)
        small = media.noise_image(width // 4, height // 4, seed=seed)
        buf = io.BytesIO()
        small.resize((width, height), Image.Resampling.BICUBIC).save(
            buf, "JPEG", quality=85, exif=exif
        )
        data = buf.getvalue()
        error = len(data) / target
        if abs(error - 1) <= 0.03:
            break
        pixels /= error
    return data


def _make_photo_job(job: tuple[int, int]) -> bytes:
    return make_photo(*job)


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """`jpeg` with a COM segment holding `text` after its APPn segments (JFIF/EXIF stay first)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    while jpeg[pos] == 0xFF and 0xE0 <= jpeg[pos + 1] <= 0xEF:
        (length,) = struct.unpack(">H", jpeg[pos + 2 : pos + 4])
        pos += 2 + length
    segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    return jpeg[:pos] + segment + jpeg[pos:]


def _write_readable(path: Path, data: bytes) -> None:
    # nginx workers run as `nobody` when the master is root: the corpus must be world-readable.
    path.write_bytes(data)
    path.chmod(0o644)


def photos(cache: Path, count: int) -> list[CorpusFile]:
    """`count` distinct photos under `cache`, generated once and reused while the cache lives."""
    folder = f"photos-{CORPUS_VERSION}-n{count}"
    cached = _cached(cache, folder)
    if cached is not None:
        return cached
    started = time.perf_counter()
    bases = min(BASE_PHOTOS, count)
    rng = random.Random(20240506)
    jobs = [(rng.randint(SMALL_MIN + 2_000, SMALL_MAX - 9_000), seed) for seed in range(bases)]
    print(f"generating {count:,} photos from {bases} encoded pictures ...", flush=True)
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        base_photos = list(pool.map(_make_photo_job, jobs))
    made = (
        (
            f"{index:05d}.jpg",
            with_comment(base_photos[index % bases], f"mediad-bench photo {index}".encode()),
        )
        for index in range(count)
    )
    files = _written(cache, folder, made, check=_check_photo_decodes)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return files


def _check_photo_decodes(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.load()


def big_mp4(cache: Path, size: int) -> CorpusFile:
    """One real MP4 of exactly `size` bytes: a short H.264/AAC movie, then a huge `free` box.

    `free` (ISO/IEC 14496-12 4.1) is a top-level box every reader skips. The movie's boxes
    come first (ftyp, mdat, moov), so FFmpeg's mov demuxer has all it needs before the padding
    and seeks over it: probing costs the same for 2 GB as for 2 MB.
    """
    name = f"big-{CORPUS_VERSION}-{size}.mp4"
    path = cache / name
    sidecar = cache / f"{name}.json"
    if sidecar.exists() and path.exists() and path.stat().st_size == size:
        return CorpusFile(**json.loads(sidecar.read_text()))
    from tests import media

    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    started = time.perf_counter()
    movie = media.mp4(seconds=4, width=640, height=360, fps=25, audio=True, seed=7)
    padding = size - len(movie)
    if padding < 16:
        raise SystemExit(f"--big-size must be more than {len(movie) + 16} bytes")
    print(
        f"generating a {size / report.MB:,.0f} MB MP4 ({len(movie):,} bytes of movie) ...",
        flush=True,
    )
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    # A 64-bit box size (size field 1, then largesize), so any --big-size works.
    header = struct.pack(">I4sQ", 1, b"free", padding)
    block = random.Random(size).randbytes(8 * 1024 * 1024)
    with path.open("wb") as out:
        for chunk in (movie, header):
            out.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
        left = padding - len(header)
        while left > 0:
            chunk = block[: min(left, len(block))]
            out.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
            left -= len(chunk)
    path.chmod(0o644)
    entry = CorpusFile(name, size, md5.hexdigest(), sha256.hexdigest())
    sidecar.write_text(json.dumps(vars(entry)))
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return entry


def bombs(cache: Path, count: int, side: int) -> list[CorpusFile]:
    """`count` distinct decompression bombs: `side`x`side` RGBA PNGs (tests/media.py's
    `huge_png`, a few stripes on black), about 0.7 MB each on the wire for 13000x13000, and
    `side`^2 x 4 bytes each decoded; generated once and reused while the cache lives."""
    folder = f"bombs-{CORPUS_VERSION}-{side}x{side}-n{count}"
    cached = _cached(cache, folder)
    if cached is not None:
        return cached
    from tests import media

    started = time.perf_counter()
    print(f"generating {count} {side}x{side} PNG bombs ...", flush=True)
    made = ((f"bomb{seed}.png", media.huge_png(side, side, seed=seed)) for seed in range(count))
    files = _written(cache, folder, made)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return files


# --- full-size camera photos and large PNGs (the derive benchmark's) -------------------------

# Distinct 12 MP pictures encoded; every photo is one of them with its own COM segment.
BASE_FULL_SIZE_PHOTOS = 8
FULL_SIZE = (4000, 3000)


def full_size_photo(seed: int) -> bytes:
    """A 12 MP camera-like JPEG (4000x3000, quality 90, about 3.3 MB): smooth colour fields,
    some finer detail and sensor grain, and camera EXIF with GPS."""
    from PIL import Image, ImageChops

    from tests import media

    width, height = FULL_SIZE
    base = media.noise_image(width // 80, height // 80, seed=seed)
    detail = media.noise_image(width // 16, height // 16, seed=seed + 1000)
    picture = Image.blend(
        base.resize((width, height), Image.Resampling.BICUBIC),
        detail.resize((width, height), Image.Resampling.BICUBIC),
        0.15,
    )
    rng = random.Random(seed)
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    grain = grain.point(lambda v: 120 + v * 16 // 255)
    picture = ImageChops.add(picture, Image.merge("RGB", (grain, grain, grain)), 1, -128)
    exif = media.camera_exif(gps=(rng.uniform(0, 80), rng.uniform(0, 170)))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def large_png(side: int) -> bytes:
    """A large RGB PNG of smooth colour fields (zlib level 1, as a screenshot tool writes):
    146 MB for 13000x13000, where `bombs` are small on the wire."""
    from PIL import Image

    from tests import media

    small = media.noise_image(max(2, side // 64), max(2, side // 64), seed=77)
    out = io.BytesIO()
    small.resize((side, side), Image.Resampling.BILINEAR).save(out, "PNG", compress_level=1)
    return out.getvalue()


def with_text_chunk(png: bytes, text: bytes) -> bytes:
    """`png` with a tEXt chunk after its IHDR: other bytes, the same picture."""
    end_of_ihdr = 8 + 12 + int.from_bytes(png[8:12], "big")
    body = b"Comment\x00" + text
    chunk = len(body).to_bytes(4, "big") + b"tEXt" + body
    chunk += zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def photos_and_pngs(cache: Path, photos: int, pngs: int, side: int) -> list[CorpusFile]:
    """`photos` distinct 12 MP photos and `pngs` distinct `side`x`side` PNGs (one picture, each
    with its own tEXt chunk) spread evenly among them, generated once and reused while the
    cache lives."""
    folder = f"derive-v1-p{photos}-n{pngs}-s{side}"
    cached = _cached(cache, folder)
    if cached is not None:
        return cached
    started = time.perf_counter()
    bases = min(BASE_FULL_SIZE_PHOTOS, photos)
    print(f"generating {photos:,} 12 MP photos from {bases} pictures and {pngs} PNGs ...")
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        base_photos = list(pool.map(full_size_photo, range(bases)))
        base_png = pool.submit(large_png, side).result() if pngs else b""
    names = [f"{i:05d}.jpg" for i in range(photos)]
    every = max(1, len(names) // max(pngs, 1))
    for index in range(pngs):
        names.insert(min(len(names), index * (every + 1)), f"big-{index:03d}.png")

    def made() -> Iterator[tuple[str, bytes]]:
        for name in names:
            if name.endswith(".png"):
                yield name, with_text_chunk(base_png, name.encode())
            else:
                index = int(name.partition(".")[0])
                yield name, with_comment(base_photos[index % bases], f"photo {index}".encode())

    files = _written(cache, folder, made())
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return files


# --- a corpus on disk -------------------------------------------------------------------------


def _cached(cache: Path, folder: str) -> list[CorpusFile] | None:
    """The files of `cache/folder` when it was generated in full (its manifest is written
    last); None when it must be generated again."""
    manifest = cache / folder / "manifest.json"
    if manifest.exists():
        return [CorpusFile(**entry) for entry in json.loads(manifest.read_text())]
    return None


def _written(
    cache: Path,
    folder: str,
    made: Iterable[tuple[str, bytes]],
    *,
    check: Callable[[Path], None] | None = None,
) -> list[CorpusFile]:
    """Write each (name, bytes) of `made` into a fresh `cache/folder`, readable by everyone,
    with its digests; `check` the last file written; then the manifest (the corpus is whole)."""
    directory = cache / folder
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o755, parents=True)
    directory.chmod(0o755)
    files: list[CorpusFile] = []
    for name, data in made:
        _write_readable(directory / name, data)
        files.append(
            CorpusFile(
                f"{folder}/{name}",
                len(data),
                hashlib.md5(data, usedforsecurity=False).hexdigest(),
                hashlib.sha256(data).hexdigest(),
            )
        )
    if check is not None and files:
        check(directory / files[-1].name.rpartition("/")[2])
    (directory / "manifest.json").write_text(json.dumps([vars(f) for f in files]))
    return files


def warm_page_cache(root: Path, files: Sequence[CorpusFile]) -> None:
    """Read every source file once, so no tool pays for the origin's first disk read."""
    buffer = bytearray(1024 * 1024)
    for f in files:
        with open(root / f.name, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def stored_files(
    store: Store, count: int, large_mb: int, seed: int
) -> tuple[list[StoredFile], StoredFile]:
    """`count` small files and one of `large_mb` MiB, random bytes (for stages that never
    decode), through the store's own temp-file-and-commit path (so digests are real)."""
    rng = random.Random(seed)
    small = []
    for _ in range(count):
        with store.open_temp() as tmp:
            tmp.write(rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX)))
            small.append(store.commit(tmp, "documents", "bin"))
    chunk = 64 * 1024 * 1024
    remaining = large_mb * 1024 * 1024
    with store.open_temp() as tmp:
        while remaining:
            piece = min(chunk, remaining)
            tmp.write(rng.randbytes(piece))
            remaining -= piece
        large = store.commit(tmp, "videos", "bin")
    return small, large
