"""Knowing what was fetched: sniff the bytes, prove them whole, and read their metadata.

`probe_file` is the one entry point (the daemon runs it in a decoder worker process, as the
task `probe_task`; a photo it holds in memory it proves itself with jpeg.probe): sniff.py names
the type from the magic bytes, then the one prover of that type opens the file: jpeg.py (a walk
of its structure, EXIF by exif.py, no Pillow), images.py (Pillow, for the other pictures),
audio_video.py (PyAV) or documents.py (PDF). Each returns a `MediaInfo` (info.py)
or raises an errors.MediaError. Everything here is synchronous and CPU- or disk-bound.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mediad import errors
from mediad.media import audio_video, containers, documents, images, info, sniff
from mediad.media.info import MediaInfo

__all__ = ["MediaInfo", "probe_file", "probe_task"]

# Images up to this size are read into memory to be probed; larger ones are read from the file
# as Pillow needs them, and mapped for their structure walk, so a probe's copy of a file never
# takes more memory than this.
READ_WHOLE = 16 * 1024**2


def probe_file(
    path: Path,
    *,
    declared_type: str | None = None,
    max_image_pixels: int = info.MAX_IMAGE_PIXELS,
    data: bytes | None = None,
) -> MediaInfo:
    """Identify the file at `path` from its bytes and prove it whole; raise an errors.MediaError.

    `declared_type` (a Content-Type or the row's media_type) is never trusted; it only makes
    error messages say what the file claimed to be. `data`, when the caller still holds the
    file's whole content in memory, is read instead of the file where a decoder allows it
    (images): the same bytes, without a system call per read.
    """
    claimed = f" (declared as {declared_type[:100]!r})" if declared_type else ""
    if data is None:
        with path.open("rb") as file:
            head = file.read(sniff.HEAD_BYTES)
            mime = sniff.media_type(head, claimed=claimed)
            if mime in images.FORMATS and os.fstat(file.fileno()).st_size <= READ_WHOLE:
                # A photo is read whole, in one call: Pillow's header reads and the structure
                # walk then cost no system call or page fault each (0.15 ms of a JPEG's 0.5).
                data = head + file.read()
    else:
        head = data[: sniff.HEAD_BYTES]
        mime = sniff.media_type(head, claimed=claimed)
    if mime in images.FORMATS:
        return images.probe(path, images.FORMATS[mime], max_image_pixels, data)
    if mime in containers.FAMILIES:
        return audio_video.probe(path, mime, max_image_pixels)
    if mime == documents.PDF:
        return documents.probe_pdf(path, head)
    raise errors.UnsupportedMediaError(f"{mime} is a media type mediad does not decode{claimed}")


def probe_task(payload: dict[str, Any]) -> dict[str, Any]:
    """probe_file as a decoder task: {"path", "declared_type"} in, the MediaInfo's fields out
    (MediaInfo.from_task reads them back)."""
    found = probe_file(Path(payload["path"]), declared_type=payload.get("declared_type"))
    return found.to_task()
