"""Memory for uploads: the part buffers multipart uploads share, and request bodies that botocore
and aiohttp send without copying them again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

SEND_CHUNK = 1024 * 1024


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


class SlicedBody:
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


def request_body(data: bytes | bytearray | memoryview) -> Any:
    """`data` as the Body of a PUT: sliced when large, else one bytearray sent in one write."""
    if len(data) > SEND_CHUNK:
        return SlicedBody(data)
    # A bytearray, never bytes: botocore wraps bytes in a BytesIO, which makes it add `Expect:
    # 100-continue` (a round trip waiting for the server's interim answer before the body
    # goes) and aiohttp copy the bytes out again 64 KiB at a time; a bytearray goes in one
    # write. Nor a memoryview: botocore cannot send one again when it retries.
    return data if isinstance(data, bytearray) else bytearray(data)
