"""What the daemon decides about a derive before a decoder worker makes it: the memory its decode
takes (the price the decoder pool admits it at) and which types are their own public copy.

Apart from the work itself (derivatives.py, which only decoder workers import) so that the
derive stage can plan in the daemon without loading Pillow there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Formats with no EXIF to strip: the original is its own public copy.
NOTHING_TO_STRIP = frozenset({"image/gif", "image/bmp"})
# libvips' formats it reads without holding the whole picture (non-interlaced PNG, TIFF).
_STREAMED = frozenset({"image/png", "image/apng", "image/tiff"})
_STREAMED_ROWS_HELD = 2048
_STREAMED_BUFFERS = 20 * 1024 * 1024


def draft_box(width: int, height: int, longest: int) -> tuple[int, int]:
    """The size that still covers an output of `longest` px on its long side (never larger
    than the picture): what draft() is asked for."""
    side = max(width, height)
    if side <= longest:
        return width, height
    return max(1, math.ceil(width * longest / side)), max(1, math.ceil(height * longest / side))


def draft_scale(width: int, height: int, longest: int) -> int:
    """The DCT scale (1, 2, 4 or 8) Pillow's JPEG draft() picks for `draft_box` (its rule)."""
    box = draft_box(width, height, longest)
    scale = min(width // box[0], height // box[1])
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def decode_cost(header: Mapping[str, Any], mime_type: str, longest: int) -> int:
    """The memory a derive of this picture takes, for the decoder pool's admission."""
    width, height, bands = int(header["width"]), int(header["height"]), int(header["bands"])
    out = draft_box(width, height, longest)
    # The largest output, and the next one made from it, in RGBA at most.
    outputs = out[0] * out[1] * 4 * 2
    if mime_type == "image/jpeg":
        scale = draft_scale(width, height, longest)
        decoded = math.ceil(width / scale) * math.ceil(height / scale) * bands
        # A progressive JPEG's coefficients are buffered whole, whatever the scale.
        coefficients = width * height * bands * 2 if header.get("progressive") else 0
        return decoded * 2 + outputs + coefficients
    if mime_type in _STREAMED and not header.get("interlaced"):
        # libvips reads it row by row, but holds many of its rows while it shrinks them (one
        # thread: _vips), up to about 2048, besides buffers of its own: measured 23 MB for a
        # 2000x300 RGBA PNG, 35 MB for a 3000x13000 one and 114 MB for a 13000x3000 one, where
        # the outputs alone were priced at 9, 14 and 14 MB (tests/unit/test_derive_cost.py);
        # those were 8-bit, a 16-bit one holds twice the bytes.
        rows = width * min(height, _STREAMED_ROWS_HELD) * bands * 2
        return outputs * 2 + rows + _STREAMED_BUFFERS
    # Held whole by its decoder: an interlaced PNG, a GIF frame, a BMP; 16-bit at most.
    return width * height * max(bands, 4) * 2 + outputs
