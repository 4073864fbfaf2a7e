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


def test_digests_are_compared_not_their_spelling() -> None:
    """A composite checksum matches with AWS's `-N` suffix or without it (moto), with padding or
    without; another digest never does, whatever its suffix."""
    ours = checksums.b64(SHA)
    assert checksums.same_digest(ours, ours)
    assert checksums.same_digest(ours + "-3", ours)
    assert checksums.same_digest(ours.rstrip("="), ours + "-3")
    assert not checksums.same_digest(checksums.b64("0" * 64) + "-3", ours + "-3")
    assert not checksums.same_digest("not base64!", ours)


def test_a_multipart_head_without_the_part_count_is_judged_by_its_composite() -> None:
    """moto states a multipart object's composite checksum without `-N`: the digest decides."""
    part = 4096
    digests = [hashlib.sha256(DATA[i : i + part]).digest() for i in range(0, len(DATA), part)]
    expected = checksums.composite(digests)
    unsuffixed = expected.rpartition("-")[0]
    obj = info(checksum_sha256=unsuffixed, etag="abc-4")
    assert judge(obj, composite_sha256=expected) == checksums.Verdict(True, "composite_sha256")
    wrong = info(checksum_sha256=checksums.b64("0" * 64), etag="abc-4")
    assert not judge(wrong, composite_sha256=expected).ok


def test_a_multipart_etag_is_the_md5_of_the_parts_md5s() -> None:
    """Where no checksum comes back, the ETag our parts' MD5s predict proves a multipart object."""
    part = 4096
    md5s = [hashlib.md5(DATA[i : i + part]).digest() for i in range(0, len(DATA), part)]
    etag = checksums.multipart_etag(md5s)
    assert etag == hashlib.md5(b"".join(md5s)).hexdigest() + f"-{len(md5s)}"
    expected = checksums.Expected(len(DATA), SHA, MD5, multipart_etag=etag)
    assert checksums.judge(info(checksum_sha256=None, etag=etag), expected).how == "multipart_etag"
    assert not checksums.judge(info(checksum_sha256=None, etag="0" * 32 + "-4"), expected).ok


def answer(checksum: str | None, etag: str = MD5, **expected: str) -> checksums.Verdict:
    return checksums.proven_by_answer(
        checksums.Expected(len(DATA), SHA, MD5, **expected), checksum, etag, etag_is_md5=True
    )


def test_an_upload_is_proven_by_its_answer_only_when_it_echoes_our_checksum() -> None:
    """A PUT's answer proves the object when it echoes our SHA-256 and, unencrypted, our MD5 as
    its ETag; no checksum, another one, or another ETag leaves it to a HEAD."""
    assert answer(checksums.b64(SHA)) == checksums.Verdict(True, "checksum_sha256")
    assert answer(checksums.b64(SHA), etag=f'"{MD5}"').ok
    assert not answer(None).ok
    assert not answer(checksums.b64("0" * 64)).ok
    assert not answer(checksums.b64(SHA), etag="0" * 32).ok
    composite = checksums.composite([hashlib.sha256(DATA).digest()])
    assert answer(composite, etag="x-1", composite_sha256=composite).how == "composite_sha256"
    assert answer(composite[:-2], etag="x-1", composite_sha256=composite).ok
    assert not answer(checksums.b64(SHA), etag="x-1", composite_sha256=composite).ok
    assert not answer(None, etag="x-1", composite_sha256=composite).ok
    etag = checksums.multipart_etag([hashlib.md5(DATA).digest()])
    assert answer(None, etag=etag, composite_sha256=composite, multipart_etag=etag).ok
    assert not answer(
        None, etag="0" * 32 + "-1", composite_sha256=composite, multipart_etag=etag
    ).ok
