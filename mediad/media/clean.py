"""Decoder output made fit for a row: strings that jsonb accepts, and exceptions as one line."""

from __future__ import annotations

import re
from pathlib import Path

# Longer strings in EXIF or container tags are padding or junk, not metadata worth a JSONB row.
_MAX_STRING = 512
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def string(value: object) -> str:
    """A string without NULs (jsonb refuses them) or unpaired surrogates, trimmed and bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return ""
    value = value.replace("\x00", "").strip()
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:_MAX_STRING]


def reason(exc: BaseException, path: Path | None = None) -> str:
    """An exception as one line for error messages: its type and message, never a traceback."""
    message = _ERRNO.sub("", " ".join(str(exc).split()))
    if path is not None:
        # Pillow and FFmpeg name the file; it is our own temporary path, noise to an operator.
        message = message.replace(f": '{path}'", "").replace(f" '{path}'", "")
    return f"{type(exc).__name__}: {message[:300] or 'no detail'}"
