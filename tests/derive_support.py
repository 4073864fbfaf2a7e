"""Helpers for derive tests: configs, rows whose download completed with real files of any
type, and the derive stage run in-process."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image

from mediad import config, daemon
from mediad.stages import archive, derive
from mediad.storage.local import Store
from tests.archive_support import downloaded_rows
from tests.support import make_config

# mime type: (store folder, extension, media_type)
TYPES = {
    "image/jpeg": ("images", "jpg", "image"),
    "image/png": ("images", "png", "image"),
    "image/gif": ("images", "gif", "gif"),
    "image/webp": ("images", "webp", "image"),
    "video/mp4": ("videos", "mp4", "video"),
    "audio/mpeg": ("audio", "mp3", "audio"),
    "application/pdf": ("documents", "pdf", "document"),
}


def derive_config(root: Path, **overrides: str) -> config.Config:
    settings = {
        "storage_root": str(root),
        "storage_public_base_url": "https://media.example.org",
        "media_workers": "1",
        "daemon_backoff_base": "100ms",
        "daemon_backoff_max": "200ms",
        "daemon_poll_interval": "200ms",
    }
    return make_config(**(settings | overrides))


async def derived_rows(
    pool: asyncpg.Pool[Any], store: Store, files: Sequence[tuple[bytes, str]]
) -> list[str]:
    """Rows whose download completed, one per (bytes, mime type), waiting for derive."""
    made = await downloaded_rows(
        pool, store, [(data, *TYPES[mime][:2]) for data, mime in files], derive="not_started"
    )
    for done, (data, mime) in zip(made, files, strict=True):
        width = height = None
        if mime.startswith("image/"):
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        await pool.execute(
            "UPDATE post_media SET mime_type = $2, media_type = $3, width = $4, height = $5"
            " WHERE media_id = $1",
            done.media_id,
            mime,
            TYPES[mime][2],
            width,
            height,
        )
    return [d.media_id for d in made]


async def run_derive(cfg: config.Config, url: str, *, with_archive: bool = False) -> None:
    """`mediad run --once` in-process with only the derive stage (and the archive's)."""
    openers = {"derive": derive.open_stage}
    if with_archive:
        openers["archive"] = archive.open_stage
    await daemon.run(cfg, once=True, url=url, openers=openers)


def flip_a_byte(path: str) -> None:
    """Damage the file at `path` in its middle, keeping its size."""
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def derived_files(root: Path, kind: str, sha256: str = "") -> list[Path]:
    """The files of `kind` derived from the bytes `sha256` (any, by default) under `root`."""
    return sorted(p for p in (root / "derived" / kind).rglob(f"{sha256}*") if p.is_file())


def close_to(colour: object, expected: tuple[int, int, int], tolerance: int) -> bool:
    assert isinstance(colour, tuple)
    return max(abs(int(a) - b) for a, b in zip(colour, expected, strict=True)) < tolerance


def opened(entry: dict[str, Any]) -> Image.Image:
    with Image.open(entry["path"]) as img:
        img.load()
        return img
