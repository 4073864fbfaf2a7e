"""`mediad verify`: re-hash every local file against its row, check every archived object (HEAD
checksums, or with `deep` a download and re-hash), and with `repair` mend each bad copy from one
proven good: a missing or corrupt local file from its object, a missing or wrong object from its
local file. Nothing is restored from bytes whose SHA-256 is not the row's.

Work goes by SHA-256 (the identity of the bytes), so a file shared by many rows is hashed once
and any verified copy of the same bytes can mend another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from mediad import errors, queries
from mediad.stages import archive
from mediad.storage import checksums, objectkeys, s3, s3errors
from mediad.storage.local import READ_CHUNK, Store, TempFile, hash_file

log = structlog.get_logger(__name__)

_PAGE = 100
_GROUPS_AT_ONCE = 8
_HASHES_AT_ONCE = 2


@dataclass
class Damage:
    """One bad copy: a local path or an s3:// URL, what is wrong, and the rows that use it."""

    kind: str
    where: str
    media_ids: list[str]
    detail: str = ""
    repaired: bool = False


@dataclass
class Report:
    local_checked: int = 0
    objects_checked: int = 0
    deep: bool = False
    # Objects that have no checksum we can compare without downloading (see --deep).
    unverifiable: int = 0
    # Rows whose local path is outside this host's store (another host's files).
    other_store: int = 0
    restored: int = 0  # rows relinked to bytes that were already local again
    derivatives_checked: int = 0  # derived files re-hashed (commands/derive.py)
    damage: list[Damage] = field(default_factory=list)

    @property
    def remaining(self) -> list[Damage]:
        return [d for d in self.damage if not d.repaired]

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """{kind: (found, repaired)}."""
        found = Counter(d.kind for d in self.damage)
        fixed = Counter(d.kind for d in self.damage if d.repaired)
        return {kind: (found[kind], fixed[kind]) for kind in sorted(found)}

    def as_json(self) -> dict[str, Any]:
        return {
            "local_checked": self.local_checked,
            "objects_checked": self.objects_checked,
            "deep": self.deep,
            "unverifiable": self.unverifiable,
            "other_store": self.other_store,
            "restored": self.restored,
            "derivatives_checked": self.derivatives_checked,
            "problems": {k: {"found": f, "repaired": r} for k, (f, r) in self.by_kind().items()},
            "remaining": [vars(d) for d in self.remaining],
        }


@dataclass(frozen=True)
class Progress:
    groups_done: int
    groups_total: int
    local_checked: int
    objects_checked: int


@dataclass
class _Group:
    sha256: str
    md5: str | None
    size: int
    paths: dict[str, list[str]] = field(default_factory=dict)  # local path -> media_ids
    objects: dict[str, list[str]] = field(default_factory=dict)  # s3 URL -> media_ids
    checksums: dict[str, str | None] = field(default_factory=dict)  # s3 URL -> recorded checksum
    failed_archive: set[str] = field(default_factory=set)  # media_ids with archive_status failed
    without_local: list[str] = field(default_factory=list)  # media_ids with no local path


class Scrubber:
    """One verify run."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        store: Store,
        client: s3.S3 | None,
        archiver: archive.Archiver | None,
        *,
        repair: bool,
        deep: bool,
        by: str = "mediad verify",
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self._pool = pool
        self._store = store
        self._s3 = client
        self._archiver = archiver
        self._repair = repair
        self._deep = deep
        self._by = by
        self._progress = progress
        self._hashing = asyncio.Semaphore(_HASHES_AT_ONCE)
        self._sql = queries.plain()
        self.report = Report(deep=deep)

    async def run(self) -> Report:
        total = await self._pool.fetchval(self._sql["scrub_count"], self._store.node)
        done = 0
        after = ""
        while True:
            page = await self._pool.fetch(self._sql["scrub_groups"], after, _PAGE, self._store.node)
            if not page:
                break
            after = page[-1]["sha256_sum"]
            groups = [self._group(record) for record in page]
            for start in range(0, len(groups), _GROUPS_AT_ONCE):
                batch = groups[start : start + _GROUPS_AT_ONCE]
                await asyncio.gather(*(self._check(g) for g in batch))
                done += len(batch)
                if self._progress is not None:
                    self._progress(
                        Progress(
                            done, total, self.report.local_checked, self.report.objects_checked
                        )
                    )
        return self.report

    def _group(self, record: asyncpg.Record) -> _Group:
        group = _Group(record["sha256_sum"], record["md5_sum"], record["file_size"])
        for row in record["rows"]:
            media_id = row["media_id"]
            path = row["local_file_path"]
            if path is None:
                group.without_local.append(media_id)
            elif self._inside(path):
                group.paths.setdefault(path, []).append(media_id)
            else:
                self.report.other_store += 1
            url = row["archive_url"]
            if url is not None and row["archive_status"] in ("completed", "failed"):
                group.objects.setdefault(url, []).append(media_id)
                group.checksums.setdefault(url, row["checksum_sha256"])
                if row["archive_status"] == "failed":
                    group.failed_archive.add(media_id)
        return group

    def _inside(self, path: str) -> bool:
        try:
            self._store.relative(Path(path))
        except ValueError:
            return False
        return True

    async def _check(self, group: _Group) -> None:
        local = {path: await self._check_local(group, path) for path in group.paths}
        objects: dict[str, str | None] = {}
        for url in group.objects:
            objects[url] = await self._check_object(group, url)
        good_paths = [p for p, problem in local.items() if problem is None]
        good_urls = [u for u, fault in objects.items() if fault is None]
        for path, problem in local.items():
            if problem is None:
                continue
            damage = Damage(problem[0], path, group.paths[path], problem[1])
            self.report.damage.append(damage)
            if self._repair and await self._repair_local(group, path, good_urls, good_paths):
                damage.repaired = True
                good_paths.append(path)
            else:
                await self._pool.execute(
                    self._sql["local_file_damaged"], damage.media_ids, path, damage.kind, self._by
                )
        for url, fault in objects.items():
            if fault is None:
                if self._repair:
                    await self._reinstate(group, url)
                continue
            kind = "archive_missing" if fault == "missing" else "archive_corrupt"
            damage = Damage(kind, url, group.objects[url], fault)
            self.report.damage.append(damage)
            if self._repair and await self._repair_object(group, url, good_paths):
                damage.repaired = True
            else:
                await self._pool.execute(
                    self._sql["archive_damaged"], [url], kind, f"{url}: {fault}", self._by
                )
        if self._repair and good_paths and group.without_local:
            # The same bytes are local again (a later download): the evicted rows get them back.
            path = good_paths[0]
            await self._relink(group.without_local, path, "local_file_restored", "local copy")
            self.report.restored += len(group.without_local)

    async def _check_local(self, group: _Group, path: str) -> tuple[str, str] | None:
        """None when the file hashes to the row's SHA-256; else (problem, detail)."""
        async with self._hashing:
            try:
                size, sha256 = await asyncio.to_thread(hash_file, Path(path))
            except FileNotFoundError:
                result: tuple[str, str] | None = ("local_missing", "no such file")
            except OSError as exc:
                result = ("local_unreadable", str(exc))
            else:
                if size != group.size:
                    result = ("local_corrupt", f"{size} bytes, expected {group.size}")
                elif sha256 != group.sha256:
                    result = ("local_corrupt", "SHA-256 differs")
                else:
                    result = None
        self.report.local_checked += 1
        return result

    async def _check_object(self, group: _Group, url: str) -> str | None:
        """None when the object holds the bytes; else what is wrong ("missing", ...)."""
        if self._s3 is None:
            raise s3errors.S3AccessError(
                "archived objects cannot be checked: the archive is not configured here",
                error_code="s3_misconfigured",
            )
        self.report.objects_checked += 1
        try:
            bucket, key = objectkeys.parse_s3_url(url)
        except ValueError:
            return "not an s3:// URL"
        if self._deep:
            hashed = await self._s3.hash_object(key, bucket)
            if hashed is None:
                return "missing"
            if hashed != (group.size, group.sha256):
                return f"downloaded {hashed[0]} bytes that do not hash to the row's SHA-256"
            return None
        expected = checksums.Expected(group.size, group.sha256, group.md5, group.checksums.get(url))
        _, verdict = await self._s3.check(key, expected, bucket)
        if verdict.how == "unverifiable":
            self.report.unverifiable += 1
            return None
        return None if verdict.ok else verdict.how

    async def _repair_local(
        self, group: _Group, path: str, good_urls: list[str], good_paths: list[str]
    ) -> bool:
        target = Path(path)
        placement = self._placement(target, group.sha256)
        if placement is None:
            log.warning("repair_refused", path=path, reason="not a content-addressed store path")
            return False
        for url in good_urls:
            if await self._restore_from_object(group, target, placement, url):
                await self._relink(group.paths[path], path, "local_file_repaired", url)
                return True
        for source in good_paths:
            if source != path and await self._restore_from_file(group, target, placement, source):
                await self._relink(group.paths[path], path, "local_file_repaired", source)
                return True
        return False

    def _placement(self, path: Path, sha256: str) -> tuple[str, str] | None:
        """(kind, ext) when `path` is exactly where the store keeps these bytes."""
        kind = self._store.relative(path).split("/", 1)[0]
        ext = path.suffix[1:]
        try:
            expected = self._store.path_for(kind, sha256, ext)
        except ValueError:
            return None
        return (kind, ext) if expected == path else None

    async def _restore_from_object(
        self, group: _Group, target: Path, placement: tuple[str, str], url: str
    ) -> bool:
        assert self._s3 is not None
        bucket, key = objectkeys.parse_s3_url(url)
        with self._store.open_temp() as tmp:

            async def sink(chunk: bytes) -> None:
                await asyncio.to_thread(tmp.write, chunk)

            got = await self._s3.download(key, sink, bucket)
            return got is not None and await self._commit(group, target, placement, tmp, url)

    async def _restore_from_file(
        self, group: _Group, target: Path, placement: tuple[str, str], source: str
    ) -> bool:
        with self._store.open_temp() as tmp:

            def copy() -> None:
                with open(source, "rb") as handle:
                    while chunk := handle.read(READ_CHUNK):
                        tmp.write(chunk)

            try:
                await asyncio.to_thread(copy)
            except OSError:
                return False
            return await self._commit(group, target, placement, tmp, source)

    async def _commit(
        self, group: _Group, target: Path, placement: tuple[str, str], tmp: TempFile, source: str
    ) -> bool:
        if (tmp.size, tmp.sha256) != (group.size, group.sha256):
            log.warning("repair_refused", path=str(target), source=source, reason="digest differs")
            return False
        # A damaged file of the right size would pass for an intact twin: move it out first.
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, target)
        await asyncio.to_thread(self._store.commit, tmp, *placement)
        log.info("local_file_repaired", path=str(target), source=source)
        return True

    async def _relink(self, media_ids: list[str], path: str, event: str, source: str) -> None:
        hosted = self._store.hosted_url(Path(path))
        await self._pool.execute(
            self._sql["local_file_relinked"],
            media_ids,
            path,
            hosted,
            event,
            self._store.relative(Path(path)),
            source,
            self._by,
        )

    async def _repair_object(self, group: _Group, url: str, good_paths: list[str]) -> bool:
        if self._archiver is None or self._s3 is None or not good_paths:
            return False
        bucket, key = objectkeys.parse_s3_url(url)
        if bucket != self._s3.bucket:
            log.warning("repair_refused", archive_url=url, reason="not the configured bucket")
            return False
        path = good_paths[0]
        try:
            local = archive.Local.checked(Path(path), group.sha256, group.md5, group.size)
            done, _ = await self._archiver.upload(local, key)
        except (errors.StageError, s3errors.S3RejectedError, s3errors.S3BadDigestError) as exc:
            log.warning("repair_failed", archive_url=url, error=str(exc))
            return False
        record = archive.archive_record(bucket, done)
        details = {"archive_url": url, "source": self._store.relative(Path(path))}
        details |= {"outcome": done.outcome, "verified": done.verified, "by": self._by}
        await self._pool.execute(
            self._sql["archive_repaired"], group.objects[url], url, record, details
        )
        log.info("archive_repaired", archive_url=url, outcome=done.outcome)
        return True

    async def _reinstate(self, group: _Group, url: str) -> None:
        """An intact object whose rows were marked damaged (a passing fault): archived again."""
        rows = [m for m in group.objects[url] if m in group.failed_archive]
        if rows:
            details = {"archive_url": url, "outcome": "intact", "by": self._by}
            await self._pool.execute(self._sql["archive_repaired"], rows, url, None, details)


async def verify(
    pool: asyncpg.Pool[Any],
    store: Store,
    client: s3.S3 | None,
    archiver: archive.Archiver | None,
    *,
    repair: bool = False,
    deep: bool = False,
    by: str = "mediad verify",
    progress: Callable[[Progress], None] | None = None,
) -> Report:
    """Check (and with `repair`, mend) every local file and archived object; see the module."""
    scrubber = Scrubber(
        pool, store, client, archiver, repair=repair, deep=deep, by=by, progress=progress
    )
    return await scrubber.run()
