"""Archive object keys: the `archive.key_template` formatter and `s3://bucket/key` URLs.

A template is literal text and `{field}` or `{field[a:b]}` placeholders, nothing else: no
attribute access, conversions or format specs. Every value is checked before it enters a key,
so a scraper's media_id cannot add a path segment or escape the template's prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mediad import errors

# year, month and day are the archive time in UTC (seed 001's `media/{year}/{month}/...`).
FIELDS = frozenset(
    {
        "sha256",
        "md5",
        "ext",
        "media_id",
        "post_id",
        "platform",
        "media_type",
        "year",
        "month",
        "day",
    }
)
# Without one of these in full, two different files could get the same key.
UNIQUE_FIELDS = frozenset({"sha256", "media_id"})
MAX_KEY_BYTES = 1024

_PLACEHOLDER = re.compile(r"\{([a-z0-9_]*)(?:\[(-?\d*):(-?\d*)\])?\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~/=+@:-]*")
_VALUE = re.compile(r"[A-Za-z0-9._~=+@:-]+")
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)", re.DOTALL)


class UnsafeKeyError(errors.MediadError):
    """A value cannot go into a key (it would add a segment, or is empty)."""


@dataclass(frozen=True)
class Field:
    name: str
    start: int | None = None
    stop: int | None = None

    @property
    def whole(self) -> bool:
        return self.start is None and self.stop is None


@dataclass(frozen=True)
class KeyTemplate:
    """A parsed template; `render(values)` gives the key."""

    text: str
    parts: tuple[str | Field, ...]

    @property
    def prefix(self) -> str:
        """The literal text every key of this template starts with (may be empty)."""
        first = self.parts[0] if self.parts else ""
        return first if isinstance(first, str) else ""

    def render(self, values: Mapping[str, str | None]) -> str:
        """The key for `values`; UnsafeKeyError when a value is missing or unsafe."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name)
            if value is None or value == "":
                raise UnsafeKeyError(f"the key template needs {part.name}, and this row has none")
            if not _VALUE.fullmatch(value) or set(value) == {"."}:
                raise UnsafeKeyError(f"{part.name} {value!r} cannot be part of an object key")
            piece = value[part.start : part.stop]
            if not piece:
                raise UnsafeKeyError(f"{part.name} {value!r} is too short for the key template")
            out.append(piece)
        key = "".join(out)
        check_key(key)
        return key


def parse(text: str) -> KeyTemplate:
    """Parse and check a template; ValueError says what is wrong with it."""
    parts: list[str | Field] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(_literal(text[position : match.start()]))
        name, start, stop = match.group(1), match.group(2), match.group(3)
        if name not in FIELDS:
            raise ValueError(
                f"unknown field {{{name}}}; the fields are {', '.join(sorted(FIELDS))}"
            )
        if start is None:
            parts.append(Field(name))
        else:
            parts.append(Field(name, int(start) if start else None, int(stop) if stop else None))
        position = match.end()
    parts.append(_literal(text[position:]))
    template = KeyTemplate(text, tuple(p for p in parts if p != ""))
    if not any(isinstance(p, Field) and p.whole and p.name in UNIQUE_FIELDS for p in parts):
        raise ValueError("must contain {sha256} or {media_id} in full, so that keys are unique")
    skeleton = "".join(p if isinstance(p, str) else "x" for p in template.parts)
    if skeleton.startswith("/") or skeleton.endswith("/") or "//" in skeleton:
        raise ValueError("must not start or end with / or contain //")
    if any(segment in (".", "..") for segment in skeleton.split("/")):
        raise ValueError("must not contain . or .. segments")
    return template


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"{text!r}: a placeholder must be {{field}} or {{field[a:b]}}")
    if not _LITERAL.fullmatch(text):
        raise ValueError(f"{text!r}: literal text may use only letters, digits and ._~/=+@:-")
    return text


def check_key(key: str) -> None:
    """Refuse keys that tools would treat as paths going somewhere else."""
    if not key or key.startswith("/") or "//" in key:
        raise UnsafeKeyError(f"{key!r} is not a valid object key")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise UnsafeKeyError(f"{key!r} has an empty, . or .. segment")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise UnsafeKeyError(f"the key is longer than {MAX_KEY_BYTES} bytes")


def content_addressed(key: str, sha256: str) -> bool:
    """Whether `key` names these bytes by their full SHA-256: an object there holds them, or is
    damaged (never another file's)."""
    return sha256 in key


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; ValueError for anything else."""
    match = _S3_URL.fullmatch(url)
    if match is None:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    return match.group(1), match.group(2)
