"""Checksums as S3 spells them, and the judgement of an object against the digests of a row.

S3 states a SHA-256 checksum in base64; a multipart object's is a composite (the SHA-256 of its
parts' SHA-256s, then `-N` on AWS, without it on others); its ETag is the MD5 of the bytes only
for a single PUT without SSE-KMS, and for a multipart upload the MD5 of its parts' MD5s, `-N`.
Digests are compared, never their spelling (`same_digest`). `proven_by_answer` weighs what the
answer to an upload says, `judge` what a HEAD says, strongest evidence first.
"""

from __future__ import annotations

import base64
import binascii
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


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives a multipart object (without SSE-KMS): MD5 of the parts' raw MD5s, `-N`."""
    joined = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
    return f"{joined}-{len(part_md5s)}"


_PART_COUNT = re.compile(r"-[0-9]+$")


def _digest_bytes(checksum: str) -> bytes | None:
    """The raw digest a base64 checksum spells, `-N` part count or not; None if it spells none."""
    text = _PART_COUNT.sub("", checksum.strip())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def same_digest(checksum: str, ours: str) -> bool:
    """Whether two base64 checksums hold the same digest. S3 services spell a composite with
    AWS's `-N` suffix (AWS, SeaweedFS) or without it (moto), some drop the padding: the part
    count is not part of the digest, and a different count shows as a different digest anyway.
    """
    mine = _digest_bytes(ours)
    return mine is not None and _digest_bytes(checksum) == mine


def same_etag(etag: str, ours: str) -> bool:
    """Whether an ETag (quoted or not, any case) is the MD5-based one we predict."""
    return etag.strip().strip('"').lower() == ours.lower()


@dataclass(frozen=True)
class Expected:
    """The bytes an object must hold: their size and hex digests, and for a multipart object the
    composite checksum its parts predict."""

    size: int
    sha256: str
    md5: str | None
    composite_sha256: str | None = None  # base64, `...-N`
    # For a multipart upload whose parts' MD5s we computed: the ETag they predict (`...-N`).
    multipart_etag: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether an object holds the bytes we expect, and on what evidence."""

    ok: bool
    # The evidence: checksum_sha256, composite_sha256, etag_md5, multipart_etag,
    # metadata_sha256, reread_sha256; or the problem.
    how: str


# The problem of a verdict that no checksum could decide (neither proof nor damage).
UNVERIFIABLE = "unverifiable"


def proven_by_answer(
    expected: Expected, checksum_sha256: str | None, etag: str, *, etag_is_md5: bool
) -> Verdict:
    """Whether the answer to an upload (a PUT's, or a CompleteMultipartUpload's) proves that S3
    stored our bytes.

    S3 checks the `x-amz-checksum-sha256` sent with a PUT or a part against what it received and
    refuses the request when it differs, so an answer echoing our checksum is the proof; for an
    unencrypted single PUT its ETag must be our MD5 too. A multipart upload is proven by its
    composite checksum, or, where the parts' checksums were not echoed and we hashed the parts
    with MD5 instead, by the ETag that predicts. Not ok (the caller HEADs) when the answer echoes
    no checksum (the server may not check them either) or one that differs.
    """
    if expected.composite_sha256 is not None or expected.multipart_etag is not None:
        if checksum_sha256 and expected.composite_sha256 is not None:
            if same_digest(checksum_sha256, expected.composite_sha256):
                return Verdict(True, "composite_sha256")
            return Verdict(False, "the composite checksum answered differs from ours")
        if etag_is_md5 and expected.multipart_etag is not None:
            if same_etag(etag, expected.multipart_etag):
                return Verdict(True, "multipart_etag")
            return Verdict(False, "the multipart ETag answered differs from our parts' MD5s")
        return Verdict(False, "no checksum answered")
    if not checksum_sha256:
        return Verdict(False, "no checksum answered")
    if not same_digest(checksum_sha256, b64(expected.sha256)):
        return Verdict(False, "the SHA-256 checksum answered differs from ours")
    single_etag = etag_is_md5 and expected.md5 is not None and is_md5(etag.strip('"').lower())
    if single_etag and not same_etag(etag, expected.md5 or ""):
        return Verdict(False, "the ETag answered differs from our MD5")
    return Verdict(True, "checksum_sha256")


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
    if checksum is not None:
        # A whole-object checksum is the file's SHA-256; a multipart object's is a composite,
        # spelt with or without `-N`, so only what we predicted for it can decide.
        if same_digest(checksum, b64(sha256)):
            return Verdict(True, "checksum_sha256")
        if expected.composite_sha256 is not None:
            if same_digest(checksum, expected.composite_sha256):
                return Verdict(True, "composite_sha256")
            return Verdict(False, "composite SHA-256 checksum differs")
        if not info.multipart:
            return Verdict(False, "SHA-256 checksum differs")
    if info.multipart and etag_is_md5 and expected.multipart_etag is not None:
        if same_etag(info.etag, expected.multipart_etag):
            return Verdict(True, "multipart_etag")
        return Verdict(False, "multipart ETag differs")
    if not info.multipart and etag_is_md5 and md5 is not None and is_md5(info.etag):
        if info.etag == md5:
            return Verdict(True, "etag_md5")
        return Verdict(False, "ETag (MD5) differs")
    if info.metadata_sha256 == sha256:
        return Verdict(True, "metadata_sha256")
    return Verdict(False, UNVERIFIABLE)
