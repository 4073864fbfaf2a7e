"""Knowing what was fetched: sniff the bytes, prove them whole, and read their metadata.

Everything here is synchronous and CPU- or disk-bound: the daemon calls it in a thread.
"""

from __future__ import annotations

import io
import math
import mmap
import re
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple

import av
import filetype
from PIL import ExifTags, Image, TiffImagePlugin

from mediad import errors
from mediad.media import jpeg

MediaKind = Literal["image", "video", "audio", "document"]

# Pillow's own default (~89 Mpx) refuses some panoramas; twice that still bounds a decode of a
# non-JPEG image to well under 1 GB. JPEGs are not decoded (see _probe_image).
MAX_IMAGE_PIXELS = 178_956_970
# Pillow checks this global in Image.open, before any pixel is decoded: a second line of
# defence behind the explicit check below, for any code in the process that opens images.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# Enough bytes for every magic number filetype knows, and for telling text from binary.
_HEAD_BYTES = 8192
# A decoder may swallow a few packets before its first frame (B-frames, codec delay); a real file
# yields one long before this, and a hostile one cannot make us read a whole GB-sized file.
_MAX_PACKETS_BEFORE_FRAME = 500
# Longer strings in EXIF or container tags are padding or junk, not metadata worth a JSONB row.
_MAX_STRING = 512
_MAX_SEQUENCE = 64


@dataclass(frozen=True)
class MediaInfo:
    """What a file is, as proven by a decoder or a JPEG walk; `metadata` is JSON-serialisable."""

    mime_type: str
    extension: str
    kind: MediaKind
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The store's folder for this kind: images, videos, audio or documents."""
        return _FOLDERS[self.kind]


_FOLDERS: dict[MediaKind, str] = {
    "image": "images",
    "video": "videos",
    "audio": "audio",
    "document": "documents",
}


def probe_file(
    path: Path,
    *,
    declared_type: str | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    data: bytes | None = None,
) -> MediaInfo:
    """Identify the file at `path` from its bytes and prove it whole; raise an errors.MediaError.

    `declared_type` (a Content-Type or the row's media_type) is never trusted; it only makes
    error messages say what the file claimed to be. `data`, when the caller still holds the
    file's whole content in memory, is read instead of the file where a decoder allows it
    (images): the same bytes, without a system call per read.
    """
    if data is None:
        with path.open("rb") as file:
            head = file.read(_HEAD_BYTES)
    else:
        head = data[:_HEAD_BYTES]
    claimed = f" (declared as {declared_type[:100]!r})" if declared_type else ""
    if not head:
        raise errors.NotMediaError(f"the body is empty{claimed}")

    guess = filetype.guess(head)
    if guess is not None:
        mime: str = guess.mime
        if mime in _IMAGE_FORMATS:
            return _probe_image(path, _IMAGE_FORMATS[mime], max_image_pixels, data)
        if mime in _AV_FAMILIES:
            return _probe_av(path, mime, max_image_pixels)
        if mime == "application/pdf":
            return _probe_pdf(path, head)
        if mime.partition("/")[0] in {"image", "video", "audio"}:
            raise errors.UnsupportedMediaError(
                f"{mime} is a media type mediad does not decode{claimed}"
            )
        raise errors.NotMediaError(f"the body is {mime} ({guess.extension}), not media{claimed}")

    looks_like = _describe_text(head)
    if looks_like is not None:
        raise errors.NotMediaError(f"the body is {looks_like}, not media{claimed}")
    # filetype knows only a few ISO-BMFF brands (isom, mp41, mp42); isml, dash... are MP4s too.
    if head[4:8] == b"ftyp":
        return _probe_av(path, "video/mp4", max_image_pixels)
    if _is_mpeg_ts(head):
        return _probe_av(path, "video/mp2t", max_image_pixels)
    if _is_mpeg_audio(head):
        return _probe_av(path, "audio/mpeg", max_image_pixels)
    raise errors.NotMediaError(
        f"the body is unrecognised binary data (starts {head[:8].hex()}){claimed}"
    )


# --- text -----------------------------------------------------------------------------------------

_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b")


def _describe_text(head: bytes) -> str | None:
    """What a text-ish body looks like ("an HTML page", "JSON"...), or None if it is binary."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n\f\v")
    lowered = text[:1024].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
        lowered.startswith(b"<") and b"<html" in lowered
    ):
        return "an HTML page"
    if lowered.startswith((b"<?xml", b"<svg", b"<!doctype", b"<rss", b"<feed")):
        return "an SVG image (XML)" if b"<svg" in lowered else "an XML document"
    if text.startswith((b"{", b"[")) and _is_utf8(head):
        return "JSON"
    if _is_utf8(head) and not any(b < 0x20 and b not in _TEXT_CONTROLS for b in head):
        return "plain text" if text else "blank text"
    return None


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The head may cut a multi-byte character in two: only its tail may fail.
        return exc.reason == "unexpected end of data" and exc.start >= len(head) - 3
    return True


def _is_mpeg_ts(head: bytes) -> bool:
    """MPEG-TS has no magic number: its 188-byte packets each start with the sync byte 0x47."""
    return len(head) >= 188 * 4 and all(head[i * 188] == 0x47 for i in range(4))


def _is_mpeg_audio(head: bytes) -> bool:
    """An MP3 frame sync filetype misses (CRC-protected, MPEG-2.5): still MPEG audio."""
    return len(head) >= 4 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0


# --- images ---------------------------------------------------------------------------------------

# Pillow is part of the trusted computing base: it may only open the format the magic says, and
# only these. MPO is what Pillow calls a JPEG carrying several pictures (many phones write them).
_IMAGE_FORMATS: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/apng": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
_IMAGE_TYPES: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "MPO": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
    "BMP": ("image/bmp", "bmp"),
    "TIFF": ("image/tiff", "tif"),
}
_ANIMATABLE = frozenset({"GIF", "WEBP", "PNG"})


def _probe_image(
    path: Path, pillow_format: str, max_pixels: int, data: bytes | None = None
) -> MediaInfo:
    described = f"{pillow_format} image"

    def source() -> Path | io.BytesIO:
        return path if data is None else io.BytesIO(data)

    try:
        # Pillow's JPEG verify() checks nothing; the others' do.
        if pillow_format != "JPEG":
            with Image.open(source(), formats=[pillow_format]) as img:
                _check_pixels(img.size, max_pixels, described)
                img.verify()
        # verify() leaves the image unusable; a fresh open reads the pixels and the EXIF.
        with Image.open(source(), formats=[pillow_format]) as img:
            _check_pixels(img.size, max_pixels, described)
            pillow_format = img.format or pillow_format
            width, height = img.size
            metadata: dict[str, Any] = {"format": pillow_format, "mode": img.mode}
            if pillow_format in _ANIMATABLE:
                frame_count = int(getattr(img, "n_frames", 1))
                img.seek(0)
                metadata["frame_count"] = frame_count
                metadata["animated"] = frame_count > 1
            if pillow_format in {"JPEG", "MPO"}:
                # Pillow has parsed the headers; the walk proves the rest is there, which a
                # decode would not (libjpeg pads a missing tail with grey), for a fraction of
                # its CPU.
                _check_jpeg(path, data)
            else:
                img.load()
            metadata.update(_image_exif(img))
    except jpeg.JpegStructureError as exc:
        raise errors.CorruptMediaError(f"{described} is damaged: it {exc}") from exc
    except errors.MediadError:
        raise
    except Image.DecompressionBombError as exc:
        raise errors.MediaTooLargeError(f"{described} is too large to decode: {exc}") from exc
    except Exception as exc:
        raise errors.CorruptMediaError(
            f"{described} does not decode: {_reason(exc, path)}"
        ) from exc

    mime_type, extension = _IMAGE_TYPES[pillow_format]
    if metadata.get("orientation") in {5, 6, 7, 8}:
        # Orientations 5-8 turn the picture a quarter: viewers show it with the sides swapped.
        width, height = height, width
    return MediaInfo(mime_type, extension, "image", width, height, None, metadata)


def _check_jpeg(path: Path, data: bytes | None) -> None:
    if data is not None:
        jpeg.check_structure(data)
        return
    # A JPEG too big to have been kept in memory is mapped, not read: the walk touches every
    # page once, and the page cache already holds them.
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        jpeg.check_structure(mapped)


def _check_pixels(size: tuple[int, int], max_pixels: int, described: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise errors.MediaTooLargeError(
            f"{described} is {width}x{height} = {width * height} pixels, over the bound of "
            f"{max_pixels}"
        )


def _image_exif(img: Image.Image) -> dict[str, Any]:
    """Camera, time, place and orientation from EXIF; a damaged EXIF block only loses those."""
    try:
        exif = img.getexif()
        if not exif:
            return {}
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception as exc:
        return {"exif_error": _reason(exc)}

    out: dict[str, Any] = {}
    for key, tag in (
        ("camera_make", ExifTags.Base.Make),
        ("camera_model", ExifTags.Base.Model),
        ("software", ExifTags.Base.Software),
    ):
        value = _clean_string(exif.get(tag))
        if value:
            out[key] = value
    lens = _clean_string(exif_ifd.get(ExifTags.Base.LensModel))
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
    text = _clean_string(value)
    if not text:
        return None
    for fmt in _EXIF_DATETIME_FORMATS:
        try:
            moment = datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
        iso = moment.isoformat(timespec="seconds")
        offset_text = _clean_string(offset)
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
    ref_text = _clean_string(ref).upper()
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
        return _clean_string(value) or None
    if isinstance(value, float | Fraction | TiffImagePlugin.IFDRational):
        number = _float(value)
        return None if number is None else round(number, 6)
    if isinstance(value, tuple | list) and 0 < len(value) <= _MAX_SEQUENCE:
        items = [_json_value(item) for item in value]
        return None if any(item is None for item in items) else items
    return None


def _clean_string(value: object) -> str:
    """A string without NULs (jsonb refuses them) or unpaired surrogates, trimmed and bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return ""
    value = value.replace("\x00", "").strip()
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:_MAX_STRING]


# --- audio and video ------------------------------------------------------------------------------


class _AVFamily(NamedTuple):
    """A container family: the FFmpeg demuxer forced on it, and its type with and without video."""

    demuxer: str
    video: tuple[str, str] | None  # None: any picture stream is cover art (MP3, FLAC)
    audio: tuple[str, str]


_MP4 = _AVFamily("mov", ("video/mp4", "mp4"), ("audio/mp4", "m4a"))
# The demuxer is forced from the sniffed type, never guessed by FFmpeg: its probing would also
# accept playlists (HLS, concat) that make it open other files and URLs.
_AV_FAMILIES: dict[str, _AVFamily] = {
    "video/mp4": _MP4,
    "video/x-m4v": _MP4,
    "audio/mp4": _MP4,
    "video/quicktime": _AVFamily("mov", ("video/quicktime", "mov"), ("audio/mp4", "m4a")),
    "video/3gpp": _AVFamily("mov", ("video/3gpp", "3gp"), ("audio/3gpp", "3gp")),
    "video/webm": _AVFamily("matroska", ("video/webm", "webm"), ("audio/webm", "webm")),
    "video/x-matroska": _AVFamily(
        "matroska", ("video/x-matroska", "mkv"), ("audio/x-matroska", "mka")
    ),
    "audio/ogg": _AVFamily("ogg", ("video/ogg", "ogv"), ("audio/ogg", "ogg")),
    "video/x-msvideo": _AVFamily("avi", ("video/x-msvideo", "avi"), ("video/x-msvideo", "avi")),
    "video/x-flv": _AVFamily("flv", ("video/x-flv", "flv"), ("video/x-flv", "flv")),
    "video/x-ms-wmv": _AVFamily("asf", ("video/x-ms-wmv", "wmv"), ("audio/x-ms-wma", "wma")),
    "video/mpeg": _AVFamily("mpeg", ("video/mpeg", "mpg"), ("audio/mpeg", "mpg")),
    "video/mp2t": _AVFamily("mpegts", ("video/mp2t", "ts"), ("audio/mp2t", "ts")),
    "audio/mpeg": _AVFamily("mp3", None, ("audio/mpeg", "mp3")),
    "audio/aac": _AVFamily("aac", None, ("audio/aac", "aac")),
    "audio/x-flac": _AVFamily("flac", None, ("audio/flac", "flac")),
    "audio/x-wav": _AVFamily("wav", None, ("audio/wav", "wav")),
    "audio/x-aiff": _AVFamily("aiff", None, ("audio/aiff", "aiff")),
    "audio/amr": _AVFamily("amr", None, ("audio/amr", "amr")),
}
# Only local files: a container may name other resources (MOV references, for one).
_AV_OPTIONS = {"protocol_whitelist": "file"}
_TAG_KEYS = ("title", "artist", "album")


def _probe_av(path: Path, sniffed: str, max_pixels: int) -> MediaInfo:
    family = _AV_FAMILIES[sniffed]
    described = f"{sniffed} file"
    try:
        with av.open(
            str(path), "r", format=family.demuxer, options=_AV_OPTIONS, metadata_errors="replace"
        ) as container:
            return _read_container(container, family, max_pixels, described)
    except errors.MediadError:
        raise
    except Exception as exc:
        raise errors.CorruptMediaError(
            f"{described} does not decode: {_reason(exc, path)}"
        ) from exc


def _read_container(
    container: av.container.InputContainer, family: _AVFamily, max_pixels: int, described: str
) -> MediaInfo:
    video = next(
        (
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ),
        None,
    )
    audio = next(iter(container.streams.audio), None)
    if family.video is None:
        video = None
    metadata: dict[str, Any] = {"container": container.format.name}
    if container.bit_rate:
        metadata["bit_rate"] = int(container.bit_rate)
    tags = {key.lower(): value for key, value in container.metadata.items()}
    metadata.update(_container_tags(tags))

    width = height = None
    if video is not None:
        _check_pixels(
            (video.codec_context.width, video.codec_context.height), max_pixels, described
        )
        frame = _first_frame(container, video, described)
        if not isinstance(frame, av.VideoFrame):
            raise errors.CorruptMediaError(f"{described}: its video stream yields no picture")
        width, height = frame.width, frame.height
        rotation = int(frame.rotation) % 360
        if rotation:
            metadata["rotation"] = rotation
        if rotation in {90, 270}:
            # Phones store portrait video landscape plus a display matrix; players honour it.
            width, height = height, width
        metadata["video_codec"] = video.codec.canonical_name
        if video.profile:
            metadata["video_profile"] = video.profile
        rate = video.average_rate or video.guessed_rate
        if rate:
            metadata["fps"] = round(float(rate), 3)
        if video.codec_context.pix_fmt:
            metadata["pixel_format"] = video.codec_context.pix_fmt
    elif audio is not None:
        _first_frame(container, audio, described)
    else:
        raise errors.CorruptMediaError(f"{described} has no audio or video stream")

    if audio is not None:
        metadata["audio_codec"] = audio.codec.canonical_name
        metadata["sample_rate"] = audio.codec_context.sample_rate
        metadata["channels"] = audio.codec_context.layout.nb_channels

    if video is not None and family.video is not None:
        mime_type, extension = family.video
        kind: MediaKind = "video"
    else:
        mime_type, extension = family.audio
        kind = "audio"
    return MediaInfo(
        mime_type, extension, kind, width, height, _duration(container, video or audio), metadata
    )


def _first_frame(
    container: av.container.InputContainer,
    stream: av.VideoStream | av.AudioStream,
    described: str,
) -> av.VideoFrame | av.AudioFrame:
    """Decode the stream's first frame: proof the bytes are real media, not just a header."""
    # The demuxer ends with an empty packet that flushes frames the decoder still holds.
    for count, packet in enumerate(container.demux(stream)):
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame | av.AudioFrame):
                return frame
        if count >= _MAX_PACKETS_BEFORE_FRAME:
            break
    raise errors.CorruptMediaError(f"{described}: no {stream.type} frame decodes")


def _duration(
    container: av.container.InputContainer, stream: av.VideoStream | av.AudioStream | None
) -> float | None:
    """Seconds, from the container header or else the stream's; None when neither says."""
    if container.duration and container.duration > 0:
        return round(container.duration / av.time_base, 3)
    if stream is not None and stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base), 3)
    return None


# ISO 6709 as phones write it: "+48.8584+002.2945+035.000/".
_ISO6709 = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?/?")


def _container_tags(tags: dict[str, str]) -> dict[str, Any]:
    """Capture time, place and titles from container tags (MP4 udta/mdta, Matroska, ID3...)."""
    out: dict[str, Any] = {}
    # Apple's creationdate carries the local offset; creation_time is UTC.
    for key in ("com.apple.quicktime.creationdate", "creation_time", "date"):
        moment = _iso_datetime(tags.get(key))
        if moment is not None:
            out["taken_at"] = moment
            break
    for key in ("com.apple.quicktime.location.iso6709", "location"):
        match = _ISO6709.fullmatch(tags.get(key, "").strip())
        if match is None:
            continue
        latitude, longitude = float(match[1]), float(match[2])
        if abs(latitude) > 90 or abs(longitude) > 180:
            continue
        gps: dict[str, float] = {"latitude": latitude, "longitude": longitude}
        if match[3]:
            gps["altitude"] = float(match[3])
        out["gps"] = gps
        break
    for key in _TAG_KEYS:
        value = _clean_string(tags.get(key))
        if value:
            out[key] = value
    return out


def _iso_datetime(value: str | None) -> str | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.isoformat(timespec="seconds")


# --- documents ------------------------------------------------------------------------------------

_PDF_VERSION = re.compile(rb"%PDF-(\d\.\d)")


def _probe_pdf(path: Path, head: bytes) -> MediaInfo:
    """PDF is accepted on its magic; a missing %%EOF near the end means it was cut short."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - 1024))
        tail = file.read()
    if b"%%EOF" not in tail:
        raise errors.CorruptMediaError("PDF document is truncated: no %%EOF marker at its end")
    metadata: dict[str, Any] = {"format": "PDF"}
    version = _PDF_VERSION.match(head)
    if version is not None:
        metadata["pdf_version"] = version[1].decode()
    return MediaInfo("application/pdf", "pdf", "document", metadata=metadata)


_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def _reason(exc: BaseException, path: Path | None = None) -> str:
    """An exception as one line for error messages: its type and message, never a traceback."""
    message = _ERRNO.sub("", " ".join(str(exc).split()))
    if path is not None:
        # Pillow and FFmpeg name the file; it is our own temporary path, noise to an operator.
        message = message.replace(f": '{path}'", "").replace(f" '{path}'", "")
    return f"{type(exc).__name__}: {message[:300] or 'no detail'}"
