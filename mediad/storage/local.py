"""The content-addressed local store: every on-disk path, temp files, atomic commit, re-hashing.

Files live at `{root}/{kind}/{sha256[:2]}/{sha256}.{ext}`; bodies are streamed into `{root}/.tmp/`
(same filesystem) and hashed in the same pass, then fsynced and linked into place. Derivatives
live at `{root}/derived/{kind}/{sha256[:2]}/{sha256}.{ext}`, named by their source's SHA-256.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from mediad import errors
from mediad.storage import checksums

if TYPE_CHECKING:
    from mediad.config import StorageConfig

KINDS = frozenset({"images", "videos", "audio", "documents"})
# Derivatives live under {root}/derived/{kind}/, named by the SHA-256 of their source.
DERIVED_DIR_NAME = "derived"
DERIVED_KINDS = frozenset({"thumbnail", "preview", "optimized", "public"})
TEMP_DIR_NAME = ".tmp"
FILE_MODE = 0o640
DIR_MODE = 0o750
READ_CHUNK = 1024 * 1024

_EXT_RE = re.compile(r"[a-z0-9]{1,8}")
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Filesystems that cannot hard-link report one of these; commit then falls back to rename.
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


class DiskFullError(errors.StagePausedError):
    """The store's filesystem is out of space or quota: pause downloads, fail no row."""

    error_code = "disk_full"

    def __init__(self, message: str, *, pause_for: float = 30.0) -> None:
        super().__init__(message, error_code="disk_full", pause_for=pause_for)


def valid_ext(ext: str) -> bool:
    """Whether `ext` may end a stored file's name: 1-8 of [a-z0-9]."""
    return _EXT_RE.fullmatch(ext) is not None


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in _DISK_FULL_ERRNOS


@dataclass(frozen=True)
class _Placed:
    """Where a commit put a temp file's bytes, and what they are."""

    final: Path
    sha256: str
    md5: str
    size: int
    existed: bool


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file committed to the store; `existed` is true when identical bytes were already there."""

    path: Path
    relative_path: str
    hosted_url: str | None
    sha256: str
    md5: str
    size: int
    existed: bool


class TempFile:
    """A temp file in the store, hashed (MD5, SHA-256) as it is written; deleted unless committed.

    Calls may come from any thread, but not concurrently.
    """

    def __init__(self, directory: Path) -> None:
        self._fd, self._path = _open_locked_temp(directory)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._committed = False

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def committed(self) -> bool:
        return self._committed

    def fileno(self) -> int:
        """The open descriptor (write-only); ValueError once committed or discarded."""
        self._check_open()
        return self._fd

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append `chunk`, updating size and both digests; any OSError discards the file."""
        self._check_open()
        data = memoryview(chunk).cast("B")
        remaining = data
        try:
            while remaining:
                written = os.write(self._fd, remaining)
                remaining = remaining[written:]
        except OSError as exc:
            # A partly written temp file is worthless and, on a full disk, holds the space we lack.
            self.discard()
            if _is_disk_full(exc):
                raise DiskFullError(f"disk full writing {self._path}: {exc.strerror}") from exc
            raise
        self._md5.update(data)
        self._sha256.update(data)
        self._size += data.nbytes

    def discard(self) -> None:
        """Delete the temp file and close it; idempotent, never raises."""
        if self._fd < 0:
            return
        # Unlink before closing: the flock must cover the unlink so clean_temp elsewhere never
        # sees the file unlocked. Errors are swallowed because discard runs while another error
        # propagates, and clean_temp removes any survivor at the next start.
        with suppress(OSError):
            os.unlink(self._path)
        self._close()

    def _check_open(self) -> None:
        if self._fd < 0:
            state = "committed" if self._committed else "discarded"
            raise ValueError(f"temp file {self._path} is already {state}")

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        with suppress(OSError):
            os.close(fd)

    def _mark_committed(self) -> None:
        self._committed = True
        self._close()

    def __enter__(self) -> TempFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.discard()

    async def __aenter__(self) -> TempFile:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _open_locked_temp(directory: Path) -> tuple[int, Path]:
    """Create a fresh temp file and hold an exclusive flock on it while it lives."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        path = directory / f"{secrets.token_hex(16)}.part"
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            if _is_disk_full(exc):
                raise DiskFullError(f"disk full creating {path}: {exc.strerror}") from exc
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another process's clean_temp may have unlinked the file between open and flock;
            # then the name no longer leads to our inode and we start over.
            mine = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd, path
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(directory: Path) -> None:
    """Create one directory (mode 0o750 under the umask), making its entry durable."""
    try:
        os.mkdir(directory, DIR_MODE)
    except FileExistsError:
        return
    _fsync_dir(directory.parent)


class Store:
    """The one place on-disk paths are computed; refuses any path that would leave the root."""

    def __init__(
        self, root: Path | str, public_base_url: str | None, node: str | None = None
    ) -> None:
        # Absolute once, so a later chdir cannot move the store.
        self.root = Path(os.path.abspath(root))
        self.temp_dir = self.root / TEMP_DIR_NAME
        # The root as a string prefix of every path below it ("/" stays "/").
        self._prefix = os.path.join(str(self.root), "")
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        # Folders this Store made or found: a commit skips their mkdir and its failing syscall
        # and exception. Folders are never removed by mediad; one removed by hand is made again.
        self._made: set[Path] = set()
        # The name rows record for this store (storage.node): commands that touch local files
        # take only the rows stored here.
        self.node = node or socket.gethostname()

    @classmethod
    def from_config(cls, storage: StorageConfig) -> Store:
        """The store `storage` names, its root's symlinks resolved so every process and
        command spells its paths the same way (blocking: call it off the event loop)."""
        return cls(Path(storage.root).resolve(), storage.public_base_url or None, storage.node_name)

    def path_for(self, kind: str, sha256: str, ext: str) -> Path:
        """`{root}/{kind}/{sha256[:2]}/{sha256}.{ext}`; ValueError on a bad kind, digest or ext."""
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}; expected one of {sorted(KINDS)}")
        if not checksums.is_sha256(sha256):
            raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
        if not valid_ext(ext):
            raise ValueError(f"bad file extension {ext!r}; expected 1-8 of [a-z0-9]")
        path = f"{self._prefix}{kind}/{sha256[:2]}/{sha256}.{ext}"
        # Redundant after the checks above, kept so a future loosening cannot escape the root.
        # Lexical, not resolve(): an operator may symlink a kind folder onto another disk.
        return Path(self._check_inside(path))

    def verify(self, path: Path, sha256: str) -> bool:
        """Whether `path` exists and hashes to `sha256` (blocking): what restore and derive
        check before a file they wrote or found is trusted."""
        try:
            return hash_file(path)[1] == sha256.lower()
        except FileNotFoundError:
            return False

    def derived_path(self, kind: str, source_sha256: str, ext: str) -> Path:
        """`{root}/derived/{kind}/{sha256[:2]}/{sha256}.{ext}`, named by the source's SHA-256;
        ValueError on a bad kind, digest or ext."""
        if kind not in DERIVED_KINDS:
            raise ValueError(f"unknown derivative {kind!r}; one of {sorted(DERIVED_KINDS)}")
        if not checksums.is_sha256(source_sha256):
            raise ValueError(f"not a lowercase hex SHA-256: {source_sha256!r}")
        if not valid_ext(ext):
            raise ValueError(f"bad file extension {ext!r}; expected 1-8 of [a-z0-9]")
        path = f"{self._prefix}{DERIVED_DIR_NAME}/{kind}/{source_sha256[:2]}/{source_sha256}.{ext}"
        return Path(self._check_inside(path))

    def relative(self, path: Path | str) -> str:
        """The path below the root, with forward slashes; ValueError if `path` is not below it."""
        return self._check_inside(path)[len(self._prefix) :]

    def hosted_url(self, path: Path) -> str | None:
        """The public URL of a stored file, or None when no public base URL is configured."""
        relative = self.relative(path)
        if self.public_base_url is None:
            return None
        return f"{self.public_base_url}/{relative}"

    def _check_inside(self, path: Path | str) -> str:
        """`path` absolute and normalised, if it lies strictly below the root."""
        # String operations, not pathlib: this runs for every stored file, and pathlib's
        # parents and relative_to cost tens of microseconds of GIL-holding Python each.
        absolute = os.path.normpath(os.path.abspath(path))
        if not absolute.startswith(self._prefix) or len(absolute) <= len(self._prefix):
            raise ValueError(f"path {path} is not inside the store root {self.root}")
        return absolute

    def _ensure_temp_dir(self) -> None:
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _mkdir(self.temp_dir)

    def clean_temp(self) -> int:
        """Delete temp files left by a killed process; returns how many were removed.

        Temp files still locked by a live writer (this or another process) are left alone.
        """
        try:
            entries = list(os.scandir(self.temp_dir))
        except FileNotFoundError:
            return 0
        removed = 0
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if entry.is_file(follow_symlinks=False):
                if _remove_if_unlocked(path):
                    removed += 1
                continue
            # Symlinks, fifos, sockets: nothing of ours, and nothing to lock.
            with suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
        return removed

    def open_temp(self) -> TempFile:
        """A new temp file in `{root}/.tmp/`; use it as a context manager so failures leave none."""
        try:
            if self.temp_dir not in self._made:
                self._ensure_temp_dir()
                self._made.add(self.temp_dir)
            try:
                return TempFile(self.temp_dir)
            except FileNotFoundError:
                # Someone removed the temp folder since we made it: make it again, once.
                self._made.discard(self.temp_dir)
                self._ensure_temp_dir()
                self._made.add(self.temp_dir)
                return TempFile(self.temp_dir)
        except OSError as exc:
            if _is_disk_full(exc):
                raise DiskFullError(f"disk full creating {self.temp_dir}: {exc.strerror}") from exc
            raise

    def commit(self, tmp: TempFile, kind: str, ext: str) -> StoredFile:
        """Fsync `tmp` and move it to its content address, reusing an existing copy of those bytes.

        On any failure the temp file is deleted; ENOSPC/EDQUOT surface as DiskFullError.
        """

        def place() -> _Placed:
            final = self.path_for(kind, tmp.sha256, ext)
            existed = self._place(tmp, final)
            return _Placed(final, tmp.sha256, tmp.md5, tmp.size, existed)

        return self._commit_by(tmp, place)

    def _commit_by(self, tmp: TempFile, place: Callable[[], _Placed]) -> StoredFile:
        """The temp file put in place by `place`, as a StoredFile. On any failure the temp file
        is deleted; ENOSPC/EDQUOT surface as DiskFullError."""
        try:
            tmp._check_open()
            placed = place()
        except OSError as exc:
            tmp.discard()
            if _is_disk_full(exc):
                raise DiskFullError(f"disk full committing {tmp.path}: {exc.strerror}") from exc
            raise
        except BaseException:
            tmp.discard()
            raise
        tmp._mark_committed()
        relative = self.relative(placed.final)
        return StoredFile(
            path=placed.final,
            relative_path=relative,
            hosted_url=f"{self.public_base_url}/{relative}" if self.public_base_url else None,
            sha256=placed.sha256,
            md5=placed.md5,
            size=placed.size,
            existed=placed.existed,
        )

    def _place(self, tmp: TempFile, final: Path) -> bool:
        """Put the temp file's inode at `final`; True when an intact copy was already there."""
        os.fsync(tmp.fileno())
        self._make_folders(final.parent)
        # link() rather than rename(): it fails atomically when the name exists, so two
        # processes committing the same bytes cannot both believe they wrote it and an
        # existing file is never replaced behind a reader's back. The temp fd (and its flock)
        # stays open until the temp name is gone, so clean_temp elsewhere cannot race us.
        try:
            try:
                os.link(tmp.path, final)
            except FileNotFoundError:
                # A folder we made earlier was removed by hand since: make it again, once.
                self._made.discard(final.parent.parent)
                self._made.discard(final.parent)
                self._make_folders(final.parent)
                os.link(tmp.path, final)
        except FileExistsError:
            if os.stat(final).st_size != tmp.size:
                # A file named by its SHA-256 with the wrong size is damaged; ours is correct
                # by construction, so it replaces it.
                os.replace(tmp.path, final)
                _fsync_dir(final.parent)
                return False
            os.unlink(tmp.path)
            return True
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            return self._place_by_rename(tmp, final)
        _fsync_dir(final.parent)
        os.unlink(tmp.path)
        return False

    def commit_written(self, tmp: TempFile, kind: str, source_sha256: str, ext: str) -> StoredFile:
        """Put the derivative another process (a decoder worker) wrote at `tmp.path` in its place:
        hashed here (what the row records is what is on disk), fsynced, and renamed over any
        older derivative of the same source and kind (made at other sizes). On any failure the
        temp file is deleted; ENOSPC/EDQUOT surface as DiskFullError."""

        def place() -> _Placed:
            final = self.derived_path(kind, source_sha256, ext)
            size, sha256, md5 = _hash_file(tmp.path)
            os.fsync(tmp.fileno())
            derived = self.root / DERIVED_DIR_NAME
            if derived not in self._made:
                _mkdir(derived)
                self._made.add(derived)
            self._make_folders(final.parent)
            try:
                # The temp fd (and its flock) stays open until the temp name is gone.
                os.replace(tmp.path, final)
            except FileNotFoundError:
                self._made.difference_update({derived, final.parent.parent, final.parent})
                _mkdir(derived)
                self._make_folders(final.parent)
                os.replace(tmp.path, final)
            _fsync_dir(final.parent)
            return _Placed(final, sha256, md5, size, existed=False)

        return self._commit_by(tmp, place)

    def remove_derived(self, kind: str, source_sha256: str, ext: str) -> bool:
        """Delete a derivative that is no longer made (a size change, a copy not kept); True if
        there was one."""
        try:
            os.unlink(self.derived_path(kind, source_sha256, ext))
        except FileNotFoundError:
            return False
        return True

    def _make_folders(self, shard: Path) -> None:
        """`{kind}/` and `{kind}/{sha256[:2]}/`, unless this Store already made or saw them."""
        for folder in (shard.parent, shard):
            if folder not in self._made:
                _mkdir(folder)
                self._made.add(folder)

    def _place_by_rename(self, tmp: TempFile, final: Path) -> bool:
        """Fallback for filesystems without hard links; a concurrent twin may be overwritten."""
        if os.path.lexists(final) and os.stat(final).st_size == tmp.size:
            os.unlink(tmp.path)
            return True
        os.rename(tmp.path, final)
        _fsync_dir(final.parent)
        return False


def store_size(store: Store) -> int:
    """Bytes in the store's files (temp files excluded), walked on disk (runs in a thread)."""
    total = 0
    for kind in KINDS:
        try:
            prefixes = list(os.scandir(store.root / kind))
        except FileNotFoundError:
            continue
        for prefix in prefixes:
            if not prefix.is_dir(follow_symlinks=False):
                continue
            with os.scandir(prefix.path) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        with suppress(FileNotFoundError):
                            total += entry.stat(follow_symlinks=False).st_size
    return total


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB chunks (runs in a thread)."""
    digest = hashlib.sha256()
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    size = 0
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
            size += read
    return size, digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str, str]:
    """Size, SHA-256 and MD5 of the file at `path`, read in 1 MiB chunks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while read := f.readinto(buffer):
            sha256.update(view[:read])
            md5.update(view[:read])
            size += read
    return size, sha256.hexdigest(), md5.hexdigest()


def _remove_if_unlocked(path: Path) -> bool:
    """Unlink a temp file unless a live writer holds its flock; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)
