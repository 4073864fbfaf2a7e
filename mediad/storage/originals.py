"""Originals back from the archive: an archived object downloaded into a temp file of the store,
and proven to hold the row's bytes (its SHA-256) before anything reads or links it.

The derive stage reads an evicted original this way, and `mediad restore` links the proven
copy back into the store.
"""

from __future__ import annotations

import asyncio

from mediad import errors
from mediad.storage import objectkeys, s3, s3errors
from mediad.storage.local import Store, TempFile


async def fetch(client: s3.S3, store: Store, archive_url: str, sha256: str) -> TempFile:
    """The archived object at `archive_url` in a temp file of `store` whose SHA-256 is
    `sha256`; PermanentError (archive_missing, archive_corrupt) when the archive does not hold
    those bytes, TransientError when S3 cannot answer now. The caller commits or discards it."""
    try:
        bucket, key = objectkeys.parse_s3_url(archive_url)
    except ValueError as exc:
        raise errors.PermanentError(str(exc), error_code="archive_missing") from None
    loop = asyncio.get_running_loop()
    tmp = await asyncio.to_thread(store.open_temp)
    try:

        async def sink(chunk: bytes) -> None:
            await loop.run_in_executor(None, tmp.write, chunk)

        try:
            size = await client.download(key, sink, bucket)
        except s3errors.S3Error as exc:
            raise errors.TransientError(str(exc), error_code=exc.error_code) from None
        if size is None:
            raise errors.PermanentError(
                f"the archived object {archive_url} is missing", error_code="archive_missing"
            )
        if tmp.sha256 != sha256.lower():
            raise errors.PermanentError(
                f"the archived object {archive_url} does not hash to the row's SHA-256",
                error_code="archive_corrupt",
            )
    except BaseException:
        await asyncio.to_thread(tmp.discard)
        raise
    return tmp
