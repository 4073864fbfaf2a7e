"""EXIF as a row's metadata: camera, lens, software, capture time, GPS position and
orientation by name, then every other tag whose value survives as JSON.

Read by tiff.py from the EXIF block's bytes, as Pillow would read them, without Pillow: a JPEG's
metadata is read in the daemon itself (jpeg.py), where no decoder runs.
"""

from __future__ import annotations

import contextlib
import math
import re
from datetime import datetime
from typing import Any

from PIL import ExifTags

from mediad.media import clean, tiff

# Longer sequences in EXIF are tables (curves, vendor blobs), not metadata worth a JSONB row.
_MAX_SEQUENCE = 64
# What Pillow strips from an EXIF block before its TIFF header (Image.Exif.load).
_EXIF_PREFIX = re.compile(rb"^(Exif\x00\x00){1,2}")
# Where EXIF has no orientation, an XMP packet's is taken (as Pillow's getexif does).
_XMP_ORIENTATION = re.compile(r'tiff:Orientation(="|>)([0-9])')
_XMP_ORIENTATION_BYTES = re.compile(_XMP_ORIENTATION.pattern.encode())


def metadata(block: tiff.Buffer | None, xmp: str | bytes | None = None) -> dict[str, Any]:
    """Camera, time, place and orientation from an EXIF block (a JPEG's APP1 or a PNG's eXIf,
    with or without its "Exif" prefix) and an XMP packet; a damaged block only loses those."""
    if block is not None:
        block = _EXIF_PREFIX.sub(b"", bytes(block))
    return _from_tiff(block or None, None, xmp)


def tiff_metadata(data: tiff.Buffer, offset: int, xmp: str | bytes | None = None) -> dict[str, Any]:
    """The same for a TIFF file, whose own directory at `offset` holds its EXIF tags."""
    return _from_tiff(data, offset, xmp)


def _from_tiff(
    data: tiff.Buffer | None, offset: int | None, xmp: str | bytes | None
) -> dict[str, Any]:
    try:
        if data is None:
            exif: dict[int, Any] = {}
            exif_ifd: dict[int, Any] = {}
            gps_ifd: dict[int, Any] = {}
        else:
            structure = tiff.Tiff(data)
            exif = structure.directory(
                structure.first if offset is None else offset, longest=_MAX_SEQUENCE
            )
            exif_ifd = structure.directory(
                exif.get(ExifTags.IFD.Exif), ExifTags.IFD.Exif, longest=_MAX_SEQUENCE
            )
            gps_ifd = structure.directory(
                exif.get(ExifTags.IFD.GPSInfo), ExifTags.IFD.GPSInfo, longest=_MAX_SEQUENCE
            )
    except tiff.TiffError as exc:
        return {"exif_error": f"the EXIF block {exc}"}
    if ExifTags.Base.Orientation not in exif and xmp:
        found = (
            _XMP_ORIENTATION.search(xmp)
            if isinstance(xmp, str)
            else _XMP_ORIENTATION_BYTES.search(xmp)
        )
        if found:
            exif[ExifTags.Base.Orientation] = int(found[2])
    if not exif:
        return {}

    out: dict[str, Any] = {}
    for key, tag in (
        ("camera_make", ExifTags.Base.Make),
        ("camera_model", ExifTags.Base.Model),
        ("software", ExifTags.Base.Software),
    ):
        value = clean.string(exif.get(tag))
        if value:
            out[key] = value
    lens = clean.string(exif_ifd.get(ExifTags.Base.LensModel))
    if lens:
        out["lens_model"] = lens
    orientation = exif.get(ExifTags.Base.Orientation)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        out["orientation"] = orientation

    taken_at = _exif_datetime(
        exif_ifd.get(ExifTags.Base.DateTimeOriginal), exif_ifd.get(ExifTags.Base.OffsetTimeOriginal)
    ) or _exif_datetime(
        exif_ifd.get(ExifTags.Base.DateTimeDigitized),
        exif_ifd.get(ExifTags.Base.OffsetTimeDigitized),
    )
    if taken_at is None:
        taken_at = _exif_datetime(
            exif.get(ExifTags.Base.DateTime), exif_ifd.get(ExifTags.Base.OffsetTime)
        )
    if taken_at is not None:
        out["taken_at"] = taken_at

    gps = _exif_gps(gps_ifd)
    if gps is not None:
        out["gps"] = gps

    tags = _exif_tags(exif, exif_ifd)
    if tags:
        out["exif"] = tags
    return out


_EXIF_DATETIME_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%dT%H:%M:%S")
_UTC_OFFSET = re.compile(r"[+-]\d\d:\d\d")


# EXIF's own spelling, read without strptime (about 15 us a call, for every photo): any other
# spelling, and a date this one cannot hold, goes through _EXIF_DATETIME_FORMATS.
_EXIF_DATETIME = re.compile(r"(\d{4}):(\d\d):(\d\d) (\d\d):(\d\d):(\d\d)")


def _exif_datetime(value: object, offset: object) -> str | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" (plus OffsetTime*, when given) as ISO 8601."""
    text = clean.string(value)
    if not text:
        return None
    moment = _parsed_datetime(text[:19])
    if moment is None:
        # Cameras without a clock write "0000:00:00 00:00:00" or blanks: no date, not an error.
        return None
    iso = moment.isoformat(timespec="seconds")
    offset_text = clean.string(offset)
    if offset_text and _UTC_OFFSET.fullmatch(offset_text):
        iso += offset_text
    return iso


def _parsed_datetime(text: str) -> datetime | None:
    found = _EXIF_DATETIME.fullmatch(text)
    if found:
        with contextlib.suppress(ValueError):
            year, month, day, hour, minute, second = map(int, found.groups())
            return datetime(year, month, day, hour, minute, second)
    for fmt in _EXIF_DATETIME_FORMATS:
        with contextlib.suppress(ValueError):
            return datetime.strptime(text, fmt)
    return None


def _exif_gps(gps_ifd: dict[int, Any]) -> dict[str, float] | None:
    """GPS IFD rationals (degrees, minutes, seconds + N/S/E/W refs) as signed decimal degrees."""
    latitude = _degrees(
        gps_ifd.get(ExifTags.GPS.GPSLatitude), gps_ifd.get(ExifTags.GPS.GPSLatitudeRef)
    )
    longitude = _degrees(
        gps_ifd.get(ExifTags.GPS.GPSLongitude), gps_ifd.get(ExifTags.GPS.GPSLongitudeRef)
    )
    if latitude is None or longitude is None or abs(latitude) > 90 or abs(longitude) > 180:
        return None
    out = {"latitude": round(latitude, 7), "longitude": round(longitude, 7)}
    altitude = _float(gps_ifd.get(ExifTags.GPS.GPSAltitude))
    if altitude is not None:
        ref = gps_ifd.get(ExifTags.GPS.GPSAltitudeRef)
        below_sea_level = ref in {1, b"\x01", "\x01"}
        out["altitude"] = round(-altitude if below_sea_level else altitude, 2)
    return out


def _degrees(value: object, ref: object) -> float | None:
    if not isinstance(value, tuple) or not 1 <= len(value) <= 3:
        return None
    parts = [_float(part) for part in value]
    numbers = [part for part in parts if part is not None]
    if len(numbers) != len(parts):
        return None
    whole, minutes, seconds = [*numbers, 0.0, 0.0][:3]
    degrees = whole + minutes / 60 + seconds / 3600
    ref_text = clean.string(ref).upper()
    return -degrees if ref_text in {"S", "W"} else degrees


def _float(value: object) -> float | None:
    """A finite float from an int or float (a rational is one: tiff.py); None for NaN (a zero
    denominator) and anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except (ZeroDivisionError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# Offsets to other IFDs, and blobs with vendor formats: meaningless once flattened to JSON.
_SKIPPED_EXIF_TAGS = frozenset(
    {
        ExifTags.Base.ExifOffset,
        ExifTags.Base.GPSInfo,
        ExifTags.Base.ExifInteroperabilityOffset,
        ExifTags.Base.MakerNote,
        ExifTags.Base.UserComment,
        ExifTags.Base.PrintImageMatching,
    }
)


def _exif_tags(exif: dict[int, Any], exif_ifd: dict[int, Any]) -> dict[str, Any]:
    """IFD0 and Exif IFD tags by name, keeping only values that survive as JSON."""
    out: dict[str, Any] = {}
    for tags in (exif, exif_ifd):
        for tag, value in tags.items():
            name = ExifTags.TAGS.get(tag)
            if name is None or tag in _SKIPPED_EXIF_TAGS:
                continue
            converted = _json_value(value)
            if converted is not None:
                out[name] = converted
    return out


def _json_value(value: object) -> Any:
    """`value` as JSON that PostgreSQL's jsonb accepts (no NUL, no NaN), or None to skip it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # jsonb holds any integer, but JavaScript readers of the row do not.
        return value if abs(value) < 2**53 else None
    if isinstance(value, str):
        return clean.string(value) or None
    if isinstance(value, float):
        number = _float(value)
        return None if number is None else round(number, 6)
    if isinstance(value, tuple | list) and 0 < len(value) <= _MAX_SEQUENCE:
        items = [_json_value(item) for item in value]
        return None if any(item is None for item in items) else items
    return None
