"""What the bytes say they are, before any decoder sees them: magic numbers (filetype), text
and markup bodies (error pages, JSON), and the containers filetype misses (MP4 brands,
MPEG-TS, MPEG audio).
"""

from __future__ import annotations

import filetype

from mediad import errors

# Enough bytes for every magic number filetype knows, and for telling text from binary.
HEAD_BYTES = 8192
# Types whose magic makes a body a candidate for a prover; any other magic is not media.
_MEDIA_FAMILIES = frozenset({"image", "video", "audio"})
_DOCUMENTS = frozenset({"application/pdf"})


def media_type(head: bytes, *, claimed: str = "") -> str:
    """The MIME type of a body that may be media, from its first HEAD_BYTES; else NotMediaError.

    The type is not yet proof: a prover must open the file, and a type no prover takes is
    unsupported. `claimed` ends each error message (what the body was declared as).
    """
    if not head:
        raise errors.NotMediaError(f"the body is empty{claimed}")

    guess = filetype.guess(head)
    if guess is not None:
        mime: str = guess.mime
        if mime in _DOCUMENTS or mime.partition("/")[0] in _MEDIA_FAMILIES:
            return mime
        raise errors.NotMediaError(f"the body is {mime} ({guess.extension}), not media{claimed}")

    looks_like = _describe_text(head)
    if looks_like is not None:
        raise errors.NotMediaError(f"the body is {looks_like}, not media{claimed}")
    # filetype knows only a few ISO-BMFF brands (isom, mp41, mp42); isml, dash... are MP4s too.
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if _is_mpeg_ts(head):
        return "video/mp2t"
    if _is_mpeg_audio(head):
        return "audio/mpeg"
    raise errors.NotMediaError(
        f"the body is unrecognised binary data (starts {head[:8].hex()}){claimed}"
    )


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
