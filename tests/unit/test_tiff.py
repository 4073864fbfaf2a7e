"""TIFF directories (EXIF's) read by mediad as Pillow reads them, and within bounds on hostile
bytes: Pillow itself is the oracle, on camera-like EXIF and on thousands of damaged copies."""

from __future__ import annotations

import math
import random
import struct
import time
import tracemalloc
import warnings
from typing import Any

import pytest
from PIL import ExifTags, Image, TiffImagePlugin

from mediad.media import exif, tiff

Rational = TiffImagePlugin.IFDRational


def _rich_exif(seed: int) -> bytes:
    """An EXIF block with every kind of value a camera or an editor writes: strings (one with a
    NUL inside), shorts, longs, rationals with zero denominators, signed rationals, undefined
    bytes, a tag of no known name, a table longer than a JSONB row keeps, and the GPS IFD."""
    rng = random.Random(seed)
    block = Image.Exif()
    block[ExifTags.Base.Make] = "Make\x00hidden" if seed % 3 == 0 else "Nikon"
    block[ExifTags.Base.Model] = "Z " * rng.randint(1, 9)
    block[ExifTags.Base.Software] = "editor"
    block[ExifTags.Base.XResolution] = Rational(rng.randint(0, 300), rng.choice([0, 1, 3]))
    block[ExifTags.Base.ResolutionUnit] = 2
    block[ExifTags.Base.Orientation] = rng.randint(0, 9)
    block[ExifTags.Base.DateTime] = "2020:01:02 03:04:05"
    block[0x9999] = tuple(rng.randint(0, 70_000) for _ in range(rng.randint(1, 70)))
    block[0x9998] = "a tag of no known name"
    sub = block.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.ExposureTime] = Rational(1, rng.randint(1, 4000))
    sub[ExifTags.Base.FNumber] = Rational(28, 10)
    sub[ExifTags.Base.ISOSpeedRatings] = rng.randint(50, 6400)
    sub[ExifTags.Base.ExposureBiasValue] = Rational(-rng.randint(0, 6), 3)
    sub[ExifTags.Base.LensModel] = "RF24-105mm F4 L IS USM"
    sub[ExifTags.Base.DateTimeOriginal] = "2021:05:06 07:08:09"
    sub[ExifTags.Base.OffsetTimeOriginal] = "+02:00"
    sub[ExifTags.Base.UserComment] = b"ASCII\x00\x00\x00a comment"
    sub[ExifTags.Base.ExifVersion] = b"0232"
    sub[0x9214] = (1, 2, 3, 4)  # SubjectArea
    gps = block.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (Rational(33, 1), Rational(51, 1), Rational(2400, 100))
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (Rational(151, 1), Rational(12, 1), Rational(0, 0))
    gps[ExifTags.GPS.GPSAltitudeRef] = b"\x01"
    gps[ExifTags.GPS.GPSAltitude] = Rational(125, 10)
    return block.tobytes()


def _comparable(value: Any) -> Any:
    """A value with Pillow's rationals as floats and NaN as a token, so == compares them."""
    if isinstance(value, tuple):
        return tuple(_comparable(item) for item in value)
    if isinstance(value, Rational | float):
        number = float(value)
        return "nan" if math.isnan(number) else number
    return value


def _by_pillow(block: bytes) -> tuple[dict[int, Any], ...] | None:
    """IFD0, the EXIF IFD and the GPS IFD as Pillow reads `block`; None when it refuses it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read = Image.Exif()
        try:
            read.load(block)
        except (SyntaxError, struct.error):
            return None
        directories = (
            dict(read),
            read.get_ifd(ExifTags.IFD.Exif),
            read.get_ifd(ExifTags.IFD.GPSInfo),
        )
    return tuple({tag: _comparable(v) for tag, v in d.items()} for d in directories)


def _by_mediad(block: bytes) -> tuple[dict[int, Any], ...] | None:
    try:
        structure = tiff.Tiff(exif._EXIF_PREFIX.sub(b"", block))
    except tiff.TiffError:
        return None
    first = structure.directory(structure.first)
    directories = (
        first,
        structure.directory(first.get(ExifTags.IFD.Exif), ExifTags.IFD.Exif),
        structure.directory(first.get(ExifTags.IFD.GPSInfo), ExifTags.IFD.GPSInfo),
    )
    return tuple({tag: _comparable(v) for tag, v in d.items()} for d in directories)


@pytest.mark.parametrize("seed", range(12))
def test_camera_exif_reads_as_pillow_reads_it(seed: int) -> None:
    block = _rich_exif(seed)

    assert _by_mediad(block) == _by_pillow(block) is not None


def test_damaged_exif_reads_as_pillow_reads_it() -> None:
    """Bytes overwritten and blocks cut short anywhere: the same tags survive, with the same
    values, and where Pillow refuses the header mediad does too."""
    rng = random.Random(11)
    originals = [_rich_exif(seed) for seed in range(4)]
    refused = 0
    for round_ in range(3000):
        data = bytearray(originals[round_ % len(originals)])
        for _ in range(rng.randrange(1, 9)):
            data[rng.randrange(6, len(data))] = rng.randrange(256)
        if rng.random() < 0.25:
            del data[rng.randrange(6, len(data)) :]
        block = bytes(data)
        expected = _by_pillow(block)
        refused += expected is None
        assert _by_mediad(block) == expected, f"round {round_}"
    assert 0 < refused < 3000


def test_a_directory_claiming_more_entries_than_the_block_holds_keeps_those_there() -> None:
    block = bytearray(_rich_exif(1)[6:])  # without "Exif\0\0"
    first = int.from_bytes(block[4:8], "little" if block[:2] == b"II" else "big")
    block[first : first + 2] = b"\xff\xff"
    structure = tiff.Tiff(bytes(block))

    started = time.process_time()
    tags = structure.directory(structure.first)

    assert ExifTags.Base.Make in tags
    assert time.process_time() - started < 1.0  # 65,535 entries claimed, a few read


def _one_tag_block(kind: int, count: int, payload: bytes) -> bytes:
    """A little-endian TIFF block whose IFD0 holds one tag (0x9999) of `kind` and `count`, its
    value right after the directory."""
    value_at = 8 + 2 + 12 + 4
    entry = struct.pack("<HHLL", 0x9999, kind, count, value_at)
    return b"II*\x00" + struct.pack("<L", 8) + struct.pack("<H", 1) + entry + b"\0" * 4 + payload


def test_a_table_of_a_million_numbers_is_left_out_undecoded() -> None:
    """Decoded, a million longs would take ~30 times their bytes; a JSONB row keeps no table
    that long, so exif.py asks for none longer than it keeps."""
    block = _one_tag_block(4, 1_000_000, bytes(4_000_000))
    structure = tiff.Tiff(block)

    tracemalloc.start()
    try:
        tags = structure.directory(structure.first, longest=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert tags == {}
    assert peak < 4_500_000  # the value's one copy, nothing per number
    assert len(structure.directory(structure.first)[0x9999]) == 1_000_000


def test_a_value_past_the_end_ends_the_directory_there() -> None:
    block = _one_tag_block(2, 100, b"too short")

    assert tiff.Tiff(block).directory(8) == {}


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"", "no TIFF header"),
        (b"JFIF\x00\x01\x02\x03", "no TIFF header"),
        (b"II*\x00\x08", "ends inside its TIFF header"),
        (b"II+\x00\x08\x00\x00\x00", "BigTIFF"),
    ],
)
def test_a_block_that_is_no_tiff_is_named(block: bytes, reason: str) -> None:
    with pytest.raises(tiff.TiffError, match=reason):
        tiff.Tiff(block)


def test_an_exif_block_without_a_tiff_header_is_reported_not_raised() -> None:
    assert exif.metadata(b"Exif\x00\x00JUNKJUNK") == {
        "exif_error": "the EXIF block has no TIFF header (it starts b'JUNK')"
    }


@pytest.mark.parametrize(
    ("written", "offset", "taken_at"),
    [
        ("2021:05:06 07:08:09", None, "2021-05-06T07:08:09"),
        ("2021:05:06 07:08:09", "+02:00", "2021-05-06T07:08:09+02:00"),
        ("2021-05-06 07:08:09", None, "2021-05-06T07:08:09"),
        ("2021:05:06T07:08:09", None, "2021-05-06T07:08:09"),
        ("2021:5:6 7:08:09", None, "2021-05-06T07:08:09"),
        ("2021:05:06 07:08:09.250", None, "2021-05-06T07:08:09"),
        ("0000:00:00 00:00:00", None, None),
        ("2021:02:30 07:08:09", None, None),
        ("    :  :     :  :  ", None, None),
    ],
)
def test_capture_time_in_each_spelling_cameras_write(
    written: str, offset: str | None, taken_at: str | None
) -> None:
    block = Image.Exif()
    sub = block.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = written
    if offset is not None:
        sub[ExifTags.Base.OffsetTimeOriginal] = offset

    assert exif.metadata(block.tobytes()).get("taken_at") == taken_at
