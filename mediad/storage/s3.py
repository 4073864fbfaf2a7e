"""The S3 side of the archive: one aioboto3 client, uploads that carry our own checksums, HEADs,
streamed downloads, presigned URLs, and S3's errors translated into mediad's.

Every upload states the digests we expect (Content-MD5 and x-amz-checksum-sha256 for one PUT,
a SHA-256 per part for multipart), so S3 refuses bytes that do not match them; large files are
read, hashed and sent part by part through a few reused buffers: (upload_concurrency + 1) parts
in memory, however many large files are in flight.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import aiobotocore.session
import aiohttp
import structlog
from aiobotocore.credentials import (
    AioConfigProvider,
    AioCredentialResolver,
    AioEnvProvider,
    AioSharedCredentialProvider,
)
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig

from mediad import __version__, errors
from mediad.config import ArchiveConfig

log = structlog.get_logger(__name__)

# User metadata holding the whole file's SHA-256: a multipart object's own checksum is a
# checksum of part checksums, which says nothing about the file without the part size.
METADATA_SHA256 = "mediad-sha256"
MAX_PARTS = 10_000
DOWNLOAD_CHUNK = 1024 * 1024
SEND_CHUNK = 1024 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")


class S3Error(errors.MediadError):
    """An S3 request failed; `error_code` is what a row or a report records."""

    error_code = "s3_error"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class S3AccessError(S3Error):
    """We may not use the bucket (credentials, permissions, no such bucket, wrong region, a
    setting the bucket refuses): nothing will work until an operator acts."""


class S3UnavailableError(S3Error):
    """The endpoint is unreachable, failing (5xx) or throttling: the same request may work later."""

    def __init__(
        self, message: str, *, error_code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.retry_after = retry_after


class S3RejectedError(S3Error):
    """S3 refused this request (a 4xx other than access): sending it again will not help."""

    error_code = "s3_rejected"


class S3BadDigestError(S3Error):
    """S3 received bytes that do not match the checksums we sent with them."""

    error_code = "s3_bad_digest"


class DigestMismatchError(errors.MediadError):
    """The bytes read from a local file do not hash to the digest its row records."""


# S3 error codes (HEAD answers carry only the status, hence "403", "301").
_ACCESS = {
    "AccessDenied": "s3_access_denied",
    "AllAccessDisabled": "s3_access_denied",
    "AccountProblem": "s3_access_denied",
    "403": "s3_access_denied",
    "InvalidAccessKeyId": "s3_bad_credentials",
    "SignatureDoesNotMatch": "s3_bad_credentials",
    "InvalidToken": "s3_bad_credentials",
    "ExpiredToken": "s3_bad_credentials",
    "TokenRefreshRequired": "s3_bad_credentials",
    "InvalidSecurity": "s3_bad_credentials",
    "NoSuchBucket": "s3_no_such_bucket",
    "PermanentRedirect": "s3_wrong_region",
    "301": "s3_wrong_region",
    "AuthorizationHeaderMalformed": "s3_wrong_region",
    "IllegalLocationConstraintException": "s3_wrong_region",
    "InvalidStorageClass": "s3_misconfigured",
    "InvalidEncryptionAlgorithmError": "s3_misconfigured",
    "KMS.NotFoundException": "s3_misconfigured",
    "KMS.DisabledException": "s3_misconfigured",
    "KMS.KMSInvalidStateException": "s3_misconfigured",
}
_THROTTLED = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
     "RequestThrottled", "429"}
)  # fmt: skip
_CREDENTIAL_ERRORS = (
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.CredentialRetrievalError,
    boto_errors.ProfileNotFound,
)
_CONNECTION_ERRORS = (
    boto_errors.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError
    boto_errors.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def b64(hex_digest: str) -> str:
    """A hex digest as S3 spells checksums: base64 of the raw bytes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def composite(part_sha256s: list[bytes]) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' raw SHA-256s, then `-N`."""
    joined = hashlib.sha256(b"".join(part_sha256s)).digest()
    return f"{base64.b64encode(joined).decode()}-{len(part_sha256s)}"


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD says about an object."""

    key: str
    size: int
    etag: str  # without quotes
    checksum_sha256: str | None  # base64; `...-N` for a multipart object
    metadata_sha256: str | None  # our own record of the whole file's SHA-256 (hex)

    @property
    def multipart(self) -> bool:
        return "-" in self.etag or "-" in (self.checksum_sha256 or "")


@dataclass(frozen=True)
class Verdict:
    """Whether an object holds the bytes we expect, and on what evidence."""

    ok: bool
    how: str  # checksum_sha256, composite_sha256, etag_md5, metadata_sha256; or the problem


def judge(
    info: ObjectInfo,
    *,
    size: int,
    sha256: str,
    md5: str | None,
    composite_sha256: str | None = None,
    etag_is_md5: bool = True,
) -> Verdict:
    """Compare a HEAD with our digests: size, then the strongest checksum the object has.

    A mismatch of any checksum present is damage; an object with none we can check is
    `unverifiable` (use --deep).
    """
    if info.size != size:
        return Verdict(False, f"size {info.size}, expected {size}")
    if info.metadata_sha256 is not None and info.metadata_sha256 != sha256:
        return Verdict(False, "recorded SHA-256 differs")
    checksum = info.checksum_sha256
    if checksum is not None and "-" not in checksum:
        if checksum == b64(sha256):
            return Verdict(True, "checksum_sha256")
        return Verdict(False, "SHA-256 checksum differs")
    if checksum is not None and composite_sha256 is not None:
        if checksum == composite_sha256:
            return Verdict(True, "composite_sha256")
        return Verdict(False, "composite SHA-256 checksum differs")
    if (
        not info.multipart
        and etag_is_md5
        and md5 is not None
        and re.fullmatch(r"[0-9a-f]{32}", info.etag)
    ):
        if info.etag == md5:
            return Verdict(True, "etag_md5")
        return Verdict(False, "ETag (MD5) differs")
    if info.metadata_sha256 == sha256:
        return Verdict(True, "metadata_sha256")
    return Verdict(False, "unverifiable")


@dataclass(frozen=True)
class Uploaded:
    """One finished upload: the object's ETag and checksum as S3 reported them."""

    etag: str
    checksum_sha256: str | None
    parts: int
    part_size: int | None
    # For a multipart upload: the composite checksum our own part digests predict.
    composite_sha256: str | None = None


class _Body:
    """Request bytes sent a slice at a time: a socket that cannot take a whole part at once then
    buffers one slice, not a second copy of the part. Rewindable for botocore's retries."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data)

    def __len__(self) -> int:
        return self._view.nbytes

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._slices()

    async def _slices(self) -> AsyncIterator[memoryview]:
        for start in range(0, self._view.nbytes, SEND_CHUNK):
            yield self._view[start : start + SEND_CHUNK]

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # each request iterates from the start anyway

    def tell(self) -> int:
        return 0


def _body(data: bytes | bytearray | memoryview) -> Any:
    if len(data) > SEND_CHUNK:
        return _Body(data)
    # A bytearray, never bytes: botocore wraps bytes in a BytesIO, which makes it add `Expect:
    # 100-continue` (a round trip waiting for the server's interim answer before the body
    # goes) and aiohttp copy the bytes out again 64 KiB at a time; a bytearray goes in one
    # write. Nor a memoryview: botocore cannot send one again when it retries.
    return data if isinstance(data, bytearray) else bytearray(data)


class PartBuffers:
    """The part buffers all multipart uploads of one client share, reused from part to part:
    parts in memory stay at `count` x part_size however many large files upload at once."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []
        self._slots = asyncio.Semaphore(count)

    async def take(self, length: int) -> bytearray:
        await self._slots.acquire()
        if length > self.size:  # a file so big that 10,000 parts must each exceed part_size
            return bytearray(length)
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        if len(buffer) == self.size:
            self._free.append(buffer)
        self._slots.release()

    def drop(self) -> None:
        """Give up a buffer something else may still touch: its slot returns, not its bytes."""
        self._slots.release()


class S3:
    """The daemon's one S3 client, with the archive settings every request needs."""

    def __init__(self, client: Any, config: ArchiveConfig) -> None:
        self.client = client
        self.config = config
        self.bucket = config.bucket
        # One part being read while upload_concurrency parts are sent.
        self.part_buffers = PartBuffers(config.upload_concurrency + 1, config.part_size)

    def _write_options(self, sha256: str) -> dict[str, Any]:
        options: dict[str, Any] = {"Metadata": {METADATA_SHA256: sha256}}
        if self.config.storage_class:
            options["StorageClass"] = self.config.storage_class
        if self.config.sse:
            options["ServerSideEncryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            options["SSEKMSKeyId"] = self.config.sse_kms_key_id
        return options

    @property
    def etag_is_md5(self) -> bool:
        """Under SSE-KMS an ETag is not the MD5 of the bytes."""
        return self.config.sse != "aws:kms"

    async def check_bucket(self, bucket: str | None = None) -> None:
        """Raise S3AccessError or S3UnavailableError unless the bucket answers."""
        bucket = bucket or self.bucket
        try:
            await self.client.head_bucket(Bucket=bucket)
        except boto_errors.ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise S3AccessError(
                    f"HEAD bucket {bucket}: no such bucket", error_code="s3_no_such_bucket"
                ) from exc
            raise translate(exc, f"HEAD bucket {bucket}") from exc
        except Exception as exc:
            raise translate(exc, f"HEAD bucket {bucket}") from exc

    async def head(self, key: str, bucket: str | None = None) -> ObjectInfo | None:
        """The object's size, ETag and checksums; None when there is no such object."""
        try:
            answer = await self.client.head_object(
                Bucket=bucket or self.bucket, Key=key, ChecksumMode="ENABLED"
            )
        except boto_errors.ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise translate(exc, f"HEAD {key}") from exc
        except Exception as exc:
            raise translate(exc, f"HEAD {key}") from exc
        metadata = {k.lower(): v for k, v in (answer.get("Metadata") or {}).items()}
        recorded = metadata.get(METADATA_SHA256)
        return ObjectInfo(
            key=key,
            size=int(answer["ContentLength"]),
            etag=str(answer.get("ETag", "")).strip('"'),
            checksum_sha256=answer.get("ChecksumSHA256"),
            metadata_sha256=recorded if recorded and _HEX64.fullmatch(recorded) else None,
        )

    async def put_bytes(
        self, key: str, data: bytes | bytearray, *, md5: str, sha256: str, if_none_match: bool
    ) -> Uploaded | None:
        """One PUT carrying Content-MD5 and the SHA-256 checksum of the row.

        S3 checks both against what it receives. With `if_none_match`, an existing object is
        left alone and None is returned.
        """
        options = self._write_options(sha256)
        if if_none_match:
            options["IfNoneMatch"] = "*"
        try:
            answer = await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=_body(data),
                ContentLength=len(data),
                ContentMD5=b64(md5),
                ChecksumSHA256=b64(sha256),
                **options,
            )
        except boto_errors.ClientError as exc:
            if if_none_match and _code(exc) in ("PreconditionFailed", "412"):
                return None
            raise translate(exc, f"PUT {key}") from exc
        except Exception as exc:
            raise translate(exc, f"PUT {key}") from exc
        return Uploaded(
            etag=str(answer.get("ETag", "")).strip('"'),
            checksum_sha256=answer.get("ChecksumSHA256"),
            parts=1,
            part_size=None,
        )

    async def put_file_multipart(self, key: str, path: Path, *, size: int, sha256: str) -> Uploaded:
        """Upload a large file in parts, each with its SHA-256; the whole is hashed on the way.

        Parts are read and hashed in order off the event loop and sent `upload_concurrency` at
        once; the upload completes only if the bytes sent hash to `sha256` (else it is aborted
        and DigestMismatchError raised).
        """
        part_size = max(self.config.part_size, -(-size // MAX_PARTS))
        count = max(1, -(-size // part_size))
        try:
            created = await self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                **self._write_options(sha256),
            )
        except Exception as exc:
            raise translate(exc, f"create multipart upload {key}") from exc
        upload_id = created["UploadId"]
        try:
            parts, digests = await self._send_parts(
                key, upload_id, path, size, part_size, count, sha256
            )
            try:
                answer = await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except Exception as exc:
                raise translate(exc, f"complete multipart upload {key}") from exc
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return Uploaded(
            etag=str(answer.get("ETag", "")).strip('"'),
            checksum_sha256=answer.get("ChecksumSHA256"),
            parts=count,
            part_size=part_size,
            composite_sha256=composite(digests),
        )

    async def _send_parts(
        self,
        key: str,
        upload_id: str,
        path: Path,
        size: int,
        part_size: int,
        count: int,
        sha256: str,
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        whole = hashlib.sha256()
        digests: list[bytes] = [b""] * count
        parts: list[dict[str, Any]] = [{}] * count
        ready: asyncio.Queue[tuple[int, bytearray, int] | None] = asyncio.Queue()
        workers = min(self.config.upload_concurrency, count)
        buffers = self.part_buffers

        def read_part(
            handle: io.BufferedReader, buffer: bytearray, length: int, number: int
        ) -> int:
            view = memoryview(buffer)[:length]
            got = handle.readinto(view)
            whole.update(view[:got])
            digests[number - 1] = hashlib.sha256(view[:got]).digest()
            return got

        async def produce() -> None:
            handle = await asyncio.to_thread(open, path, "rb")
            try:
                for number in range(1, count + 1):
                    length = part_size if number < count else size - part_size * (count - 1)
                    buffer = await buffers.take(length)
                    try:
                        got = await asyncio.to_thread(read_part, handle, buffer, length, number)
                    except BaseException:
                        buffers.drop()  # a thread may still be writing into it
                        raise
                    await ready.put((number, buffer, got))
            finally:
                # In a thread: a read still running on this handle holds its lock.
                await asyncio.to_thread(handle.close)
            for _ in range(workers):
                await ready.put(None)

        async def send() -> None:
            while (item := await ready.get()) is not None:
                number, buffer, got = item
                body = _body(memoryview(buffer)[:got])
                try:
                    answer = await self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                        ContentLength=got,
                        ChecksumSHA256=base64.b64encode(digests[number - 1]).decode(),
                    )
                except BaseException as exc:
                    buffers.drop()  # the transport may still hold a view of it
                    if isinstance(exc, Exception):
                        raise translate(exc, f"PUT {key} part {number}") from exc
                    raise
                buffers.give(buffer)
                parts[number - 1] = {
                    "PartNumber": number,
                    "ETag": answer["ETag"],
                    "ChecksumSHA256": answer.get("ChecksumSHA256")
                    or base64.b64encode(digests[number - 1]).decode(),
                }

        tasks = [asyncio.create_task(produce())]
        tasks += [asyncio.create_task(send()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            while not ready.empty():
                if (item := ready.get_nowait()) is not None:
                    buffers.give(item[1])
            raise
        if len(short := [p for p in parts if not p]) or whole.hexdigest() != sha256:
            raise DigestMismatchError(
                f"{path} does not hash to its recorded SHA-256"
                + (f" ({len(short)} parts missing)" if short else "")
            )
        return parts, digests

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except Exception as exc:  # the bucket's lifecycle rules clean up what we cannot
            log.warning("multipart_abort_failed", key=key, error=str(exc))

    async def download(
        self, key: str, sink: Callable[[bytes], Awaitable[None]], bucket: str | None = None
    ) -> int | None:
        """Stream the object into `sink` chunk by chunk; its size, or None if there is none."""
        try:
            answer = await self.client.get_object(Bucket=bucket or self.bucket, Key=key)
        except boto_errors.ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise translate(exc, f"GET {key}") from exc
        except Exception as exc:
            raise translate(exc, f"GET {key}") from exc
        total = 0
        try:
            body = answer["Body"]
            async with body:  # releases the connection however the read ends
                while chunk := await body.read(DOWNLOAD_CHUNK):
                    total += len(chunk)
                    await sink(chunk)
        except Exception as exc:
            raise translate(exc, f"GET {key}") from exc
        return total

    async def hash_object(self, key: str, bucket: str | None = None) -> tuple[int, str] | None:
        """Download and hash an object: (size, SHA-256 hex), or None if there is none."""
        digest = hashlib.sha256()

        async def sink(chunk: bytes) -> None:
            digest.update(chunk)

        size = await self.download(key, sink, bucket)
        return None if size is None else (size, digest.hexdigest())

    async def presign_get(self, key: str, bucket: str, expires_in: float) -> str:
        """A presigned GET URL for the object (a local computation: no request is sent)."""
        try:
            url: str = await self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_in)
            )
        except Exception as exc:
            raise translate(exc, f"presign {key}") from exc
        return url


# The codes S3 (and SeaweedFS) answer for an object that is not there, on HEAD and GET.
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def _code(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: BaseException, what: str) -> S3Error:
    """An exception from botocore or the network as one of our S3 errors.

    Anything else (a bug) is re-raised as it is; call this inside the `except` block.
    """
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return S3AccessError(
            f"{what}: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
            " or a credentials file)",
            error_code="s3_bad_credentials",
        )
    if isinstance(exc, boto_errors.ClientError):
        code = _code(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        message = exc.response.get("Error", {}).get("Message") or ""
        text = f"{what}: {code or status} {message}".strip()
        if code in _ACCESS or code.startswith("KMS."):
            return S3AccessError(text, error_code=_ACCESS.get(code, "s3_misconfigured"))
        if code in _THROTTLED or status == 429:
            return S3UnavailableError(
                text, error_code="s3_throttled", retry_after=_retry_after(meta)
            )
        if status >= 500 or code in ("InternalError", "ServiceUnavailable", "RequestTimeout"):
            return S3UnavailableError(text, error_code="s3_unavailable")
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return S3BadDigestError(text)
        return S3RejectedError(text)
    if isinstance(exc, _CONNECTION_ERRORS):
        return S3UnavailableError(
            f"{what}: {type(exc).__name__}: {exc}", error_code="s3_unavailable"
        )
    raise exc


def _retry_after(meta: dict[str, Any]) -> float | None:
    value = (meta.get("HTTPHeaders") or {}).get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _credential_resolver(session: aiobotocore.session.AioSession) -> AioCredentialResolver:
    """The AWS environment variables, then the credentials file, then the config file: nothing
    else (no instance metadata, no config.toml)."""
    profile = session.get_config_variable("profile") or "default"
    return AioCredentialResolver(
        providers=[
            AioEnvProvider(),
            AioSharedCredentialProvider(
                creds_filename=session.get_config_variable("credentials_file"),
                profile_name=profile,
            ),
            AioConfigProvider(
                config_filename=session.get_config_variable("config_file"),
                profile_name=profile,
            ),
        ]
    )


@contextlib.asynccontextmanager
async def open_client(config: ArchiveConfig) -> AsyncIterator[S3]:
    """One aioboto3 session and S3 client, for as long as the block runs."""
    botocore_session = aiobotocore.session.AioSession()
    botocore_session.register_component(
        "credential_provider", _credential_resolver(botocore_session)
    )
    # mediad reads no timestamp from S3's answers: leave them as sent instead of parsing one
    # (a date parse per HEAD) on every answer. Safe because this session makes no other client
    # (the credential providers above are static: no STS expiry to parse).
    botocore_session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=str
    )
    session = aioboto3.Session(botocore_session=botocore_session, region_name=config.region)
    boto_config = BotoConfig(
        region_name=config.region,
        signature_version="s3v4",
        # Every upload carries our own Content-MD5 and SHA-256 checksums; hashing the body a
        # second time for the signature would only burn CPU.
        s3={"addressing_style": config.addressing_style, "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=config.concurrency * config.upload_concurrency + 8,
        user_agent_extra=f"mediad/{__version__}",
        # Our calls are fixed and typed; validating them again costs ~15% of a HEAD's CPU.
        parameter_validation=False,
    )
    async with session.client(
        "s3", endpoint_url=config.endpoint_url or None, config=boto_config
    ) as client:
        _skip_per_request_work(client, botocore_session)
        yield S3(client, config)


def _skip_per_request_work(client: Any, botocore_session: Any) -> None:
    """Drop work botocore repeats on every request although its answer never changes for us.

    A small file costs a PUT and a HEAD, and botocore's own CPU per request, not the bytes, is
    what limits the archive stage. Two of its steps give the same answer every time, yet took
    about a quarter of that CPU (profiled on PUT + HEAD of 50-300 kB files):

    - Endpoint resolution runs S3's rule set with the object key among its inputs. The rules
      never read the key, but the result is cached by all inputs, so every new key misses the
      cache and runs the rules again. Resolving without the key gives the same endpoint, cached.
      Only done when the loaded rule set indeed never reads the key.
    - The User-Agent string is rebuilt twice per request; it is the same string each time.

    Both reach into botocore's internals: if they are not where expected, nothing is changed.
    """
    provider: Any = getattr(getattr(client, "_ruleset_resolver", None), "_provider", None)
    resolve = getattr(provider, "resolve_endpoint", None)
    if resolve is not None:
        rules = botocore_session.get_component("data_loader").load_service_model(
            "s3", "endpoint-rule-set-1", client.meta.service_model.api_version
        )
        if not _reads(rules.get("rules"), "Key"):

            def resolve_endpoint(**params: Any) -> Any:
                params.pop("Key", None)
                return resolve(**params)

            provider.resolve_endpoint = resolve_endpoint
    creator = getattr(client, "_user_agent_creator", None)
    if creator is not None and callable(getattr(creator, "to_string", None)):
        user_agent: str = creator.to_string()
        creator.to_string = lambda: user_agent


def _reads(node: Any, name: str) -> bool:
    """Whether an endpoint rule (set) refers to parameter `name`."""
    if isinstance(node, dict):
        return node.get("ref") == name or any(_reads(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_reads(v, name) for v in node)
    return isinstance(node, str) and "{" + name in node


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB chunks (runs in a thread)."""
    digest = hashlib.sha256()
    buffer = bytearray(DOWNLOAD_CHUNK)
    view = memoryview(buffer)
    size = 0
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
            size += read
    return size, digest.hexdigest()
