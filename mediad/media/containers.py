"""The audio and video containers mediad opens: for each sniffed type, the FFmpeg demuxer
forced on it and the types it is stored as, and how FFmpeg may open them.

A table with no decoder behind it, so the daemon's own process can tell a video from a picture
without importing PyAV (about 40 ms of every start); audio_video.py and frames.py open them.
"""

from __future__ import annotations

from typing import NamedTuple


class Family(NamedTuple):
    """A container family: the FFmpeg demuxer forced on it, and its type with and without video."""

    demuxer: str
    video: tuple[str, str] | None  # None: any picture stream is cover art (MP3, FLAC)
    audio: tuple[str, str]


_MP4 = Family("mov", ("video/mp4", "mp4"), ("audio/mp4", "m4a"))
# The demuxer is forced from the sniffed type, never guessed by FFmpeg: its probing would also
# accept playlists (HLS, concat) that make it open other files and URLs.
FAMILIES: dict[str, Family] = {
    "video/mp4": _MP4,
    "video/x-m4v": _MP4,
    "audio/mp4": _MP4,
    "video/quicktime": Family("mov", ("video/quicktime", "mov"), ("audio/mp4", "m4a")),
    "video/3gpp": Family("mov", ("video/3gpp", "3gp"), ("audio/3gpp", "3gp")),
    "video/webm": Family("matroska", ("video/webm", "webm"), ("audio/webm", "webm")),
    "video/x-matroska": Family(
        "matroska", ("video/x-matroska", "mkv"), ("audio/x-matroska", "mka")
    ),
    "audio/ogg": Family("ogg", ("video/ogg", "ogv"), ("audio/ogg", "ogg")),
    "video/x-msvideo": Family("avi", ("video/x-msvideo", "avi"), ("video/x-msvideo", "avi")),
    "video/x-flv": Family("flv", ("video/x-flv", "flv"), ("video/x-flv", "flv")),
    "video/x-ms-wmv": Family("asf", ("video/x-ms-wmv", "wmv"), ("audio/x-ms-wma", "wma")),
    "video/mpeg": Family("mpeg", ("video/mpeg", "mpg"), ("audio/mpeg", "mpg")),
    "video/mp2t": Family("mpegts", ("video/mp2t", "ts"), ("audio/mp2t", "ts")),
    "audio/mpeg": Family("mp3", None, ("audio/mpeg", "mp3")),
    "audio/aac": Family("aac", None, ("audio/aac", "aac")),
    "audio/x-flac": Family("flac", None, ("audio/flac", "flac")),
    "audio/x-wav": Family("wav", None, ("audio/wav", "wav")),
    "audio/x-aiff": Family("aiff", None, ("audio/aiff", "aiff")),
    "audio/amr": Family("amr", None, ("audio/amr", "amr")),
}
# Only local files: a container may name other resources (MOV references, for one).
OPTIONS = {"protocol_whitelist": "file"}
