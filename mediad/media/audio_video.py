"""Audio and video through PyAV (FFmpeg): the demuxer forced from the sniffed type, a first
frame decoded as proof, then size, rotation, duration, codecs and the container's tags.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import av

from mediad import errors
from mediad.media import clean, info
from mediad.media.containers import FAMILIES, OPTIONS, Family
from mediad.media.info import MediaInfo, MediaKind

# A decoder may swallow a few packets before its first frame (B-frames, codec delay); a real file
# yields one long before this, and a hostile one cannot make us read a whole GB-sized file.
_MAX_PACKETS_BEFORE_FRAME = 500
_TAG_KEYS = ("title", "artist", "album")


def probe(path: Path, sniffed: str, max_pixels: int) -> MediaInfo:
    """Prove a sniffed audio or video file whole by decoding a first frame, and read it."""
    family = FAMILIES[sniffed]
    described = f"{sniffed} file"
    try:
        with av.open(
            str(path), "r", format=family.demuxer, options=OPTIONS, metadata_errors="replace"
        ) as container:
            return _read_container(container, family, max_pixels, described)
    except errors.MediadError:
        raise
    except Exception as exc:
        raise errors.CorruptMediaError(
            f"{described} does not decode: {clean.reason(exc, path)}"
        ) from exc


def _read_container(
    container: av.container.InputContainer, family: Family, max_pixels: int, described: str
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
        info.check_pixels(
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
        value = clean.string(tags.get(key))
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
