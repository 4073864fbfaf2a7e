"""What a probe proved a file to be: `MediaInfo`, built by each prover, returned by probe_file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mediad import errors

MediaKind = Literal["image", "video", "audio", "document"]

# The EXIF orientations that turn a picture a quarter: viewers show it with its sides swapped.
QUARTER_TURNS = frozenset({5, 6, 7, 8})

# Pillow's own default (~89 Mpx) refuses some panoramas; twice that still bounds a decode of a
# non-JPEG image to well under 1 GB. JPEGs are not decoded to be probed (jpeg.py).
MAX_IMAGE_PIXELS = 178_956_970


@dataclass(frozen=True)
class MediaInfo:
    """What a file is, as proven by a decoder or a JPEG walk; `metadata` is JSON-serialisable."""

    mime_type: str
    extension: str
    kind: MediaKind
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_task(self) -> dict[str, Any]:
        """Its fields, as a decoder task returns them. Not dataclasses.asdict, whose deep copy of
        `metadata` (built for this answer, encoded right after) cost 80 µs a photo."""
        return dict(vars(self))

    @classmethod
    def from_task(cls, result: dict[str, Any]) -> MediaInfo:
        """The MediaInfo a decoder task returned as its fields (plain data: the worker's objects
        never cross)."""
        return cls(**result)

    @property
    def folder(self) -> str:
        """The store's folder for this kind: images, videos, audio or documents."""
        return _FOLDERS[self.kind]


_FOLDERS: dict[MediaKind, str] = {
    "image": "images",
    "video": "videos",
    "audio": "audio",
    "document": "documents",
}


def picture(
    mime_type: str, extension: str, width: int, height: int, metadata: dict[str, Any]
) -> MediaInfo:
    """A still or animated picture's MediaInfo, its size as viewers show it: sides swapped for
    a quarter turn (metadata["orientation"])."""
    if metadata.get("orientation") in QUARTER_TURNS:
        width, height = height, width
    return MediaInfo(mime_type, extension, "image", width, height, None, metadata)


def check_pixels(size: tuple[int, int], max_pixels: int, described: str) -> None:
    """MediaTooLargeError unless a picture of `size` is within `max_pixels` (video frames too)."""
    width, height = size
    if width * height > max_pixels:
        raise errors.MediaTooLargeError(
            f"{described} is {width}x{height} = {width * height} pixels, over the bound of "
            f"{max_pixels}"
        )
