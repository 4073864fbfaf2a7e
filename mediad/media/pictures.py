"""Pictures out of stored files, for the stages that look at them (analysis, derivatives): an
image's first frame with its EXIF orientation applied, decoded no larger than needed, or frames
of a video at fractions of its length. The file was proven whole when it was downloaded; it is
still opened only as the format its stored type names (images.FORMATS), under the pixel bound.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from mediad import errors
from mediad.media import images


def open_image(path: str | Path, mime_type: str, longest: int | None = None) -> Image.Image:
    """The image's first frame, upright (EXIF orientation applied); a JPEG is decoded at the
    smallest DCT scale that still gives `longest` pixels on its long side (shrink-on-load)."""
    pillow_format = images.FORMATS.get(mime_type)
    if pillow_format is None:
        raise errors.UnsupportedMediaError(f"{mime_type} is not a picture mediad decodes")
    try:
        with Image.open(path, formats=[pillow_format]) as img:
            images.check_pixels(img.size, images.MAX_IMAGE_PIXELS, f"{pillow_format} image")
            if longest is not None and pillow_format == "JPEG":
                # draft() keeps at least the box asked for; the box is square, so an orientation
                # that swaps the sides changes nothing.
                img.draft("RGB", (longest, longest))
            img.seek(0)
            upright = ImageOps.exif_transpose(img)
            upright.load()
            return upright
    except errors.MediadError:
        raise
    except Exception as exc:  # Pillow raises anything on hostile bytes
        raise errors.CorruptMediaError(f"the stored {mime_type} does not decode: {exc}") from None


def video_frames(path: str | Path, fractions: Sequence[float]) -> list[Image.Image]:
    """One decoded frame at each fraction (0..1) of the video's length, upright as stored."""
    import av

    frames: list[Image.Image] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = _seconds(container, stream)
            for fraction in fractions:
                target = max(duration * fraction, 0.0)
                if stream.time_base is not None:
                    container.seek(int(target / stream.time_base), stream=stream, backward=True)
                frame = _frame_at(container, stream, target)
                if frame is not None:
                    frames.append(frame)
    except (errors.MediadError, MemoryError):
        raise
    except Exception as exc:  # FFmpeg raises anything on hostile bytes
        raise errors.CorruptMediaError(f"the stored video does not decode: {exc}") from None
    if not frames:
        raise errors.CorruptMediaError("no frame of the stored video decodes")
    return frames


def _seconds(container: object, stream: object) -> float:
    duration = getattr(container, "duration", None)
    if duration:
        return float(duration) / 1_000_000
    length, base = getattr(stream, "duration", None), getattr(stream, "time_base", None)
    return float(length * base) if length and base else 0.0


def _frame_at(container: object, stream: object, target: float) -> Image.Image | None:
    # The first frame at or after the target (a seek lands on the key frame before it).
    last = None
    for frame in container.decode(stream):  # type: ignore[attr-defined]
        last = frame
        if frame.time is None or frame.time >= target:
            break
    return None if last is None else last.to_image()


def jpeg_bytes(picture: Image.Image, longest: int, quality: int = 85) -> bytes:
    """The picture as an sRGB-ish RGB JPEG no larger than `longest` on its long side."""
    picture = picture.convert("RGB") if picture.mode != "RGB" else picture
    # reducing_gap: a box-filter reduction first, then a bicubic resize (Pillow's own fast
    # path); the picture is for a model's eyes, not for print.
    picture.thumbnail((longest, longest), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality)
    return out.getvalue()


def jpegs_task(payload: dict[str, Any]) -> dict[str, Any]:
    """A decoder task: the picture at `path` ({"path", "mime_type", "longest", "fractions"}),
    or its video's frames at `fractions`, as base64 JPEGs no larger than `longest`."""
    path, mime_type, longest = payload["path"], payload["mime_type"], int(payload["longest"])
    if mime_type.startswith("video/"):
        frames = video_frames(path, [float(f) for f in payload["fractions"]])
    else:
        frames = [open_image(path, mime_type, longest=longest)]
    encoded = [base64.b64encode(jpeg_bytes(f, longest)).decode("ascii") for f in frames]
    return {"jpegs": encoded}
