"""The pictures the openai backend sends: a stored picture, or its video's frames, as base64
JPEGs no larger than asked, decoded (frames.py) in a decoder worker. Nothing of the original's
bytes or metadata leaves with them."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from mediad.media import frames


def jpeg_bytes(picture: Image.Image, quality: int = 85) -> bytes:
    """The picture (RGB) as a JPEG with no metadata."""
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality)
    return out.getvalue()


def jpegs_task(payload: dict[str, Any]) -> dict[str, Any]:
    """A decoder task: the picture at `path` ({"path", "mime_type", "longest", "fractions"}),
    or its video's frames at `fractions`, as base64 JPEGs no larger than `longest`."""
    path, mime_type, longest = payload["path"], payload["mime_type"], int(payload["longest"])
    if mime_type.startswith("video/"):
        positions = tuple(float(f) for f in payload["fractions"])
        _, found = frames.video_frames(path, mime_type, positions, longest=longest)
        pictures = [frame.picture.image for frame in found]
    else:
        pictures = [frames.open_picture(path, mime_type, longest=longest).image]
    encoded = [base64.b64encode(jpeg_bytes(p)).decode("ascii") for p in pictures]
    return {"jpegs": encoded}
