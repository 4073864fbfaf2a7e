"""The S3 client of the archive: one aiobotocore client, uploads that carry our own checksums,
HEADs, streamed downloads and presigned URLs; a small file's PUT goes by s3put.py instead.

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
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiobotocore.session
import structlog
from aiobotocore.credentials import (
    AioConfigProvider,
    AioCredentialResolver,
    AioEnvProvider,
    AioSharedCredentialProvider,
)
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig

from mediad import __version__
from mediad.config import ArchiveConfig
from mediad.storage import buffers, checksums, s3errors, s3put, s3shortcuts

log = structlog.get_logger(__name__)

# User metadata holding the whole file's SHA-256: a multipart object's own checksum is a
# checksum of part checksums, which says nothing about the file without the part size.
METADATA_SHA256 = "mediad-sha256"
MAX_PARTS = 10_000
DOWNLOAD_CHUNK = 1024 * 1024


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
class Uploaded:
    """One finished upload: the object's ETag and checksum as S3 reported them."""

    etag: str
    checksum_sha256: str | None
    parts: int
    part_size: int | None
    # For a multipart upload: the composite checksum our own part digests predict, and the ETag
    # our parts' MD5s predict when every part's answer lacked its checksum (so we hashed it).
    composite_sha256: str | None = None
    multipart_etag: str | None = None


class S3:
    """The daemon's one S3 client, with the archive settings every request needs."""

    def __init__(
        self,
        client: Any,
        config: ArchiveConfig,
        *,
        credentials: Callable[[], Awaitable[Any]],
        shortcuts: frozenset[str] = frozenset(),
        ca_bundle: str | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.bucket = config.bucket
        # The botocore shortcuts (s3shortcuts) this client was opened with.
        self.shortcuts = shortcuts
        # One part being read while upload_concurrency parts are sent.
        self.part_buffers = buffers.PartBuffers(config.upload_concurrency + 1, config.part_size)
        # The credential chain's answer (botocore's credentials, or None when it has none), for
        # the PUT of a small file, which signs its own requests; opened on the first PUT.
        self._credentials = credentials
        # The CA bundle botocore was told to verify https with, if any, for that PUT to trust too.
        self._ca_bundle = ca_bundle
        self._direct: s3put.DirectPut | None = None
        self._direct_opening = asyncio.Lock()

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()

    async def _direct_put(self) -> s3put.DirectPut:
        if self._direct is not None:  # every PUT but the first: no lock to take
            return self._direct
        async with self._direct_opening:
            if self._direct is None:
                credentials = await self._credentials()
                if credentials is None:
                    raise s3errors.translate(boto_errors.NoCredentialsError(), "PUT")
                self._direct = await s3put.DirectPut.configured_like(
                    self.client, credentials, self.config, METADATA_SHA256, self._ca_bundle
                )
            return self._direct

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

    async def check_bucket(self) -> None:
        """Raise S3AccessError or S3UnavailableError unless the bucket answers."""
        bucket = self.bucket
        try:
            await self.client.head_bucket(Bucket=bucket)
        except boto_errors.ClientError as exc:
            if s3errors.code_of(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise s3errors.S3AccessError(
                    f"HEAD bucket {bucket}: no such bucket", error_code="s3_no_such_bucket"
                ) from exc
            raise s3errors.translate(exc, f"HEAD bucket {bucket}") from exc
        except Exception as exc:
            raise s3errors.translate(exc, f"HEAD bucket {bucket}") from exc

    async def head(self, key: str, bucket: str | None = None) -> ObjectInfo | None:
        """The object's size, ETag and checksums; None when there is no such object."""
        try:
            answer = await self.client.head_object(
                Bucket=bucket or self.bucket, Key=key, ChecksumMode="ENABLED"
            )
        except boto_errors.ClientError as exc:
            if s3errors.code_of(exc) in s3errors.NOT_FOUND:
                return None
            raise s3errors.translate(exc, f"HEAD {key}") from exc
        except Exception as exc:
            raise s3errors.translate(exc, f"HEAD {key}") from exc
        metadata = {k.lower(): v for k, v in (answer.get("Metadata") or {}).items()}
        recorded = metadata.get(METADATA_SHA256)
        return ObjectInfo(
            key=key,
            size=int(answer["ContentLength"]),
            etag=str(answer.get("ETag", "")).strip('"'),
            checksum_sha256=answer.get("ChecksumSHA256"),
            metadata_sha256=recorded if recorded and checksums.is_sha256(recorded) else None,
        )

    async def check(
        self, key: str, expected: checksums.Expected, bucket: str | None = None
    ) -> tuple[ObjectInfo | None, checksums.Verdict]:
        """HEAD the object and judge it against `expected`: what the HEAD said, and the verdict
        (not ok, "missing", when there is no such object)."""
        info = await self.head(key, bucket)
        if info is None:
            return None, checksums.Verdict(False, "missing")
        return info, checksums.judge(info, expected, etag_is_md5=self.etag_is_md5)

    async def put_bytes(
        self, key: str, data: bytes | bytearray, *, md5: str, sha256: str, if_none_match: bool
    ) -> Uploaded | None:
        """One PUT carrying Content-MD5 and the SHA-256 checksum of the row (s3put.py).

        S3 checks both against what it receives. With `if_none_match`, an existing object is
        left alone and None is returned.
        """
        direct = await self._direct_put()
        answer = await direct.put(key, data, md5=md5, sha256=sha256, if_none_match=if_none_match)
        if answer is None:
            return None
        etag, checksum_sha256 = answer
        return Uploaded(etag=etag, checksum_sha256=checksum_sha256, parts=1, part_size=None)

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
            raise s3errors.translate(exc, f"create multipart upload {key}") from exc
        upload_id = created["UploadId"]
        try:
            parts, digests, md5s = await self._send_parts(
                key, upload_id, path, size, part_size, count, sha256
            )
            known = [digest for digest in md5s if digest is not None]
            try:
                answer = await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except Exception as exc:
                raise s3errors.translate(exc, f"complete multipart upload {key}") from exc
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return Uploaded(
            etag=str(answer.get("ETag", "")).strip('"'),
            checksum_sha256=answer.get("ChecksumSHA256"),
            parts=count,
            part_size=part_size,
            composite_sha256=checksums.composite(digests),
            multipart_etag=checksums.multipart_etag(known) if len(known) == count else None,
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
    ) -> tuple[list[dict[str, Any]], list[bytes], list[bytes | None]]:
        whole = hashlib.sha256()
        digests: list[bytes] = [b""] * count
        # A part's MD5, computed only when its answer does not echo its SHA-256 (a server that
        # may not check it): compared with the part's ETag, they predict the object's ETag.
        md5s: list[bytes | None] = [None] * count
        etag_is_md5 = self.etag_is_md5
        parts: list[dict[str, Any]] = [{}] * count
        ready: asyncio.Queue[tuple[int, bytearray, int] | None] = asyncio.Queue()
        workers = min(self.config.upload_concurrency, count)
        part_buffers = self.part_buffers

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
                    buffer = await part_buffers.take(length)
                    try:
                        got = await asyncio.to_thread(read_part, handle, buffer, length, number)
                    except BaseException:
                        part_buffers.drop()  # a thread may still be writing into it
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
                body = buffers.request_body(memoryview(buffer)[:got])
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
                    part_buffers.drop()  # the transport may still hold a view of it
                    if isinstance(exc, Exception):
                        raise s3errors.translate(exc, f"PUT {key} part {number}") from exc
                    raise
                ours = base64.b64encode(digests[number - 1]).decode()
                echoed = answer.get("ChecksumSHA256")
                try:
                    if not echoed or not checksums.same_digest(echoed, ours):
                        md5s[number - 1] = await self._check_part_etag(
                            key, number, buffer, got, str(answer.get("ETag", "")), etag_is_md5
                        )
                finally:
                    part_buffers.give(buffer)
                parts[number - 1] = {
                    "PartNumber": number,
                    "ETag": answer["ETag"],
                    "ChecksumSHA256": ours,
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
                    part_buffers.give(item[1])
            raise
        if len(short := [p for p in parts if not p]) or whole.hexdigest() != sha256:
            raise checksums.DigestMismatchError(
                f"{path} does not hash to its recorded SHA-256"
                + (f" ({len(short)} parts missing)" if short else "")
            )
        return parts, digests, md5s

    async def _check_part_etag(
        self, key: str, number: int, buffer: bytearray, got: int, etag: str, etag_is_md5: bool
    ) -> bytes | None:
        """A part whose answer did not prove it by its checksum: its MD5 (off the event loop),
        which its ETag must equal where ETags are MD5s; S3BadDigestError when it does not."""
        if not etag_is_md5:
            return None
        digest = await asyncio.to_thread(
            lambda: hashlib.md5(memoryview(buffer)[:got], usedforsecurity=False).digest()
        )
        if not checksums.same_etag(etag, digest.hex()):
            raise s3errors.S3BadDigestError(
                f"PUT {key} part {number}: its ETag {etag} is not the MD5 of the part sent"
            )
        return digest

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except Exception as exc:  # the bucket's lifecycle rules clean up what we cannot
            log.warning("multipart_abort_failed", key=key, error=str(exc))

    async def abort_stale_uploads(self, prefix: str, older_than: datetime) -> list[str]:
        """Abort the multipart uploads under `prefix` started before `older_than` (left by a
        process killed mid-upload; they hold their parts' bytes until aborted); the keys."""
        aborted: list[str] = []
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            try:
                page = await self.client.list_multipart_uploads(**options)
            except Exception as exc:
                raise s3errors.translate(exc, "list multipart uploads") from exc
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < older_than:
                    await self._abort(upload["Key"], upload["UploadId"])
                    aborted.append(upload["Key"])
            if not page.get("IsTruncated"):
                return aborted
            options["KeyMarker"] = page.get("NextKeyMarker", "")
            options["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    async def download(
        self, key: str, sink: Callable[[bytes], Awaitable[None]], bucket: str | None = None
    ) -> int | None:
        """Stream the object into `sink` chunk by chunk; its size, or None if there is none."""
        try:
            answer = await self.client.get_object(Bucket=bucket or self.bucket, Key=key)
        except boto_errors.ClientError as exc:
            if s3errors.code_of(exc) in s3errors.NOT_FOUND:
                return None
            raise s3errors.translate(exc, f"GET {key}") from exc
        except Exception as exc:
            raise s3errors.translate(exc, f"GET {key}") from exc
        total = 0
        try:
            body = answer["Body"]
            async with body:  # releases the connection however the read ends
                while chunk := await body.read(DOWNLOAD_CHUNK):
                    total += len(chunk)
                    await sink(chunk)
        except Exception as exc:
            raise s3errors.translate(exc, f"GET {key}") from exc
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
            raise s3errors.translate(exc, f"presign {key}") from exc
        return url


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


def needs_tls_context(endpoint_url: str) -> bool:
    """Whether the client needs its verifying TLS context. aiobotocore builds one for its first
    request whatever the endpoint's scheme, loading the whole CA bundle (~35 ms of every start);
    a plain-http endpoint (a SeaweedFS or MinIO beside the host) never uses it, unless a proxy
    stands between (whose own URL may be https). Without the context an https connection would
    go unverified, so False only where no request of this client reaches an https URL: it
    follows no redirect, and botocore's own retries stay on the endpoint."""
    if urllib.parse.urlsplit(endpoint_url).scheme.lower() != "http":
        return True
    return s3put.env_proxy(endpoint_url) is not None


@contextlib.asynccontextmanager
async def open_client(
    config: ArchiveConfig, *, shortcuts: Collection[str] = s3shortcuts.ALL
) -> AsyncIterator[S3]:
    """One aiobotocore session and S3 client, for as long as the block runs; `shortcuts` (all
    by default) are the botocore shortcuts of s3shortcuts to take.

    aiobotocore's own client, not aioboto3's: aioboto3 adds boto3's resources and transfer
    methods, which the archive never calls, for 25-35 ms more of every start (boto3's imports and
    the S3 methods it injects as the client is made)."""
    botocore_session = aiobotocore.session.AioSession()
    botocore_session.register_component(
        "credential_provider", _credential_resolver(botocore_session)
    )
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
        # botocore's parameter validation refuses the sliced body a part or a PUT over 1 MiB is
        # sent with (an async iterable, not a file: buffers.SlicedBody), and our calls are fixed
        # and typed. On, it would also cost ~0.2 ms of CPU per small file, ~4% (measured with
        # benchmarks/s3_requests.py and a variant turning it on, for small files only).
        parameter_validation=False,
    )
    async with botocore_session.create_client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url or None,
        # None leaves the CA bundle to botocore ($AWS_CA_BUNDLE, the config file's ca_bundle, else
        # its own); True would override a private CA given that way.
        verify=None if needs_tls_context(config.endpoint_url) else False,
        config=boto_config,
    ) as client:
        applied = s3shortcuts.apply(client, botocore_session, shortcuts)
        s3 = S3(
            client,
            config,
            shortcuts=applied,
            credentials=botocore_session.get_credentials,
            ca_bundle=botocore_session.get_config_variable("ca_bundle"),
        )
        try:
            yield s3
        finally:
            await s3.close()
