"""Perceptual hashes, the near-duplicate rule, and colour names, on pictures made in memory."""

from __future__ import annotations

import pytest
from PIL import Image

from mediad.analysis import colors, hashes
from tests import media


def _hashes(picture: Image.Image, text: str = "") -> dict[str, object]:
    return hashes.hashes(picture, text)


def test_hamming_counts_the_bits_that_differ() -> None:
    """hamming counts differing bits of two hex hashes and refuses hashes of unequal length."""
    assert hashes.hamming("0000000000000000", "0000000000000000") == 0
    assert hashes.hamming("f000000000000001", "0000000000000000") == 5
    assert hashes.hamming("ffffffffffffffff", "0000000000000000") == 64
    with pytest.raises(ValueError, match="different lengths"):
        hashes.hamming("ff", "ffff")


def test_hashes_have_their_sizes_and_a_gradient_hashes_as_expected() -> None:
    """dhash and phash are 64 bits, phash256 256; a left-to-right ramp's dhash is all ones."""
    ramp = Image.linear_gradient("L").transpose(Image.Transpose.TRANSPOSE)  # dark to light
    found = _hashes(ramp.convert("RGB"))

    assert len(str(found["dhash"])) == 16 and len(str(found["phash"])) == 16
    assert len(str(found["phash256"])) == 64
    assert found["dhash"] == "ffffffffffffffff"
    assert found["text"] is None


def test_near_duplicate_never_stands_on_a_64_bit_phash_alone() -> None:
    """Hashes with a pHash but no dHash, phash256 or quality are refused as not comparable."""
    with pytest.raises(ValueError, match="not comparable"):
        hashes.near_duplicate({"phash": "00ff00ff00ff00ff"}, {"phash": "00ff00ff00ff00ff"})


def test_equal_phash_with_a_far_dhash_is_no_near_duplicate() -> None:
    """Two pictures whose pHash agrees but whose dHash is far apart are not near-duplicates."""
    first = _hashes(media.photo_like(320, 240, seed=5))
    second = {**first, "dhash": f"{int(str(first['dhash']), 16) ^ 0xFFFF_FFFF:016x}"}

    assert hashes.near_duplicate(first, first)
    assert not hashes.near_duplicate(first, second)


def test_other_text_on_the_same_picture_is_no_near_duplicate() -> None:
    """One background with two captions (a meme template) differs by the OCR text alone."""
    picture = media.photo_like(320, 240, seed=6)
    assert hashes.near_duplicate(_hashes(picture, "SALE"), _hashes(picture, "sale!"))
    assert not hashes.near_duplicate(_hashes(picture, "SALE"), _hashes(picture, "OPEN"))
    assert not hashes.near_duplicate(_hashes(picture, "SALE"), _hashes(picture, ""))


def test_text_fingerprint_ignores_case_spacing_and_punctuation() -> None:
    """The text fingerprint keeps letters and digits only, case-folded; no text gives None."""
    assert hashes.text_fingerprint("ARCHIVE 2026 MEDIA") == hashes.text_fingerprint(
        "archive2026 media."
    )
    assert hashes.text_fingerprint("ARCHIVE 2026") != hashes.text_fingerprint("ARCHIVE 2025")
    assert hashes.text_fingerprint(" \n-- ") is None


def test_a_flat_picture_has_no_quality_and_matches_nothing() -> None:
    """White and black fills hash within a bit of each other, yet with quality 0 they are never
    near-duplicates; a flat picture's hashes are fixed, not noise."""
    white = _hashes(Image.new("RGB", (200, 100), "white"))
    black = _hashes(Image.new("RGB", (200, 100), "black"))

    assert white["quality"] == black["quality"] == 0
    assert white["dhash"] == black["dhash"] == "0000000000000000"
    assert hashes.hamming(str(white["phash"]), str(black["phash"])) <= 1
    assert white == _hashes(Image.new("RGB", (640, 480), "white"))
    assert not hashes.near_duplicate(white, black)


def test_colour_names() -> None:
    """Plain names for colours: greys by lightness, saturated ones by hue, dark orange brown."""
    named = {
        (255, 255, 255): "white",
        (221, 221, 221): "gray",
        (10, 10, 10): "black",
        (200, 30, 30): "red",
        (20, 40, 200): "blue",
        (30, 160, 40): "green",
        (250, 150, 20): "orange",
        (120, 70, 20): "brown",
        (240, 220, 30): "yellow",
    }
    assert {rgb: colors.name(rgb) for rgb in named} == named
