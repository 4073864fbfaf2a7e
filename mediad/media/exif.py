"""EXIF as a row's metadata: camera, lens, software, capture time, GPS position and
orientation by name, then every other tag whose value survives as JSON.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image, TiffImagePlugin

from mediad.media import clean

# Longer sequences in EXIF are tables (curves, vendor blobs), not metadata worth a JSONB row.
_MAX_SEQUENCE = 64


def metadata(img: Image.Image) -> dict[str, Any]:
    """Camera, time, place and orientation from EXIF; a damaged EXIF block only loses those."""
    try:
        exif = img.getexif()
        if not exif:
            return {}
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception as exc:
        return {"exif_error": clean.reason(exc)}

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


def _exif_datetime(value: object, offset: object) -> str | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" (plus OffsetTime*, when given) as ISO 8601."""
    text = clean.string(value)
    if not text:
        return None
    for fmt in _EXIF_DATETIME_FORMATS:
        try:
            moment = datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
        iso = moment.isoformat(timespec="seconds")
        offset_text = clean.string(offset)
        if offset_text and _UTC_OFFSET.fullmatch(offset_text):
            iso += offset_text
        return iso
    # Cameras without a clock write "0000:00:00 00:00:00" or blanks: no date, not an error.
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
    """A finite float from an int, float or rational; None for 0/0, NaN and anything else."""
    if isinstance(value, bool) or not isinstance(
        value, int | float | Fraction | TiffImagePlugin.IFDRational
    ):
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


def _exif_tags(exif: Image.Exif, exif_ifd: dict[int, Any]) -> dict[str, Any]:
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
    if isinstance(value, float | Fraction | TiffImagePlugin.IFDRational):
        number = _float(value)
        return None if number is None else round(number, 6)
    if isinstance(value, tuple | list) and 0 < len(value) <= _MAX_SEQUENCE:
        items = [_json_value(item) for item in value]
        return None if any(item is None for item in items) else items
    return None
