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

from PIL import Image, TiffImagePlugin

from mediad import errors
from mediad.media import clean, exif, gif, info, jpeg, png
from mediad.media.info import MediaInfo

# Pillow checks this global in Image.open, before any pixel is decoded: a second line of
# defence behind the explicit check below, for any code in the process that opens images.
Image.MAX_IMAGE_PIXELS = info.MAX_IMAGE_PIXELS

# The allowlist: the Pillow format each sniffed type may be opened as, and no other. (An MPO,
# what Pillow calls a JPEG carrying several pictures, is a JPEG here: jpeg.py.)
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
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
    "BMP": ("image/bmp", "bmp"),
    "TIFF": ("image/tiff", "tif"),
}
_ANIMATABLE = frozenset({"GIF", "WEBP", "PNG"})
# The EXIF orientations that turn or flip a picture (ImageOps.exif_transpose's).
_TURNING = frozenset(range(2, 9))
# The formats whose structure is walked; the others' verify() and decode do the proving. A
# JPEG is walked alone (jpeg.probe): Pillow never opens it to probe it.
_WALKED = frozenset({"GIF", "PNG"})
_STRUCTURE_ERRORS = (gif.GifStructureError, png.PngStructureError)


def probe(path: Path, pillow_format: str, max_pixels: int, data: bytes | None = None) -> MediaInfo:
    """Prove an image whole (decoded, walked, or both) and read its size, frames and EXIF."""
    if pillow_format == "JPEG":
        return _walk(lambda walked: jpeg.probe(walked, max_pixels), path, data)
    described = f"{pillow_format} image"

    def source() -> Path | io.BytesIO:
        return path if data is None else io.BytesIO(data)

    try:
        if pillow_format not in _WALKED:
            with Image.open(source(), formats=[pillow_format]) as img:
                info.check_pixels(img.size, max_pixels, described)
                img.verify()
        # verify() leaves the image unusable; a fresh open reads the pixels and the EXIF.
        with Image.open(source(), formats=[pillow_format]) as img:
            info.check_pixels(img.size, max_pixels, described)
            requested, pillow_format = pillow_format, img.format or pillow_format
            width, height = img.size
            metadata: dict[str, Any] = {"format": pillow_format, "mode": img.mode}
            frame_count: int | None = None
            if requested == "GIF":
                frames = _walk(gif.check_structure, path, data)
                # Pillow widens the picture to fit a frame drawn past the screen's edge.
                info.check_pixels((frames.width, frames.height), max_pixels, described)
                frame_count = frames.count
            elif requested == "PNG":
                frame_count = _walk(png.check_structure, path, data)
            elif pillow_format in _ANIMATABLE:
                frame_count = int(getattr(img, "n_frames", 1))
                img.seek(0)
            if frame_count is not None:
                metadata["frame_count"] = frame_count
                metadata["animated"] = frame_count > 1
            img.load()  # of an animation, its first frame only
            metadata.update(_exif(img, path, data))
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
    return info.picture(mime_type, extension, width, height, metadata)


def _exif(img: Image.Image, path: Path, data: bytes | None) -> dict[str, Any]:
    """The EXIF of a picture Pillow opened, read by exif.py from where Pillow found it: an
    EXIF chunk, a PNG's hex text of one, or (a TIFF) the file's own directory."""
    xmp = img.info.get("XML:com.adobe.xmp") or img.info.get("xmp")
    block = img.info.get("exif")
    if block is None and "Raw profile type exif" in img.info:
        try:
            block = bytes.fromhex("".join(img.info["Raw profile type exif"].split("\n")[3:]))
        except ValueError as exc:
            return {"exif_error": f"the PNG's EXIF text is not hex: {exc}"}
    if block is None and isinstance(img, TiffImagePlugin.TiffImageFile):
        offset = img.tag_v2.offset
        found = _walk(lambda walked: exif.tiff_metadata(walked, offset, xmp), path, data)
        if found.get("orientation") in _TURNING:
            # Pillow turns a TIFF by its orientation as it opens it (its size already the
            # turned one) and drops the tag: the picture described here is the turned one.
            del found["orientation"]
            found["exif"].pop("Orientation", None)
        return found
    return exif.metadata(block, xmp)


_Walked = TypeVar("_Walked")


def _walk(check: Callable[[bytes | mmap.mmap], _Walked], path: Path, data: bytes | None) -> _Walked:
    """What the structure walk `check` finds in the image, held in memory or at `path`."""
    if data is not None:
        return check(data)
    # An image too big to have been kept in memory is mapped, not read: the walk touches every
    # page once, and the page cache already holds them.
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return check(mapped)


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
