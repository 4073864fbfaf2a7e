"""Images through Pillow, which is part of the trusted computing base: it may open only the
format the magic bytes name, from an allowlist, under a pixel bound, and whatever it raises
becomes a CorruptMediaError. A JPEG's structure is walked (jpeg.py) instead of decoded, which
proves more for a fraction of the CPU; a GIF's (gif.py) and a PNG's (png.py) are walked and
their first frame decoded, so an animation of thousands of frames costs about one; the other
formats are decoded whole.
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from mediad import errors
from mediad.media import clean, exif, gif, jpeg, png
from mediad.media.info import MediaInfo

# Pillow's own default (~89 Mpx) refuses some panoramas; twice that still bounds a decode of a
# non-JPEG image to well under 1 GB. JPEGs are not decoded (see probe).
MAX_IMAGE_PIXELS = 178_956_970
# Pillow checks this global in Image.open, before any pixel is decoded: a second line of
# defence behind the explicit check below, for any code in the process that opens images.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# The allowlist: the Pillow format each sniffed type may be opened as, and no other. MPO (in
# _TYPES) is what Pillow calls a JPEG carrying several pictures (many phones write them).
FORMATS: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/apng": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
_TYPES: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "MPO": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
    "BMP": ("image/bmp", "bmp"),
    "TIFF": ("image/tiff", "tif"),
}
_ANIMATABLE = frozenset({"GIF", "WEBP", "PNG"})
# The formats whose structure is walked; the others' verify() and decode do the proving.
_WALKED = frozenset({"JPEG", "GIF", "PNG"})
_STRUCTURE_ERRORS = (jpeg.JpegStructureError, gif.GifStructureError, png.PngStructureError)


def probe(path: Path, pillow_format: str, max_pixels: int, data: bytes | None = None) -> MediaInfo:
    """Prove an image whole (decoded, walked, or both) and read its size, frames and EXIF."""
    described = f"{pillow_format} image"

    def source() -> Path | io.BytesIO:
        return path if data is None else io.BytesIO(data)

    try:
        if pillow_format not in _WALKED:
            with Image.open(source(), formats=[pillow_format]) as img:
                check_pixels(img.size, max_pixels, described)
                img.verify()
        # verify() leaves the image unusable; a fresh open reads the pixels and the EXIF.
        with Image.open(source(), formats=[pillow_format]) as img:
            check_pixels(img.size, max_pixels, described)
            requested, pillow_format = pillow_format, img.format or pillow_format
            width, height = img.size
            metadata: dict[str, Any] = {"format": pillow_format, "mode": img.mode}
            frame_count: int | None = None
            if requested == "GIF":
                frames = _walk(gif.check_structure, path, data)
                # Pillow widens the picture to fit a frame drawn past the screen's edge.
                check_pixels((frames.width, frames.height), max_pixels, described)
                frame_count = frames.count
            elif requested == "PNG":
                frame_count = _walk(png.check_structure, path, data)
            elif pillow_format in _ANIMATABLE:
                frame_count = int(getattr(img, "n_frames", 1))
                img.seek(0)
            if frame_count is not None:
                metadata["frame_count"] = frame_count
                metadata["animated"] = frame_count > 1
            if requested == "JPEG":
                # Pillow has parsed the headers; the walk proves the rest is there, which a
                # decode would not (libjpeg pads a missing tail with grey), for a fraction of
                # its CPU.
                _walk(jpeg.check_structure, path, data)
            else:
                img.load()  # of an animation, its first frame only
            metadata.update(exif.metadata(img))
    except _STRUCTURE_ERRORS as exc:
        raise errors.CorruptMediaError(f"{described} is damaged: it {exc}") from exc
    except errors.MediadError:
        raise
    except Image.DecompressionBombError as exc:
        raise errors.MediaTooLargeError(f"{described} is too large to decode: {exc}") from exc
    except Exception as exc:
        raise errors.CorruptMediaError(
            f"{described} does not decode: {clean.reason(exc, path)}"
        ) from exc

    mime_type, extension = _TYPES[pillow_format]
    if metadata.get("orientation") in {5, 6, 7, 8}:
        # Orientations 5-8 turn the picture a quarter: viewers show it with the sides swapped.
        width, height = height, width
    return MediaInfo(mime_type, extension, "image", width, height, None, metadata)


_Walked = TypeVar("_Walked")


def _walk(check: Callable[[bytes | mmap.mmap], _Walked], path: Path, data: bytes | None) -> _Walked:
    """What the structure walk `check` finds in the image, held in memory or at `path`."""
    if data is not None:
        return check(data)
    # An image too big to have been kept in memory is mapped, not read: the walk touches every
    # page once, and the page cache already holds them.
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return check(mapped)


def check_pixels(size: tuple[int, int], max_pixels: int, described: str) -> None:
    """MediaTooLargeError unless a picture of `size` is within `max_pixels` (video frames too)."""
    width, height = size
    if width * height > max_pixels:
        raise errors.MediaTooLargeError(
            f"{described} is {width}x{height} = {width * height} pixels, over the bound of "
            f"{max_pixels}"
        )


# --- decoder tasks (decoders.TASKS) ---------------------------------------------------------------

# The allowlist as Pillow names it (an MPO opens as JPEG); no other Pillow decoder sees the bytes.
_ALLOWED_FORMATS = tuple(sorted(set(FORMATS.values())))


def header_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Format, mode, size and bands of the picture at `path`; no pixel decoded."""
    with open_allowed(payload["path"]) as img:
        return _describe(img)


def decode_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Decode every pixel of the picture at `path` (its first frame) and describe it."""
    with open_allowed(payload["path"]) as img:
        described = _describe(img)
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise errors.CorruptMediaError(
                f"{described['format']} image does not decode: {exc}"
            ) from None
        return described


def open_allowed(path: str, formats: tuple[str, ...] = _ALLOWED_FORMATS) -> Image.Image:
    """The picture at `path`, opened (headers only) as one of `formats`, the allowlist's by
    default; what Pillow refuses as a MediadError."""
    try:
        return Image.open(path, formats=formats)
    except Image.DecompressionBombError as exc:
        raise errors.MediaTooLargeError(str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise errors.CorruptMediaError(f"not a picture Pillow may open: {exc}") from None


def _describe(img: Image.Image) -> dict[str, Any]:
    width, height = img.size
    return {
        "format": img.format,
        "mode": img.mode,
        "width": width,
        "height": height,
        # Not n_frames: counting a GIF's frames decodes every one of them.
        "bands": len(img.getbands()),
    }
