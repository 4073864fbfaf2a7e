"""The derive stage: a downloaded image (or a video's poster frame) becomes its thumbnail and
preview (WebP), its optimized JPEG and its public copy, under `{root}/derived/{kind}/`.

source (the local file, or the archived object once it was evicted) ▸ the same bytes derived
before with this plan? reuse them ▸ header ▸ derive (one decoder task, admitted by its pixel
bytes) ▸ hash, fsync and rename each file into place ▸ record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog

from mediad import errors, queries, stages
from mediad.config import DeriveConfig
from mediad.media import decoders, derive_plan
from mediad.resources import Resources
from mediad.singleflight import SingleFlight
from mediad.stage import Result, Row, Stage
from mediad.storage import originals
from mediad.storage.local import Store, StoredFile, TempFile

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Each kind's file extension; the public copy keeps its original's.
EXTENSIONS = {"thumbnail": "webp", "preview": "webp", "optimized": "jpg"}
PUBLIC_EXTENSIONS = {
    "image/jpeg": "jpg", "image/png": "png", "image/apng": "png", "image/webp": "webp",
}  # fmt: skip
_THREADS = 8
# Hex digits of a derivative's own SHA-256 in its URL's `?v=`: 64 bits, for the URL to change
# whenever the bytes at its path do.
URL_VERSION_DIGITS = 16


@contextlib.asynccontextmanager
async def open_stage(resources: Resources) -> AsyncIterator[Stage]:
    """The derive stage on the daemon's store, decoder workers and (for evicted originals) S3."""
    config = resources.config
    deriver = Deriver(
        config.derive,
        resources.store,
        await resources.decoders(),
        resources.pool,
        archive=resources.s3 if config.archive.bucket else None,
        executor=resources.executor("mediad-derive", _THREADS),
        storage_node=config.storage.node_name,
    )
    yield Stage.configured(stages.DERIVE, deriver.process, config)


@dataclass(frozen=True)
class Plan:
    """What is made of each picture: the sizes and switches of [derive]."""

    thumbnail_px: int
    preview_px: int
    optimized: bool
    optimized_px: int
    optimized_quality: int
    public_copy: bool

    @classmethod
    def of(cls, config: DeriveConfig) -> Plan:
        return cls(
            config.thumbnail_px,
            config.preview_px,
            config.optimized,
            config.optimized_px,
            config.optimized_quality,
            config.public_copy,
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def kind_of(mime_type: str | None) -> str | None:
    """ "image" or "video" for what the stage derives; None for audio, documents and the rest."""
    major = (mime_type or "").partition("/")[0]
    return major if major in ("image", "video") else None


@dataclass
class Made:
    """One source's derivatives: what the task reported and the files now in the store."""

    files: dict[str, StoredFile]
    report: dict[str, Any]
    source: str  # local or archive


class Deriver:
    """Derives one row, once per distinct bytes and plan."""

    def __init__(
        self,
        config: DeriveConfig,
        store: Store,
        decoder_pool: decoders.DecoderPool,
        pool: asyncpg.Pool[Any],
        *,
        archive: Callable[[], Awaitable[Any]] | None = None,
        executor: concurrent.futures.Executor | None = None,
        storage_node: str | None = None,
    ) -> None:
        self._plan = Plan.of(config)
        self._store = store
        self._decoders = decoder_pool
        self._pool = pool
        self._archive = archive
        self._executor = executor
        self._node = storage_node
        self._sql = queries.plain()
        # Remembered a minute: a row's derivatives are found by the next row with the same bytes
        # in the database, once its outcome is written, which the pool may hold a moment.
        self._in_flight: SingleFlight[str, Made] = SingleFlight(remember=60.0)

    async def process(self, row: Row) -> Result:
        started = time.monotonic()
        kind, sha256 = _checked(row)
        reused = await self._reuse(row, sha256)
        if reused is not None:
            return reused
        # The same bytes being derived for another row right now: the same files.
        made, shared = await self._in_flight.run(sha256, lambda: self._derive(row, kind, sha256))
        return self._result(row, made, started, shared=shared)

    async def rederive(self, row: Row) -> Result:
        """Derive the row's bytes again, whatever another row recorded (`verify --repair`)."""
        started = time.monotonic()
        kind, sha256 = _checked(row)
        return self._result(row, await self._derive(row, kind, sha256), started)

    # --- one source -----------------------------------------------------------------------

    def _outputs(self, row: Row, kind: str) -> list[dict[str, Any]]:
        plan = self._plan
        outputs: list[dict[str, Any]] = [
            {"kind": "thumbnail", "format": "webp", "px": plan.thumbnail_px},
            {"kind": "preview", "format": "webp", "px": plan.preview_px},
        ]
        if kind == "image" and plan.optimized:
            outputs.append(
                {
                    "kind": "optimized",
                    "format": "jpeg",
                    "px": plan.optimized_px,
                    "quality": plan.optimized_quality,
                    "keep_if_smaller_than": row.file_size,
                }
            )
        return outputs

    def _wants_public(self, row: Row, kind: str) -> bool:
        return kind == "image" and self._plan.public_copy

    async def _derive(self, row: Row, kind: str, sha256: str) -> Made:
        outputs = self._outputs(row, kind)
        public = self._wants_public(row, kind)
        temps: dict[str, TempFile] = {}
        try:
            async with self._source(row, sha256) as (path, source):
                for output in outputs:
                    temps[output["kind"]] = await self._in_thread(self._store.open_temp)
                    output["path"] = str(temps[output["kind"]].path)
                if public and row.mime_type in PUBLIC_EXTENSIONS:
                    temps["public"] = await self._in_thread(self._store.open_temp)
                payload = {
                    "path": str(path),
                    "mime_type": row.mime_type,
                    "outputs": outputs,
                    "public": {"path": str(temps["public"].path)} if "public" in temps else None,
                }
                cost = await self._cost(row, kind, payload, max(o["px"] for o in outputs))
                report = await self._run(row, payload, cost)
            files = await self._commit(row, sha256, temps, report)
        finally:
            for tmp in temps.values():
                if not tmp.committed:
                    await self._in_thread(tmp.discard)
        if public and row.mime_type not in PUBLIC_EXTENSIONS:
            report["public"] = (
                {"original": True}
                if row.mime_type in derive_plan.NOTHING_TO_STRIP
                else {"not_made": f"no public copy is made of {row.mime_type}"}
            )
        return Made(files, report, source)

    async def _cost(self, row: Row, kind: str, payload: dict[str, Any], longest: int) -> int:
        """The decode's memory, for the decoder pool's admission: a picture's from its header
        and the shrink-on-load factor, a video's from its frame size."""
        if kind == "video":
            frame = (row.width or 1920) * (row.height or 1080) * 3
            return decoders.VIDEO_DECODE_BYTES + 2 * frame
        header = await self._decoders.run(
            "derive_header", {"path": payload["path"], "mime_type": row.mime_type}
        )
        return derive_plan.decode_cost(header, row.mime_type or "", longest)

    async def _run(self, row: Row, payload: dict[str, Any], cost: int) -> dict[str, Any]:
        try:
            return await self._decoders.run("derive", payload, cost_bytes=cost)
        except (decoders.DecoderCrashedError, decoders.DecodeTimeoutError) as exc:
            if row.error_code == exc.error_code:
                # Once may be the machine; twice in a row is the file: fail it, never loop.
                raise errors.PermanentError(
                    f"{exc}, on two attempts in a row: the file is not tried again",
                    error_code=exc.error_code,
                ) from None
            raise

    async def _commit(
        self, row: Row, sha256: str, temps: dict[str, TempFile], report: dict[str, Any]
    ) -> dict[str, StoredFile]:
        """Hash, fsync and rename what was made into place; remove what this plan no longer
        makes (an optimized copy not kept, a kind switched off), so no stale file serves."""
        files: dict[str, StoredFile] = {}
        made = report.get("outputs", {})
        for kind, ext in EXTENSIONS.items():
            outcome = made.get(kind)
            if kind in temps and isinstance(outcome, dict) and "not_kept" not in outcome:
                files[kind] = await self._in_thread(
                    self._store.commit_written, temps[kind], kind, sha256, ext
                )
            else:
                await self._in_thread(self._store.remove_derived, kind, sha256, ext)
        public_ext = PUBLIC_EXTENSIONS.get(row.mime_type or "")
        if public_ext is not None:
            if "public" in temps and "stripped" in report.get("public", {}):
                files["public"] = await self._in_thread(
                    self._store.commit_written, temps["public"], "public", sha256, public_ext
                )
            else:
                await self._in_thread(self._store.remove_derived, "public", sha256, public_ext)
        return files

    @contextlib.asynccontextmanager
    async def _source(self, row: Row, sha256: str) -> AsyncIterator[tuple[Path, str]]:
        """The row's bytes on disk: its local file, or its archived object fetched into a temp
        file and proven to be the row's SHA-256 (nothing else is derived)."""
        local = row.local_file_path or ""
        exists: bool = bool(local) and await self._in_thread(_is_file, local)
        if exists:
            try:
                self._store.relative(local)
            except ValueError:
                raise errors.PermanentError(
                    f"{local} is not inside the store {self._store.root}",
                    error_code="local_file_outside_store",
                ) from None
            yield Path(local), "local"
            return
        if not row.archive_url or self._archive is None:
            raise errors.PermanentError(
                "the local file is gone and there is no archived copy to read",
                error_code="local_file_missing",
            )
        tmp = await originals.fetch(await self._archive(), self._store, row.archive_url, sha256)
        try:
            yield tmp.path, "archive"
        finally:
            await self._in_thread(tmp.discard)

    # --- reuse ------------------------------------------------------------------------------

    async def _reuse(self, row: Row, sha256: str) -> Result | None:
        """Another row's derivatives of the same bytes, made with this plan and still on disk."""
        started = time.monotonic()
        record = await self._pool.fetchrow(
            self._sql["derive_reuse"], sha256, row.media_id, self._plan.as_json(), self._node
        )
        if record is None:
            return None
        recorded: dict[str, Any] = record["derivatives"] or {}
        files = {k: v for k, v in recorded.items() if not v.get("original")}
        if not await self._in_thread(_intact, self._store, files):
            return None
        derived = dict(files)
        if "public" in recorded and "public" not in files:
            derived["public"] = _original_entry(row)
        details = {
            "kinds": sorted(derived),
            "seconds": round(time.monotonic() - started, 3),
            "reused_from": record["media_id"],
        }
        return Result(
            columns={"thumbnail_url": _url(derived, "thumbnail"), "derivatives": derived},
            metadata={"derive": record["derive"]},
            details=details,
        )

    # --- the result -------------------------------------------------------------------------

    def _result(self, row: Row, made: Made, started: float, *, shared: bool = False) -> Result:
        derived: dict[str, Any] = {}
        outputs = made.report.get("outputs", {})
        for kind, stored in made.files.items():
            described = outputs.get(kind, {})
            derived[kind] = {
                "path": str(stored.path),
                "url": versioned_url(stored.hosted_url, stored.sha256),
                "width": described.get("width", row.width),
                "height": described.get("height", row.height),
                "file_size": stored.size,
                "sha256": stored.sha256,
                "mime_type": described.get("mime_type", row.mime_type),
            }
        public = made.report.get("public", {})
        if public.get("original"):
            derived["public"] = _original_entry(row)
        not_kept = {k: v["not_kept"] for k, v in outputs.items() if "not_kept" in v}
        if "not_made" in public:
            not_kept["public"] = public["not_made"]
        details: dict[str, Any] = {
            "kinds": sorted(derived),
            "seconds": round(time.monotonic() - started, 3),
            "source": made.source,
        }
        if not_kept:
            details["not_kept"] = not_kept
        if public.get("stripped"):
            details["public_stripped"] = public["stripped"]
        if shared:
            details["shared"] = True
        record = {
            "plan": self._plan.as_json(),
            "source": made.report.get("source", {}),
            "not_kept": not_kept,
            "public_stripped": public.get("stripped", []),
        }
        return Result(
            columns={"thumbnail_url": _url(derived, "thumbnail"), "derivatives": derived},
            metadata={"derive": record},
            details=details,
        )

    def _in_thread(self, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


def _checked(row: Row) -> tuple[str, str]:
    """The row's kind (image, video) and SHA-256; SkipRowError for what is not derived."""
    kind = kind_of(row.mime_type)
    if kind is None:
        raise errors.SkipRowError(f"{row.mime_type or row.media_type} has no derivatives")
    sha256 = (row.sha256_sum or "").lower()
    if not _SHA256.fullmatch(sha256):
        raise errors.PermanentError("the row has no valid SHA-256", error_code="bad_digests")
    return kind, sha256


def versioned_url(hosted_url: str | None, sha256: str) -> str | None:
    """A derivative's URL: its hosted URL with `?v=` and the start of its own SHA-256.

    A derivative's path is named by its source's SHA-256, and nginx serves it as immutable;
    but its bytes change when it is made again at another size (`mediad derive`), and a cache
    would serve the old ones forever. The version makes that a new URL; nginx ignores it.
    """
    if hosted_url is None:
        return None
    return f"{hosted_url}?v={sha256[:URL_VERSION_DIGITS]}"


def _url(derived: dict[str, Any], kind: str) -> str | None:
    entry = derived.get(kind)
    return entry.get("url") if isinstance(entry, dict) else None


def _original_entry(row: Row) -> dict[str, Any]:
    """The public "copy" of a file with nothing to strip: the original itself."""
    return {
        "path": row.local_file_path,
        "url": row.hosted_url,
        "width": row.width,
        "height": row.height,
        "file_size": row.file_size,
        "sha256": row.sha256_sum,
        "mime_type": row.mime_type,
        "original": True,
    }


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def _intact(store: Store, files: dict[str, Any]) -> bool:
    """Whether every recorded file is in this store at its recorded size (blocking)."""
    for entry in files.values():
        try:
            store.relative(entry["path"])
            if os.stat(entry["path"]).st_size != entry["file_size"]:
                return False
        except (KeyError, TypeError, ValueError, OSError):
            return False
    return True
