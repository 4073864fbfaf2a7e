"""The `local` analysis backend: offline, on this CPU, with models shipped inside wheels. A
picture (or a video's frames at 25, 50 and 75% of its length) becomes one JSON document: OCR
text, perceptual hashes, dominant colours, and whether it is blank.

Each function takes a path and returns a JSON-able dict, so it can run in a decoder worker
process; the OCR engine is loaded once per process, on first use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mediad.analysis import colors, hashes, ocr
from mediad.media import frames, info

SCHEMA = "mediad.analysis/1"
BACKEND = "local"
# Bumped whenever what this module computes changes: it is part of `prompt_sha256`, which,
# with the model string, keys the analysis cache.
VERSION = 1
# Long side of the picture analysed. OCR reads text down to about 8 px high after the
# downscale. Measured on 1080x720 photo-like pictures with outlined text, one core: 10 px text
# reads exactly from 800 px up (67% of its characters at 640), 12 px 88% at 640, 14 px 99%;
# CPU per picture 0.7 s at 640, 1.05 s at 800, 1.4 s at 960, 1.65 s at 1080. At 1024 a
# 1080x720 picture loses nothing, and a 4032-px phone photo keeps its text of 32 px and more.
MAX_PX = 1024
VIDEO_POSITIONS = (0.25, 0.5, 0.75)
TOP_COLORS = 5
# Text quoted in the description at most (the whole text is in visible_text).
_DESCRIBED_TEXT = 120


def model_name() -> str:
    """The `model` of every document this backend makes."""
    return ocr.model_name()


def settings_sha256(*, max_px: int = MAX_PX) -> str:
    """The local backend's `prompt_sha256`: it has no prompt, but its settings decide its
    answer as a prompt does (a changed downscale bound is a new analysis)."""
    settings = {
        "version": VERSION,
        "max_px": max_px,
        "min_confidence": ocr.MIN_CONFIDENCE,
        "top_colors": TOP_COLORS,
        "video_positions": VIDEO_POSITIONS,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def analyze_file(
    path: str | Path,
    mime_type: str | None = None,
    *,
    max_px: int = MAX_PX,
    max_pixels: int = info.MAX_IMAGE_PIXELS,
) -> dict[str, Any]:
    """The document of an image or a video, by its type (sniffed from its bytes when not given)."""
    mime_type = mime_type or frames.sniffed_type(path)
    if mime_type.startswith("video/") or mime_type in _VIDEO_AS_AUDIO:
        return analyze_video_file(path, mime_type, max_px=max_px, max_pixels=max_pixels)
    return analyze_image_file(path, mime_type, max_px=max_px, max_pixels=max_pixels)


# Sniffed types that name a container which may hold video as well as audio.
_VIDEO_AS_AUDIO = frozenset({"audio/ogg"})


def analyze_image_file(
    path: str | Path,
    mime_type: str | None = None,
    *,
    max_px: int = MAX_PX,
    max_pixels: int = info.MAX_IMAGE_PIXELS,
) -> dict[str, Any]:
    """The document of one image: its first frame, upright, no larger than `max_px`.

    MediaTooLargeError over `max_pixels`, CorruptMediaError when it does not decode,
    UnsupportedMediaError / NotMediaError for what is not an image mediad keeps.
    """
    mime_type = mime_type or frames.sniffed_type(path)
    picture = frames.open_picture(path, mime_type, longest=max_px, max_pixels=max_pixels)
    found = analyze_picture(picture)
    return _document(
        description=describe(found),
        fields=found,
        max_px=max_px,
    )


def analyze_video_file(
    path: str | Path,
    mime_type: str | None = None,
    *,
    max_px: int = MAX_PX,
    max_pixels: int = info.MAX_IMAGE_PIXELS,
    positions: tuple[float, ...] = VIDEO_POSITIONS,
) -> dict[str, Any]:
    """The document of a video: each frame at `positions` (fractions of its length) analysed
    as a picture, under `frames`, and their merged summary at the top: OCR lines of every frame
    (each text once), colours over all of them, blank when every frame is, the hashes of the
    middle frame."""
    mime_type = mime_type or frames.sniffed_type(path)
    duration, found = frames.video_frames(
        path, mime_type, positions, longest=max_px, max_pixels=max_pixels
    )
    per_frame = []
    for frame in found:
        analysed = analyze_picture(frame.picture)
        per_frame.append({"position": frame.position, "time": round(frame.time, 3), **analysed})
    merged = _merge(per_frame, [frame.picture for frame in found])
    merged["duration"] = round(duration, 3)
    merged["frames"] = per_frame
    return _document(description=describe(merged, video=True), fields=merged, max_px=max_px)


def analyze_picture(picture: frames.Picture) -> dict[str, Any]:
    """OCR, hashes, colours and the blank flag of one upright picture."""
    image = picture.image
    text = ocr.read(image, scale=picture.scale)
    blank = colors.blank(image, picture.size)
    if text["lines"]:
        # A picture with legible words is not a placeholder, however plain its background.
        blank = {"is_blank": False, "reason": None, "color": None}
    width, height = picture.size
    return {
        "width": width,
        "height": height,
        "ocr": text,
        "hashes": hashes.hashes(image, text["text"]),
        "colors": colors.dominant(image, TOP_COLORS),
        "blank": blank,
    }


def describe(found: dict[str, Any], *, video: bool = False) -> str:
    """A short sentence from what was found: 'Text: "SALE"; mostly white (#ffffff).'"""
    parts = []
    if video:
        parts.append(f"Video of {found.get('duration', 0):g} s, {len(found['frames'])} frames")
    blank = found["blank"]
    if blank["is_blank"]:
        reason = {
            "tiny": "a tiny picture",
            "single_color": "a single color",
            "near_uniform": "nearly uniform",
        }[blank["reason"]]
        color = f", {blank['color']}" if blank.get("color") else ""
        parts.append(f"Blank: {reason}{color}")
    text = " / ".join(found["ocr"]["text"].splitlines())
    if text:
        if len(text) > _DESCRIBED_TEXT:
            text = text[: _DESCRIBED_TEXT - 1].rstrip() + "…"
        parts.append(f'Text: "{text}"')
    if found["colors"]:
        main, *rest = found["colors"]
        phrase = f"mostly {main['name']} ({main['hex']})"
        named = {main["name"]}
        others: list[str] = []
        for color in rest:
            if color["name"] not in named and len(others) < 2:
                named.add(color["name"])
                others.append(f"{color['name']} ({color['hex']})")
        if others:
            phrase += ", with " + ", ".join(others)
        parts.append(phrase)
    return "; ".join(parts) + "."


def tags(found: dict[str, Any], *, video: bool = False) -> list[str]:
    """Keywords: video, text, blank, and the names of colours covering a fifth or more."""
    out = ["video"] if video else []
    if found["ocr"]["lines"]:
        out.append("text")
    if found["blank"]["is_blank"]:
        out.append("blank")
    for color in found["colors"]:
        if color["share"] >= 0.2 and color["name"] not in out:
            out.append(color["name"])
    return out


def _merge(per_frame: list[dict[str, Any]], pictures: list[frames.Picture]) -> dict[str, Any]:
    seen: set[str] = set()
    lines = []
    for index, frame in enumerate(per_frame):
        for line in frame["ocr"]["lines"]:
            if line["text"] not in seen:
                seen.add(line["text"])
                lines.append({**line, "frame": index})
    text = "\n".join(line["text"] for line in lines)
    middle = per_frame[len(per_frame) // 2]
    blank = (
        per_frame[0]["blank"]
        if all(frame["blank"]["is_blank"] for frame in per_frame)
        else {"is_blank": False, "reason": None, "color": None}
    )
    return {
        "width": middle["width"],
        "height": middle["height"],
        "ocr": {"text": text, "lines": lines, "language": ocr.guess_language(text)},
        "hashes": middle["hashes"],
        "colors": colors.dominant(_side_by_side([p.image for p in pictures]), TOP_COLORS),
        "blank": blank,
    }


def _side_by_side(images_: list[Any]) -> Any:
    """The frames pasted in one row, each shrunk alike, so colours are counted over all."""
    from PIL import Image

    thumbs = []
    for image in images_:
        thumb = image.copy()
        thumb.thumbnail((128, 128), Image.Resampling.BOX)
        thumbs.append(thumb)
    row = Image.new("RGB", (sum(t.width for t in thumbs), max(t.height for t in thumbs)))
    x = 0
    for thumb in thumbs:
        row.paste(thumb, (x, 0))
        x += thumb.width
    return row


def _document(*, description: str, fields: dict[str, Any], max_px: int) -> dict[str, Any]:
    video = "frames" in fields
    language = fields["ocr"]["language"]
    return {
        "schema": SCHEMA,
        "backend": BACKEND,
        "model": model_name(),
        "prompt_sha256": settings_sha256(max_px=max_px),
        "description": description,
        "tags": tags(fields, video=video),
        "visible_text": fields["ocr"]["text"],
        "objects": [],
        "language": language["code"] if language else None,
        **fields,
    }


def analyze_task(payload: dict[str, Any]) -> dict[str, Any]:
    """analyze_file as a decoder task: {"path", "mime_type", "max_px"} in, the document out."""
    return analyze_file(payload["path"], payload["mime_type"], max_px=int(payload["max_px"]))
