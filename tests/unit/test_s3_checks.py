"""The archive's judgement of S3: checksums compared, errors classified, outages told apart."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore import exceptions as boto_errors

from mediad import errors
from mediad.stages import archive
from mediad.storage import checksums, s3, s3errors

DATA = b"bytes of a photo" * 1000
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


def info(**overrides: object) -> s3.ObjectInfo:
    fields: dict[str, object] = {
        "key": "k",
        "size": len(DATA),
        "etag": MD5,
        "checksum_sha256": checksums.b64(SHA),
        "metadata_sha256": SHA,
    }
    fields.update(overrides)
    return s3.ObjectInfo(**fields)  # type: ignore[arg-type]


def judge(obj: s3.ObjectInfo, composite_sha256: str | None = None) -> checksums.Verdict:
    return checksums.judge(obj, checksums.Expected(len(DATA), SHA, MD5, composite_sha256))


def test_digests_are_lowercase_hex_of_their_length() -> None:
    """SHA-256 is 64 and MD5 32 lowercase hex digits, nothing before or after (no newline)."""
    assert checksums.is_sha256(SHA) and checksums.is_md5(MD5)
    for bad in (SHA.upper(), SHA[:-1], SHA + "0", SHA + "\n", " " + SHA, "g" * 64, MD5, ""):
        assert not checksums.is_sha256(bad), bad
    for bad in (MD5.upper(), MD5[:-1], MD5 + "\n", SHA, ""):
        assert not checksums.is_md5(bad), bad


def test_a_matching_object_is_verified_by_its_strongest_checksum() -> None:
    """SHA-256 first; without it the MD5 ETag; without either our recorded digest."""
    assert judge(info()) == checksums.Verdict(True, "checksum_sha256")
    assert judge(info(checksum_sha256=None)) == checksums.Verdict(True, "etag_md5")
    assert judge(info(checksum_sha256=None, etag="x-2")).how == "metadata_sha256"


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (info(size=len(DATA) - 1), "size"),
        (info(checksum_sha256=checksums.b64("0" * 64)), "SHA-256 checksum differs"),
        (info(checksum_sha256=None, etag="0" * 32), "ETag (MD5) differs"),
        (info(metadata_sha256="1" * 64), "recorded SHA-256 differs"),
        (info(checksum_sha256=None, etag="x-2", metadata_sha256=None), "unverifiable"),
    ],
)
def test_any_mismatch_is_damage(obj: s3.ObjectInfo, problem: str) -> None:
    """Any checksum the object carries that differs from ours fails it."""
    verdict = judge(obj)
    assert not verdict.ok and problem in verdict.how


def test_multipart_objects_compare_the_composite_checksum() -> None:
    """A multipart object's checksum is SHA-256 of its parts' SHA-256s, then -N."""
    part = 4096
    digests = [hashlib.sha256(DATA[i : i + part]).digest() for i in range(0, len(DATA), part)]
    expected = checksums.composite(digests)
    raw = hashlib.sha256(b"".join(digests)).digest()
    assert expected == f"{base64.b64encode(raw).decode()}-{len(digests)}"
    obj = info(checksum_sha256=expected, etag="abc-4")
    assert judge(obj, composite_sha256=expected) == checksums.Verdict(True, "composite_sha256")
    assert not judge(obj, composite_sha256="other-4").ok


def client_error(code: str, status: int) -> boto_errors.ClientError:
    return boto_errors.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (client_error("AccessDenied", 403), s3errors.S3AccessError, "s3_access_denied"),
        (client_error("403", 403), s3errors.S3AccessError, "s3_access_denied"),
        (client_error("SignatureDoesNotMatch", 403), s3errors.S3AccessError, "s3_bad_credentials"),
        (client_error("InvalidAccessKeyId", 403), s3errors.S3AccessError, "s3_bad_credentials"),
        (client_error("NoSuchBucket", 404), s3errors.S3AccessError, "s3_no_such_bucket"),
        (client_error("PermanentRedirect", 301), s3errors.S3AccessError, "s3_wrong_region"),
        (client_error("SlowDown", 503), s3errors.S3UnavailableError, "s3_throttled"),
        (client_error("InternalError", 500), s3errors.S3UnavailableError, "s3_unavailable"),
        (client_error("BadDigest", 400), s3errors.S3BadDigestError, "s3_bad_digest"),
        (client_error("EntityTooLarge", 400), s3errors.S3RejectedError, "s3_rejected"),
        (boto_errors.EndpointConnectionError(endpoint_url="http://x"), s3errors.S3UnavailableError,
         "s3_unavailable"),
        (boto_errors.NoCredentialsError(), s3errors.S3AccessError, "s3_bad_credentials"),
        (ConnectionResetError(), s3errors.S3UnavailableError, "s3_unavailable"),
    ],
)  # fmt: skip
def test_s3_errors_are_classified(exc: Exception, kind: type[s3errors.S3Error], code: str) -> None:
    """Access problems, outages, digest refusals and other refusals each get their error_code."""
    translated = s3errors.translate(exc, "PUT k")
    assert type(translated) is kind and translated.error_code == code


def test_an_unknown_exception_is_not_swallowed() -> None:
    """A bug (anything not from S3 or the network) is re-raised as it is."""
    with pytest.raises(ZeroDivisionError):
        s3errors.translate(ZeroDivisionError(), "PUT k")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_isolated_failures_retry_and_an_outage_pauses() -> None:
    """Two failures in a row are the rows' retries; the third pauses the stage, doubling while
    it lasts; a success resets it."""
    clock = Clock()
    health = archive.Health(2.0, 5.0, clock)
    down = s3errors.S3UnavailableError("refused", error_code="s3_unavailable")
    assert type(health.unavailable(down)) is errors.TransientError
    assert type(health.unavailable(down)) is errors.TransientError
    first = health.unavailable(down)
    assert isinstance(first, errors.StagePausedError) and first.pause_for == 2.0
    clock.now += 1.0  # another row fails inside the same pause: it is not extended
    same = health.unavailable(down)
    assert isinstance(same, errors.StagePausedError) and same.pause_for < 1.0
    clock.now += 1.5
    second = health.unavailable(down)
    assert isinstance(second, errors.StagePausedError) and second.pause_for == 4.0
    clock.now += 5.0
    third = health.unavailable(down)
    assert isinstance(third, errors.StagePausedError) and third.pause_for == 5.0
    health.ok()
    assert type(health.unavailable(down)) is errors.TransientError


def test_access_problems_pause_at_once() -> None:
    """Refused credentials pause the stage from the first row; no attempt is spent."""
    health = archive.Health(2.0, 60.0, Clock())
    refused = s3errors.S3AccessError("no", error_code="s3_bad_credentials")
    paused = health.refused(refused)
    assert paused.error_code == "s3_bad_credentials" and paused.pause_for == 2.0
    assert health.problem == "s3_bad_credentials"
    health.ok()
    assert health.problem is None
