"""Perceptual hashes for near-duplicate pictures, and the rule that decides one.

`dhash` (64-bit gradient hash) and `phash` (64-bit DCT hash) are the classic pair; both collide
on text on a plain background, where a 32x32 thumbnail is a few grey smudges ("SALE" and "OPEN"
in black on white hash the same in both). `phash256` reads a 16x16 corner of the DCT of a 64x64
thumbnail, enough to tell such pictures apart; `quality` (PDQ's measure: the luminance gradient
sum of that thumbnail / 90, capped at 100) says how much detail any hash can stand on; `text`
fingerprints the words OCR read, so a meme template with another caption is another picture.
Hashing needs numpy; comparing does not.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

# Below this quality a picture is near-uniform: every hash of it is a coin toss or all zeros,
# and two plain placeholders of different colours would "match". On this scale a single-colour
# picture is 0, two flat halves about 20, a few words on white 20-100, a photo 100.
QUALITY_FLOOR = 10
# Bits that may differ per 64 bits hashed. A JPEG re-encode at quality 60 and a 90% resize
# moves a photo's dhash/phash by 0-1 and its phash256 by 0-2; different photos sit near half
# the bits (32 of 64), different captions on white at 28-110 of phash256's 256.
MAX_DISTANCE = 6
# The keys near_duplicate needs: never a 64-bit pHash alone.
REQUIRED = ("dhash", "phash", "phash256", "quality")


def hashes(picture: Image.Image, text: str = "") -> dict[str, Any]:
    """Every hash of an upright picture, and the fingerprint of the text OCR read in it."""
    gray = picture.convert("L")
    thumb64 = _luminance(gray, 64)
    return {
        "dhash": dhash(gray),
        "phash": phash(gray),
        "phash256": _dct_hash(thumb64, 16),
        "quality": quality(thumb64),
        "text": text_fingerprint(text),
    }


def dhash(picture: Image.Image) -> str:
    """64-bit difference hash: is each pixel of a 9x8 thumbnail brighter than its left one."""
    import numpy as np
    from PIL import Image

    small = picture.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16)
    return _hex(pixels[:, 1:] > pixels[:, :-1])


def phash(picture: Image.Image) -> str:
    """64-bit DCT hash (imagehash's phash): the 8x8 lowest frequencies of a 32x32 thumbnail,
    each above or below their median."""
    return _dct_hash(_luminance(picture.convert("L"), 32), 8)


def quality(thumb64: npt.NDArray[np.float64]) -> int:
    """PDQ's quality (0-100) of a 64x64 luminance thumbnail: its gradient sum / 90."""
    import numpy as np

    gradients = np.abs(np.diff(thumb64, axis=0)).sum() + np.abs(np.diff(thumb64, axis=1)).sum()
    return min(100, int(gradients / 90))


def text_fingerprint(text: str) -> str | None:
    """The OCR text's letters and digits, case-folded, hashed (16 hex); None for no text.

    Spaces, punctuation and case are what OCR gets wrong between two copies of one picture;
    the characters themselves it reads alike from a re-encoded copy.
    """
    kept = "".join(
        ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum()
    ).strip()
    if not kept:
        return None
    return hashlib.sha256(kept.encode("utf-8")).hexdigest()[:16]


def hamming(a_hex: str, b_hex: str) -> int:
    """Bits that differ between two hashes of the same length, given as hex."""
    if len(a_hex) != len(b_hex):
        raise ValueError(f"hashes of different lengths: {len(a_hex)} and {len(b_hex)} hex digits")
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def near_duplicate(
    h1: Mapping[str, Any], h2: Mapping[str, Any], *, max_distance: int = MAX_DISTANCE
) -> bool:
    """Whether two pictures' `hashes` say they are one picture (re-encoded, resized).

    All of dhash, phash and phash256 must be within `max_distance` bits per 64 (phash256 gets
    four times as many), both pictures must have detail (quality at the floor or above), and
    they must carry the same text (or none): never a 64-bit hash alone.
    """
    for h in (h1, h2):
        missing = [key for key in REQUIRED if key not in h]
        if missing:
            raise ValueError(f"hashes lack {', '.join(missing)}: not comparable")
    if min(int(h1["quality"]), int(h2["quality"])) < QUALITY_FLOOR:
        return False
    if h1.get("text") != h2.get("text"):
        return False
    for key in ("dhash", "phash", "phash256"):
        bits = len(h1[key]) * 4
        if hamming(h1[key], h2[key]) > max_distance * bits // 64:
            return False
    return True


def _luminance(gray: Image.Image, size: int) -> npt.NDArray[np.float64]:
    import numpy as np
    from PIL import Image

    return np.asarray(gray.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)


def _dct_hash(thumb: npt.NDArray[np.float64], keep: int) -> str:
    """The `keep` x `keep` lowest DCT-II frequencies of a square thumbnail against their median."""
    import numpy as np

    dct = _dct_matrix(thumb.shape[0])
    low = (dct @ thumb @ dct.T)[:keep, :keep]
    # A flat picture leaves only rounding noise in the AC terms: rounded away, its hash is
    # fixed (all zeros but the DC term) instead of random.
    low = np.round(low, 6)
    return _hex(low > np.median(low))


def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    import numpy as np

    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix: npt.NDArray[np.float64] = np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    return matrix


def _hex(bits: npt.NDArray[np.bool_]) -> str:
    flat = bits.flatten()
    value = 0
    for bit in flat:
        value = (value << 1) | int(bit)
    return f"{value:0{len(flat) // 4}x}"
