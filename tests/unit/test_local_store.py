"""Unit tests of the content-addressed store, on real files under tmp_path."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mediad import errors
from mediad.storage import local as store
from tests import support

SHA = hashlib.sha256(b"x").hexdigest()
REPO = Path(__file__).resolve().parents[2]


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def store_bytes(
    s: store.Store, data: bytes, kind: str = "images", ext: str = "jpg"
) -> store.StoredFile:
    with s.open_temp() as tmp:
        tmp.write(data)
        return s.commit(tmp, kind, ext)


@pytest.fixture
def s(tmp_path: Path) -> store.Store:
    return store.Store(tmp_path / "media", "https://media.example.org/files/")


def test_path_layout_and_hosted_url(s: store.Store, tmp_path: Path) -> None:
    """Paths are {root}/{kind}/{sha[:2]}/{sha}.{ext}; hosted_url joins the base with one slash."""
    path = s.path_for("videos", SHA, "mp4")
    assert path == tmp_path / "media" / "videos" / SHA[:2] / f"{SHA}.mp4"
    assert s.relative(path) == f"videos/{SHA[:2]}/{SHA}.mp4"
    assert s.hosted_url(path) == f"https://media.example.org/files/videos/{SHA[:2]}/{SHA}.mp4"
    for kind in ("images", "videos", "audio", "documents"):
        assert s.path_for(kind, SHA, "bin").parent.parent.name == kind


@pytest.mark.parametrize("base", ["", None])
def test_hosted_url_none_without_base(tmp_path: Path, base: str | None) -> None:
    """An empty or missing public base URL gives no hosted_url."""
    s = store.Store(tmp_path, base)
    assert s.hosted_url(s.path_for("images", SHA, "png")) is None


@pytest.mark.parametrize(
    ("kind", "sha256", "ext"),
    [
        ("image", SHA, "jpg"),
        ("../images", SHA, "jpg"),
        ("images/..", SHA, "jpg"),
        ("", SHA, "jpg"),
        (".tmp", SHA, "jpg"),
        ("images", SHA.upper(), "jpg"),
        ("images", SHA[:63], "jpg"),
        ("images", SHA + "0", "jpg"),
        ("images", "../" + SHA[3:], "jpg"),
        ("images", SHA[:62] + "zz", "jpg"),
        ("images", SHA + "\n", "jpg"),
        ("images", SHA, "../jpg"),
        ("images", SHA, "JPG"),
        ("images", SHA, ""),
        ("images", SHA, "jpegjpegj"),
        ("images", SHA, "jp/g"),
        ("images", SHA, "jpg\n"),
    ],
)
def test_path_for_refuses_bad_input(s: store.Store, kind: str, sha256: str, ext: str) -> None:
    """A bad kind, a non-lowercase-hex or wrong-length digest, or a bad extension is refused."""
    with pytest.raises(ValueError):
        s.path_for(kind, sha256, ext)


def test_relative_refuses_paths_outside_root(s: store.Store) -> None:
    """relative() refuses the root itself and anything that climbs out of it."""
    for path in (s.root, s.root / ".." / "elsewhere", Path("/etc/passwd"), s.root.parent):
        with pytest.raises(ValueError):
            s.relative(path)


def test_write_and_commit_hash_and_store_the_bytes(s: store.Store) -> None:
    """Chunks written are stored intact, with the same MD5, SHA-256 and size as hashlib gives."""
    chunks: list[bytes | bytearray | memoryview] = [
        b"\x00" * 70_000,
        bytearray(b"hello"),
        memoryview(os.urandom(3 * 1024 * 1024)),
    ]
    data = b"".join(bytes(c) for c in chunks)
    with s.open_temp() as tmp:
        assert tmp.path.parent == s.temp_dir
        for chunk in chunks:
            tmp.write(chunk)
        assert tmp.size == len(data)
        stored = s.commit(tmp, "documents", "pdf")
    sha = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == sha
    assert stored.md5 == hashlib.md5(data).hexdigest()
    assert stored.size == len(data)
    assert stored.existed is False
    assert stored.path == s.path_for("documents", sha, "pdf")
    assert stored.relative_path == f"documents/{sha[:2]}/{sha}.pdf"
    assert stored.hosted_url == f"https://media.example.org/files/{stored.relative_path}"
    assert stored.path.read_bytes() == data
    assert files_under(s.root) == [stored.relative_path]


def test_permissions_follow_the_daemon_umask(s: store.Store) -> None:
    """Under the service's UMask 0027, files are 0640 and directories 0750."""
    old = os.umask(0o027)
    try:
        stored = store_bytes(s, b"perm")
    finally:
        os.umask(old)
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o640
    for directory in (s.temp_dir, stored.path.parent, stored.path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750


def test_same_bytes_twice_is_one_file(s: store.Store) -> None:
    """Committing identical bytes again keeps a single file and reports existed=True."""
    first = store_bytes(s, b"same bytes")
    inode = first.path.stat().st_ino
    second = store_bytes(s, b"same bytes")
    assert second.existed is True
    assert second.path == first.path
    assert (second.sha256, second.md5, second.size) == (first.sha256, first.md5, first.size)
    assert first.path.stat().st_ino == inode
    assert first.path.stat().st_nlink == 1
    assert files_under(s.root) == [first.relative_path]


def test_damaged_existing_copy_is_replaced(s: store.Store) -> None:
    """An existing file of the wrong size under the digest's name is replaced by the good bytes."""
    data = b"the real content"
    final = s.path_for("images", hashlib.sha256(data).hexdigest(), "png")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"the real")
    stored = store_bytes(s, data, ext="png")
    assert stored.existed is False
    assert final.read_bytes() == data
    assert files_under(s.root) == [stored.relative_path]


def test_exception_inside_context_removes_temp(s: store.Store) -> None:
    """An exception inside the context leaves nothing in .tmp nor in the final folders."""
    with pytest.raises(RuntimeError), s.open_temp() as tmp:
        tmp.write(b"partial body")
        assert tmp.path.exists()
        raise RuntimeError("connection reset")
    assert not tmp.path.exists()
    assert files_under(s.root) == []


def test_leaving_context_without_commit_removes_temp(s: store.Store) -> None:
    """A temp file never committed is deleted when its context exits normally."""
    with s.open_temp() as tmp:
        tmp.write(b"abandoned")
    assert files_under(s.root) == []
    with pytest.raises(ValueError):
        tmp.write(b"more")


async def test_async_with_and_threaded_writes(s: store.Store) -> None:
    """TempFile works in `async with`, takes writes from a worker thread and cleans up on error."""
    data = os.urandom(2 * 1024 * 1024)
    async with s.open_temp() as tmp:
        await asyncio.to_thread(tmp.write, data)
        stored = await asyncio.to_thread(s.commit, tmp, "videos", "mp4")
    assert stored.path.read_bytes() == data
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(TimeoutError):
        async with s.open_temp() as tmp:
            await asyncio.to_thread(tmp.write, b"slow origin")
            raise TimeoutError
    assert files_under(s.temp_dir) == []


def test_commit_after_discard_is_refused(s: store.Store) -> None:
    """A discarded temp file cannot be committed, and nothing reaches the final folders."""
    tmp = s.open_temp()
    tmp.write(b"gone")
    tmp.discard()
    tmp.discard()
    with pytest.raises(ValueError):
        s.commit(tmp, "images", "jpg")
    assert files_under(s.root) == []


def test_clean_temp_removes_leftovers_but_not_live_files(s: store.Store) -> None:
    """clean_temp deletes abandoned temp files and spares one still open by a writer."""
    assert s.clean_temp() == 0
    live = s.open_temp()
    live.write(b"in flight")
    for name in ("a.part", "b.part"):
        (s.temp_dir / name).write_bytes(b"left over")
    (s.temp_dir / "dangling").symlink_to(s.root / "nowhere")
    assert s.clean_temp() == 3
    assert files_under(s.temp_dir) == [live.path.name]
    assert s.commit(live, "audio", "mp3").path.read_bytes() == b"in flight"


def test_clean_temp_after_kill_mid_download(s: store.Store) -> None:
    """A temp file left by a process SIGKILLed mid-write is removed by clean_temp at restart."""
    code = (
        "import os, signal, sys\n"
        "from mediad.storage import local as store\n"
        "tmp = store.Store(sys.argv[1], '').open_temp()\n"
        "tmp.write(b'x' * 100_000)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, str(s.root)], env=env, check=False)
    assert proc.returncode == -9
    assert len(files_under(s.temp_dir)) == 1
    assert s.clean_temp() == 1
    assert files_under(s.root) == []


def _fail_for(
    real: Callable[..., object], err: int, only_fd: Callable[[], int] | None
) -> Callable[..., object]:
    def fake(*args: object) -> object:
        if only_fd is None or args[0] == only_fd():
            raise OSError(err, os.strerror(err))
        return real(*args)

    return fake


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("where", ["write", "fsync", "link"])
def test_disk_full_is_a_pause_and_leaves_no_temp(
    s: store.Store, monkeypatch: pytest.MonkeyPatch, where: str, err: int
) -> None:
    """ENOSPC/EDQUOT at write, fsync or link raise DiskFullError and themselves remove the temp."""
    tmp = s.open_temp()
    fd = tmp.fileno()
    # Only the temp file's descriptor fails, so pytest's own writes are untouched.
    only_fd = None if where == "link" else (lambda: fd)
    monkeypatch.setattr(os, where, _fail_for(getattr(os, where), err, only_fd))
    with pytest.raises(store.DiskFullError) as caught:
        tmp.write(b"body")
        s.commit(tmp, "images", "jpg")
    monkeypatch.undo()
    assert isinstance(caught.value, errors.StagePausedError)
    assert caught.value.error_code == "disk_full"
    assert caught.value.__cause__ is not None
    assert files_under(s.root) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with support.tiny_tmpfs(tmp_path, "64k") as point:
        yield point


def test_real_full_filesystem_raises_disk_full(tiny_tmpfs: Path) -> None:
    """On a real 64 KiB tmpfs, an oversize body raises DiskFullError and frees its space."""
    s = store.Store(tiny_tmpfs / "media", "")
    tmp = s.open_temp()
    with pytest.raises(store.DiskFullError):
        for _ in range(16):
            tmp.write(b"\xff" * 64 * 1024)
    assert files_under(s.root) == []
    stored = store_bytes(s, b"small enough")
    assert stored.path.read_bytes() == b"small enough"


def test_short_writes_are_completed(s: store.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """When os.write accepts only part of a chunk, the rest is written before write() returns."""
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[:1000])

    data = os.urandom(10_000)
    with s.open_temp() as tmp:
        monkeypatch.setattr(os, "write", short_write)
        tmp.write(data)
        monkeypatch.undo()
        stored = s.commit(tmp, "images", "gif")
    assert stored.path.read_bytes() == data
    assert stored.size == len(data)


def test_link_unsupported_falls_back_to_rename(
    s: store.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a filesystem without hard links, commit renames and still deduplicates."""
    monkeypatch.setattr(os, "link", _fail_for(os.link, errno.EPERM, None))
    first = store_bytes(s, b"no links here")
    second = store_bytes(s, b"no links here")
    assert (first.existed, second.existed) == (False, True)
    assert first.path.read_bytes() == b"no links here"
    assert files_under(s.root) == [first.relative_path]


def test_hash_file_detects_corruption(s: store.Store) -> None:
    """hash_file() gives the stored bytes' size and SHA-256, another SHA-256 after a flipped
    byte, and FileNotFoundError for a missing file."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    stored = store_bytes(s, data, kind="videos", ext="webm")
    assert store.hash_file(stored.path) == (stored.size, stored.sha256)
    corrupted = bytearray(data)
    corrupted[2 * 1024 * 1024] ^= 0x01
    stored.path.write_bytes(corrupted)
    assert store.hash_file(stored.path) == (stored.size, hashlib.sha256(corrupted).hexdigest())
    assert store.hash_file(stored.path)[1] != stored.sha256
    stored.path.unlink()
    with pytest.raises(FileNotFoundError):
        store.hash_file(stored.path)


def test_a_folder_removed_by_hand_is_made_again(s: store.Store) -> None:
    """The store remembers the folders it made; one removed since is made again, not an error."""
    first = store_bytes(s, b"one")
    shard = first.path.parent
    first.path.unlink()
    shard.rmdir()
    (s.temp_dir).rmdir()

    again = store_bytes(s, b"one")

    assert again.path == first.path and again.path.read_bytes() == b"one"
    assert not again.existed
    assert files_under(s.root) == [first.relative_path]


def test_relative_paths_are_checked_as_strings(s: store.Store, tmp_path: Path) -> None:
    """relative() accepts str and Path, and refuses the root itself and its look-alike siblings."""
    path = s.path_for("images", SHA, "jpg")

    assert s.relative(str(path)) == s.relative(path) == f"images/{SHA[:2]}/{SHA}.jpg"
    for outside in (s.root, tmp_path / "media-other" / "x.jpg", s.root / ".." / "x.jpg"):
        with pytest.raises(ValueError, match="not inside"):
            s.relative(outside)
