"""Dominant colours of a picture, and whether it is blank: a placeholder, a single colour, a
tracking pixel.
"""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

# Colours are counted on a thumbnail this size: a few milliseconds, and shares within 1%.
_THUMB = 128
# Median cut first splits the thumbnail into this many boxes; near ones are merged after.
_BOXES = 16
# Palette entries closer than this (Euclidean, in 0-255 RGB) are one colour.
_MERGE_DISTANCE = 40.0
# Colours covering less of the picture are not reported (anti-aliased edges, mostly).
_MIN_SHARE = 0.02
# A picture whose every channel's standard deviation is under this is near-uniform: JPEG noise
# on a flat fill is 1-2, a word of black text on a white 1080x720 picture already about 15.
NEAR_UNIFORM_STDDEV = 4.0
# Smaller than this on its short side, or in pixels, a picture holds nothing worth a look.
TINY_SIDE = 8
TINY_PIXELS = 32 * 32


def dominant(picture: Image.Image, top: int = 5) -> list[dict[str, Any]]:
    """The `top` colours covering the most of an RGB picture, largest first: hex, name, share.

    A flat colour (graphics, screenshots, placeholders) comes out exact: each colour is its
    cluster's most frequent pixel when that holds half the cluster, else the cluster's mean.
    """
    import numpy as np
    from PIL import Image

    thumb = picture.convert("RGB")
    thumb.thumbnail((_THUMB, _THUMB), Image.Resampling.BOX)
    pixels = np.asarray(thumb, dtype=np.int32).reshape(-1, 3)
    indices = np.asarray(
        thumb.quantize(colors=_BOXES, method=Image.Quantize.MEDIANCUT), dtype=np.int32
    ).reshape(-1)

    clusters: list[tuple[int, np.ndarray[Any, Any]]] = []  # (count, representative colour)
    for index in np.unique(indices):
        members = pixels[indices == index]
        packed = (members[:, 0] << 16) | (members[:, 1] << 8) | members[:, 2]
        values, counts = np.unique(packed, return_counts=True)
        best = int(np.argmax(counts))
        if counts[best] * 2 >= len(members):
            value = int(values[best])
            colour = np.array([value >> 16, (value >> 8) & 255, value & 255], dtype=np.float64)
        else:
            colour = members.mean(axis=0)
        clusters.append((len(members), colour))

    # Greedy merge, largest first: a smaller cluster near a larger one joins it, keeping the
    # larger one's colour.
    clusters.sort(key=lambda c: -c[0])
    merged: list[list[Any]] = []
    for count, colour in clusters:
        for entry in merged:
            if float(np.linalg.norm(entry[1] - colour)) < _MERGE_DISTANCE:
                entry[0] += count
                break
        else:
            merged.append([count, colour])

    total = len(pixels)
    out = []
    for count, colour in sorted(merged, key=lambda e: -e[0])[:top]:
        share = count / total
        if share < _MIN_SHARE:
            break
        rgb = tuple(round(float(c)) for c in colour)
        out.append({"hex": to_hex(rgb), "name": name(rgb), "share": round(share, 3)})
    return out


def blank(picture: Image.Image, original_size: tuple[int, int]) -> dict[str, Any]:
    """Whether a picture is blank, and why: "tiny" (at its original size), "single_color", or
    "near_uniform"; `color` is its one colour when it has one."""
    from PIL import ImageStat

    width, height = original_size
    rgb = picture.convert("RGB")
    if min(width, height) < TINY_SIDE or width * height < TINY_PIXELS:
        return {"is_blank": True, "reason": "tiny", "color": _only_color(rgb)}
    extrema = rgb.getextrema()
    if all(low == high for low, high in extrema):  # type: ignore[misc]
        return {"is_blank": True, "reason": "single_color", "color": _only_color(rgb)}
    if max(ImageStat.Stat(rgb).stddev) < NEAR_UNIFORM_STDDEV:
        return {"is_blank": True, "reason": "near_uniform", "color": None}
    return {"is_blank": False, "reason": None, "color": None}


def _only_color(rgb: Image.Image) -> str | None:
    extrema = rgb.getextrema()
    if all(low == high for low, high in extrema):  # type: ignore[misc]
        return to_hex(tuple(int(low) for low, _ in extrema))  # type: ignore[misc]
    return None


def to_hex(rgb: tuple[int, ...]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb[:3])


# Hue bands (degrees, upper bound) and their names, for saturated colours.
_HUES = (
    (15, "red"),
    (45, "orange"),
    (70, "yellow"),
    (165, "green"),
    (195, "cyan"),
    (255, "blue"),
    (290, "purple"),
    (335, "pink"),
    (360, "red"),
)


def name(rgb: tuple[int, ...]) -> str:
    """A plain name for a colour (black, white, gray, red, orange, brown, ...), for tags."""
    r, g, b = (c / 255 for c in rgb[:3])
    hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    value = max(r, g, b)
    chroma = value - min(r, g, b)
    if value < 0.15:
        return "black"
    if chroma < 0.12 or saturation < 0.15:
        if lightness > 0.92:
            return "white"
        return "gray" if lightness > 0.2 else "black"
    degrees = hue * 360
    label = next(label for bound, label in _HUES if degrees < bound or bound == 360)
    if label == "orange" and value < 0.6:
        return "brown"
    return label
