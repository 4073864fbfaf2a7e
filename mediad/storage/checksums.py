"""Checksums as S3 spells them, and the judgement of an object against the digests of a row.

S3 states a SHA-256 checksum in base64; a multipart object's is a composite (the SHA-256 of its
parts' SHA-256s, then `-N`); its ETag is the MD5 of the bytes only for a single PUT without
SSE-KMS. `judge` weighs what a HEAD says against what we expect, strongest evidence first.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mediad import errors

if TYPE_CHECKING:
    from mediad.storage.s3 import ObjectInfo


# Digests as mediad records them (rows, object metadata, store paths): lowercase hex.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


class DigestMismatchError(errors.MediadError):
    """The bytes read from a local file do not hash to the digest its row records."""


def is_sha256(text: str) -> bool:
    """Whether `text` is a SHA-256 digest as mediad spells one: 64 lowercase hex digits."""
    return _SHA256_HEX.fullmatch(text) is not None


def is_md5(text: str) -> bool:
    """Whether `text` is an MD5 digest as mediad spells one: 32 lowercase hex digits."""
    return _MD5_HEX.fullmatch(text) is not None


def b64(hex_digest: str) -> str:
    """A hex digest as S3 spells checksums: base64 of the raw bytes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def composite(part_sha256s: list[bytes]) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' raw SHA-256s, then `-N`."""
    joined = hashlib.sha256(b"".join(part_sha256s)).digest()
    return f"{base64.b64encode(joined).decode()}-{len(part_sha256s)}"


@dataclass(frozen=True)
class Expected:
    """The bytes an object must hold: their size and hex digests, and for a multipart object the
    composite checksum its parts predict."""

    size: int
    sha256: str
    md5: str | None
    composite_sha256: str | None = None  # base64, `...-N`


@dataclass(frozen=True)
class Verdict:
    """Whether an object holds the bytes we expect, and on what evidence."""

    ok: bool
    how: str  # checksum_sha256, composite_sha256, etag_md5, metadata_sha256; or the problem


def judge(info: ObjectInfo, expected: Expected, *, etag_is_md5: bool = True) -> Verdict:
    """Compare a HEAD with our digests: size, then the strongest checksum the object has.

    A mismatch of any checksum present is damage; an object with none we can check is
    `unverifiable` (use --deep). Under SSE-KMS an ETag is no MD5: `etag_is_md5` False.
    """
    size, sha256, md5 = expected.size, expected.sha256, expected.md5
    if info.size != size:
        return Verdict(False, f"size {info.size}, expected {size}")
    if info.metadata_sha256 is not None and info.metadata_sha256 != sha256:
        return Verdict(False, "recorded SHA-256 differs")
    checksum = info.checksum_sha256
    if checksum is not None and "-" not in checksum:
        if checksum == b64(sha256):
            return Verdict(True, "checksum_sha256")
        return Verdict(False, "SHA-256 checksum differs")
    if checksum is not None and expected.composite_sha256 is not None:
        if checksum == expected.composite_sha256:
            return Verdict(True, "composite_sha256")
        return Verdict(False, "composite SHA-256 checksum differs")
    if not info.multipart and etag_is_md5 and md5 is not None and is_md5(info.etag):
        if info.etag == md5:
            return Verdict(True, "etag_md5")
        return Verdict(False, "ETag (MD5) differs")
    if info.metadata_sha256 == sha256:
        return Verdict(True, "metadata_sha256")
    return Verdict(False, "unverifiable")
