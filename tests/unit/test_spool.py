"""The Spool a body streams into: memory while small, a temp file of the real store beyond."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import pytest

from mediad.net.fetch import Spool
from mediad.storage.local import Store, TempFile


class Opener:
    """Opens temp files of `store` in a thread, as the download stage does, and counts them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.opened = 0

    async def __call__(self) -> TempFile:
        self.opened += 1
        return await asyncio.to_thread(self.store.open_temp)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "media", None)


def temp_files(store: Store) -> list[Path]:
    return list(store.temp_dir.iterdir()) if store.temp_dir.exists() else []


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_small_body_stays_in_memory(store: Store) -> None:
    """Below the limit no temp file is ever created: the body comes back as bytes."""
    data = random.Random(1).randbytes(100_000)
    opener = Opener(store)

    async with Spool(opener, memory_limit=256_000) as spool:
        for chunk in chunks(data, 16_384):
            await spool.write(chunk)
        body = await spool.finish()

    assert body == data
    assert opener.opened == 0
    assert temp_files(store) == []


async def test_a_big_body_spills_to_one_temp_file(store: Store) -> None:
    """Past the limit the body goes to one temp file, hashed as written; the caller owns it."""
    data = random.Random(2).randbytes(1_000_000)
    opener = Opener(store)

    async with Spool(opener, memory_limit=300_000) as spool:
        for chunk in chunks(data, 65_536):
            await spool.write(chunk)
        body = await spool.finish()

    assert isinstance(body, TempFile)
    with body:
        assert opener.opened == 1
        assert body.size == len(data)
        assert body.path.read_bytes() == data
        assert body.sha256 == hashlib.sha256(data).hexdigest()
        assert body.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert temp_files(store) == []


async def test_a_failed_transfer_leaves_no_temp_file(store: Store) -> None:
    """An error after the spill deletes the temp file the caller never received."""
    opener = Opener(store)

    with pytest.raises(ConnectionResetError):
        async with Spool(opener, memory_limit=100_000) as spool:
            for chunk in chunks(random.Random(3).randbytes(500_000), 65_536):
                await spool.write(chunk)
            assert len(temp_files(store)) == 1
            raise ConnectionResetError("the origin went away")

    assert opener.opened == 1
    assert temp_files(store) == []


class RecordingTemp(TempFile):
    """A real temp file of the store that remembers the size of every write."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.writes: list[int] = []

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.writes.append(len(chunk))
        super().write(chunk)


async def test_once_spilled_the_body_is_written_in_blocks(store: Store) -> None:
    """After the spill, the temp file takes the body a block at a time, not chunk by chunk."""
    data = random.Random(4).randbytes(700_000)
    opened: list[RecordingTemp] = []

    async def open_temp() -> TempFile:
        store.temp_dir.mkdir(parents=True, exist_ok=True)
        opened.append(await asyncio.to_thread(RecordingTemp, store.temp_dir))
        return opened[-1]

    async with Spool(open_temp, memory_limit=100_000, block=250_000) as spool:
        for chunk in chunks(data, 50_000):
            await spool.write(chunk)
        body = await spool.finish()

    assert body is opened[0]
    with body:
        assert body.path.read_bytes() == data
    assert opened[0].writes == [100_000, 250_000, 250_000, 100_000]
