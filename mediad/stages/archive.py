"""The archive stage: a downloaded file becomes an object in S3 whose bytes are proven to be ours.

key ▸ content-addressed copy already there? ▸ upload (one PUT with Content-MD5 and SHA-256, or
multipart with a SHA-256 per part) ▸ proven by the upload's answer (S3 checked our checksums and
echoed them), else by a HEAD compared with our digests, else by reading the object back ▸ record.
A row is never completed on an object that is not proven to hold its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from mediad import errors, metrics, stages
from mediad.config import ArchiveConfig
from mediad.resources import Resources
from mediad.stage import Result, Row, Stage
from mediad.storage import checksums, objectkeys, s3, s3errors
from mediad.storage.local import Store, hash_file, valid_ext

log = structlog.get_logger(__name__)

# Consecutive failures to reach S3 (no success between) after which it counts as down: the
# stage pauses instead of spending the attempts of row after row.
OUTAGE_AFTER = 3
# A multipart upload started longer ago than this was left by a process that died.
STRAY_UPLOAD_AGE = timedelta(days=1)


@contextlib.asynccontextmanager
async def open_stage(resources: Resources) -> AsyncIterator[Stage]:
    """The archive stage on the daemon's S3 client and store."""
    config = resources.config
    archiver = Archiver(config.archive, await resources.s3(), resources.store)
    await archiver.check_access()
    await archiver.abort_stray_uploads()
    yield Stage.configured(stages.ARCHIVE, archiver.process, config)


@dataclass(frozen=True)
class Local:
    """What a row says about its local file."""

    path: Path | None  # None: evicted, with an archive_url to check instead
    sha256: str
    md5: str
    size: int
    ext: str

    @classmethod
    def checked(cls, path: Path | None, sha256: str, md5: str | None, size: int | None) -> Local:
        """A file and the digests recorded for it; PermanentError unless they are valid."""
        sha256, md5 = sha256.lower(), (md5 or "").lower()
        if not checksums.is_sha256(sha256) or not checksums.is_md5(md5):
            raise errors.PermanentError("the row has no valid digests", error_code="bad_digests")
        if size is None or size < 0:
            raise errors.PermanentError("the row has no file_size", error_code="bad_digests")
        ext = path.suffix[1:] if path is not None else ""
        return cls(path, sha256, md5, size, ext if valid_ext(ext) else "bin")

    def expected(self, uploaded: s3.Uploaded | None = None) -> checksums.Expected:
        """What an object of these bytes must hold (when `uploaded` in parts: what they predict)."""
        if uploaded is None:
            return checksums.Expected(self.size, self.sha256, self.md5)
        return checksums.Expected(
            self.size, self.sha256, self.md5, uploaded.composite_sha256, uploaded.multipart_etag
        )


def local_of(row: Row, store: Store) -> Local:
    """The row's local file and digests; PermanentError when the row cannot be archived."""
    if not row.local_file_path and not row.archive_url:
        raise errors.PermanentError(
            "the row has no local file to archive", error_code="local_file_missing"
        )
    path = Path(row.local_file_path) if row.local_file_path else None
    if path is not None:
        try:
            store.relative(path)
        except ValueError:
            raise errors.PermanentError(
                f"{path} is not inside the store {store.root}",
                error_code="local_file_outside_store",
            ) from None
    return Local.checked(path, row.sha256_sum or "", row.md5_sum, row.file_size)


class Health:
    """Tells a row's own trouble from S3's, pauses the stage for the latter, and says so once."""

    def __init__(
        self, base: float, cap: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._base, self._cap, self._clock = base, cap, clock
        self._pause = base
        self._resume_at = 0.0
        self.failures = 0
        self.problem: str | None = None

    def ok(self) -> None:
        """S3 answered as it should."""
        if self.problem is not None:
            log.warning("archive_access_restored", previous=self.problem)
            self.problem = None
        elif self.failures >= OUTAGE_AFTER:
            log.warning("archive_endpoint_back", failures=self.failures)
        self.failures = 0
        self._pause = self._base

    def refused(self, exc: s3errors.S3Error) -> errors.StagePausedError:
        """Credentials, permissions, bucket or region: loud, once while it lasts, then pause."""
        if self.problem is None:
            self.problem = exc.error_code
            log.error(
                "archive_access_denied",
                error_code=exc.error_code,
                error=str(exc),
                hint="check archive.bucket, archive.region, archive.endpoint_url and the AWS"
                " credentials in the environment; no row fails meanwhile",
            )
        return self._paused(exc)

    def unavailable(self, exc: s3errors.S3UnavailableError) -> errors.StageError:
        """A 5xx, throttling or connection failure: the row retries, or the stage pauses."""
        self.failures += 1
        if self.failures < OUTAGE_AFTER:
            return errors.TransientError(
                str(exc), error_code=exc.error_code, retry_after=exc.retry_after
            )
        if self.failures == OUTAGE_AFTER:
            log.error("archive_endpoint_down", error_code=exc.error_code, error=str(exc))
        return self._paused(exc)

    def _paused(self, exc: s3errors.S3Error) -> errors.StagePausedError:
        now = self._clock()
        if now < self._resume_at:
            # Another row hit the same wall: keep the pause already running as it is.
            remaining = max(self._resume_at - now - 0.05, 0.0)
            return errors.StagePausedError(str(exc), error_code=exc.error_code, pause_for=remaining)
        seconds, self._pause = self._pause, min(self._pause * 2, self._cap)
        self._resume_at = now + seconds
        return errors.StagePausedError(str(exc), error_code=exc.error_code, pause_for=seconds)


# How an object was proven (`verified_by`): the upload's own answer (a PUT's, or a
# CompleteMultipartUpload's), a HEAD after it, or the object read back and hashed.
BY_ANSWER = "put_response"
BY_HEAD = "head"
BY_REREAD = "reread"


@dataclass(frozen=True)
class Archived:
    key: str
    outcome: str  # uploaded, replaced (a wrong object was overwritten), already_present
    # The evidence: checksum_sha256, composite_sha256, etag_md5, multipart_etag, metadata_sha256,
    # reread_sha256 (checksums.Verdict.how).
    verified: str
    verified_by: str  # BY_ANSWER, BY_HEAD or BY_REREAD
    etag: str
    checksum_sha256: str | None
    parts: int
    part_size: int | None


class Archiver:
    """Uploads one row's file and proves the object holds its bytes."""

    def __init__(
        self,
        config: ArchiveConfig,
        client: s3.S3,
        store: Store,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._s3 = client
        self._store = store
        self._template = objectkeys.parse(config.key_template)
        self._now = now
        self.health = Health(config.outage_pause, config.outage_pause_max)

    async def check_access(self) -> None:
        """At start: say at once (never fail) if the bucket cannot be used."""
        try:
            await self._s3.check_bucket()
        except s3errors.S3UnavailableError as exc:
            log.warning("archive_endpoint_unreachable", error=str(exc))
        except s3errors.S3Error as exc:
            self.health.refused(exc)
        else:
            log.info("archive_ready", bucket=self._s3.bucket)

    async def abort_stray_uploads(self) -> list[str]:
        """Abort multipart uploads under the key template's prefix older than a day: a process
        killed mid-upload leaves its parts stored (and billed) until they are aborted, and no
        upload of ours, on any host, runs that long. Said in the log; never fatal."""
        older_than = self._now() - STRAY_UPLOAD_AGE
        try:
            keys = await self._s3.abort_stale_uploads(self._template.prefix, older_than)
        except s3errors.S3Error as exc:
            log.warning("stray_uploads_unchecked", error=str(exc))
            return []
        if keys:
            log.warning("stray_uploads_aborted", uploads=len(keys), keys=keys[:20])
        return keys

    async def process(self, row: Row) -> Result:
        started = time.monotonic()
        local = local_of(row, self._store)
        key = self.key_for(row, local)
        try:
            done, gone = await self.upload(local, key)
        except s3errors.S3UnavailableError as exc:
            raise self.health.unavailable(exc) from None
        except s3errors.S3AccessError as exc:
            raise self.health.refused(exc) from None
        except s3errors.S3RejectedError as exc:
            self.health.ok()  # S3 answered: it is this request it refuses
            raise errors.PermanentError(str(exc), error_code=exc.error_code) from None
        self.health.ok()
        return self._result(local, done, gone, time.monotonic() - started)

    def key_for(self, row: Row, local: Local) -> str:
        """The row's key: where it was archived before (in this bucket), else the template's."""
        if row.archive_url:
            with contextlib.suppress(ValueError, objectkeys.UnsafeKeyError):
                bucket, key = objectkeys.parse_s3_url(row.archive_url)
                if bucket == self._s3.bucket:
                    objectkeys.check_key(key)
                    return key
        now = self._now()
        values = {
            "sha256": local.sha256,
            "md5": local.md5,
            "ext": local.ext,
            "media_id": row.media_id,
            "post_id": row.post_id,
            "platform": row.platform,
            "media_type": row.media_type,
            "year": f"{now.year:04d}",
            "month": f"{now.month:02d}",
            "day": f"{now.day:02d}",
        }
        try:
            return self._template.render(values)
        except objectkeys.UnsafeKeyError as exc:
            raise errors.PermanentError(str(exc), error_code="bad_archive_key") from None

    async def upload(self, local: Local, key: str) -> tuple[Archived, bool]:
        """Put the local file at `key` unless an intact copy is there; verify; True if the local
        file was missing (and the object already held its bytes)."""
        path = local.path
        if path is None:
            return await self._without_local_file(local, key), True
        try:
            # One trip to a thread: the size check, and a small file's bytes with it.
            data = await asyncio.to_thread(_read_small, path, local.size, self._config.part_size)
        except FileNotFoundError:
            return await self._without_local_file(local, key), True
        if data is None:
            return await self._put_large(local, path, key), False
        return await self._put_small(local, path, key, data), False

    async def _without_local_file(self, local: Local, key: str) -> Archived:
        # Evicted or deleted behind our back: fine if the archive already holds these bytes.
        info, verdict, by = await self._prove(key, local.expected())
        if info is not None and verdict.ok:
            return _archived(key, "already_present", verdict.how, by, info)
        what = f"local file {local.path} is missing" if local.path else "no local file"
        raise errors.PermanentError(
            f"{what}, and the archive does not hold its bytes", error_code="local_file_missing"
        )

    async def _put_small(self, local: Local, path: Path, key: str, data: bytearray) -> Archived:
        content_addressed = objectkeys.content_addressed(key, local.sha256)
        outcome = "uploaded"
        try:
            # If-None-Match: one request, where HEAD-then-PUT would take two for a new object.
            uploaded = await self._s3.put_bytes(
                key, data, md5=local.md5, sha256=local.sha256, if_none_match=content_addressed
            )
            if uploaded is None:
                # 412: an object is there already, and only a HEAD can say what it holds.
                info, verdict, by = await self._prove(key, local.expected())
                if info is not None and verdict.ok:
                    return _archived(key, "already_present", verdict.how, by, info)
                log.warning("archive_object_replaced", key=key, problem=verdict.how)
                outcome = "replaced"
                uploaded = await self._s3.put_bytes(
                    key, data, md5=local.md5, sha256=local.sha256, if_none_match=False
                )
                assert uploaded is not None
        except s3errors.S3BadDigestError as exc:
            raise await self._blame(local, path, exc) from None
        finally:
            del data
        return await self._verified(local, path, key, outcome, uploaded)

    async def _put_large(self, local: Local, path: Path, key: str) -> Archived:
        if objectkeys.content_addressed(key, local.sha256):
            info, verdict, by = await self._prove(key, local.expected())
            if info is not None and verdict.ok:
                return _archived(key, "already_present", verdict.how, by, info)
            if info is not None:
                log.warning("archive_object_replaced", key=key, problem=verdict.how)
        try:
            uploaded = await self._s3.put_file_multipart(
                key, path, size=local.size, sha256=local.sha256
            )
        except checksums.DigestMismatchError as exc:
            raise errors.PermanentError(str(exc), error_code="local_file_corrupt") from None
        except s3errors.S3BadDigestError as exc:
            raise await self._blame(local, path, exc) from None
        return await self._verified(local, path, key, "uploaded", uploaded)

    async def _blame(
        self, local: Local, path: Path, exc: s3errors.S3Error | errors.StageError
    ) -> errors.StageError:
        """S3 got (or a server that checks nothing stored) bytes that do not match the row's
        digests: is our file damaged, or the wire?"""
        size, sha256 = await asyncio.to_thread(hash_file, path)
        if (size, sha256) != (local.size, local.sha256):
            return errors.PermanentError(
                f"{path} no longer hashes to its recorded SHA-256",
                error_code="local_file_corrupt",
            )
        return errors.TransientError(str(exc), error_code=exc.error_code)

    async def _verified(
        self, local: Local, path: Path, key: str, outcome: str, uploaded: s3.Uploaded
    ) -> Archived:
        """Prove the object just written holds our bytes: by the upload's answer where it can,
        else by a HEAD (and a read back if the HEAD cannot decide); TransientError if not."""
        expected = local.expected(uploaded)
        answered = checksums.proven_by_answer(
            expected, uploaded.checksum_sha256, uploaded.etag, etag_is_md5=self._s3.etag_is_md5
        )
        if answered.ok:
            return Archived(
                key, outcome, answered.how, BY_ANSWER, uploaded.etag, uploaded.checksum_sha256,
                uploaded.parts, uploaded.part_size,
            )  # fmt: skip
        if uploaded.checksum_sha256:
            # S3 would have refused bytes not matching our checksum: an answer echoing another
            # one is a server (or something between) to distrust, not a proof.
            log.warning("archive_answer_unproven", key=key, problem=answered.how)
        info, verdict, by = await self._prove(key, expected)
        if info is None:
            raise errors.TransientError(
                f"{key} is not there right after its upload", error_code="archive_verify_failed"
            )
        if not verdict.ok:
            raise await self._blame(
                local,
                path,
                errors.TransientError(
                    f"{key} does not match what was uploaded: {verdict.how}",
                    error_code="archive_verify_failed",
                ),
            )
        return Archived(
            key, outcome, verdict.how, by, info.etag, info.checksum_sha256,
            uploaded.parts, uploaded.part_size,
        )  # fmt: skip

    async def _prove(
        self, key: str, expected: checksums.Expected
    ) -> tuple[s3.ObjectInfo | None, checksums.Verdict, str]:
        """HEAD the object and judge it; where no checksum it carries can decide (SSE-KMS and
        no checksums, a multipart object we did not upload), read it back and hash it. The
        HEAD's answer, the verdict and how it was reached (BY_HEAD or BY_REREAD)."""
        info, verdict = await self._s3.check(key, expected)
        if info is None or verdict.how != checksums.UNVERIFIABLE:
            return info, verdict, BY_HEAD
        read = await self._s3.hash_object(key)
        if read is None:
            return None, checksums.Verdict(False, "missing"), BY_REREAD
        if read != (expected.size, expected.sha256):
            return info, checksums.Verdict(False, "the bytes read back differ"), BY_REREAD
        return info, checksums.Verdict(True, "reread_sha256"), BY_REREAD

    def _result(self, local: Local, done: Archived, gone: bool, seconds: float) -> Result:
        record = archive_record(self._s3.bucket, done)
        if done.outcome != "already_present":
            metrics.ARCHIVE_UPLOADED_BYTES.inc(local.size)
        details: dict[str, Any] = {
            "bucket": self._s3.bucket,
            "key": done.key,
            "size": local.size,
            "verified": done.verified,
            "verified_by": done.verified_by,
            "outcome": done.outcome,
            "uploaded": done.outcome != "already_present",
            "parts": done.parts,
            "seconds": round(seconds, 3),
        }
        columns: dict[str, Any] = {"archive_url": objectkeys.s3_url(self._s3.bucket, done.key)}
        if gone:
            details["local_file"] = "missing"
            columns |= {"local_file_path": None, "hosted_url": None}
        return Result(columns=columns, metadata={"archive": record}, details=details)


def archive_record(bucket: str, done: Archived) -> dict[str, Any]:
    """The row's `metadata.archive`: where the object is, what S3 says of it, how it was proven."""
    return {
        "bucket": bucket,
        "key": done.key,
        "etag": done.etag,
        "checksum_sha256": done.checksum_sha256,
        "parts": done.parts,
        "part_size": done.part_size,
        "verified": done.verified,
        "verified_by": done.verified_by,
    }


def _archived(key: str, outcome: str, how: str, by: str, info: s3.ObjectInfo) -> Archived:
    parts = int(info.etag.rpartition("-")[2]) if info.multipart and "-" in info.etag else 1
    return Archived(key, outcome, how, by, info.etag, info.checksum_sha256, parts, None)


def _read_small(path: Path, size: int, part_size: int) -> bytearray | None:
    """A file of up to `part_size` bytes read whole, None for a larger one (runs in a thread);
    PermanentError when its size is not the row's."""
    data = None
    if path.is_dir():
        raise errors.PermanentError(f"{path} is a directory", error_code="local_file_corrupt")
    with open(path, "rb") as handle:
        found = os.fstat(handle.fileno()).st_size
        if found == size and size <= part_size:
            # Into a bytearray, which S3.put_bytes sends as it is; a byte more than expected
            # shows a file still growing.
            data = bytearray(size + 1)
            found = handle.readinto(data)
            del data[found:]
    if found != size:
        raise errors.PermanentError(
            f"{path} is {found} bytes; its row says {size}", error_code="local_file_corrupt"
        )
    return data
