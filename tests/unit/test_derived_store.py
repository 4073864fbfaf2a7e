"""The store's derivatives: their paths, and committing files a decoder worker wrote."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mediad.storage import local as store

SOURCE = hashlib.sha256(b"the original").hexdigest()


@pytest.fixture
def s(tmp_path: Path) -> store.Store:
    return store.Store(tmp_path / "media", "https://media.example.org")


def written(s: store.Store, data: bytes) -> store.TempFile:
    """A temp file whose bytes were written by someone else (as a worker does), by path."""
    tmp = s.open_temp()
    Path(tmp.path).write_bytes(data)
    return tmp


def test_derived_paths_are_named_by_the_source(s: store.Store) -> None:
    """`derived/{kind}/{sha256[:2]}/{sha256}.{ext}` below the root, for the four kinds only."""
    path = s.derived_path("thumbnail", SOURCE, "webp")
    assert path == s.root / "derived" / "thumbnail" / SOURCE[:2] / f"{SOURCE}.webp"
    for bad in (("originals", SOURCE, "webp"), ("preview", "../" * 3, "webp"),
                ("public", SOURCE, "../x"), ("images", SOURCE, "jpg")):  # fmt: skip
        with pytest.raises(ValueError):
            s.derived_path(*bad)


def test_commit_written_hashes_what_is_on_disk_and_replaces_an_older_size(s: store.Store) -> None:
    """The recorded digest is the file's own; a second commit (another size) replaces the
    first atomically; no temp file is left."""
    first = s.commit_written(written(s, b"small thumbnail"), "thumbnail", SOURCE, "webp")
    assert first.sha256 == hashlib.sha256(b"small thumbnail").hexdigest()
    assert first.size == len(b"small thumbnail")
    assert (
        first.hosted_url
        == f"https://media.example.org/derived/thumbnail/{SOURCE[:2]}/{SOURCE}.webp"
    )
    second = s.commit_written(written(s, b"a larger thumbnail"), "thumbnail", SOURCE, "webp")
    assert second.path == first.path
    assert first.path.read_bytes() == b"a larger thumbnail"
    assert os.listdir(s.temp_dir) == []
    assert oct(first.path.stat().st_mode & 0o777) == oct(store.FILE_MODE & ~_umask())


def test_a_failed_commit_leaves_no_temp_file(s: store.Store) -> None:
    """A bad kind is refused before anything moves, and the temp file is gone."""
    tmp = written(s, b"x")
    with pytest.raises(ValueError):
        s.commit_written(tmp, "images", SOURCE, "webp")
    assert os.listdir(s.temp_dir) == []


def test_remove_derived_says_whether_there_was_a_file(s: store.Store) -> None:
    """A derivative no longer made is deleted; removing one that is not there is fine."""
    s.commit_written(written(s, b"x"), "optimized", SOURCE, "jpg")
    assert s.remove_derived("optimized", SOURCE, "jpg") is True
    assert s.remove_derived("optimized", SOURCE, "jpg") is False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
