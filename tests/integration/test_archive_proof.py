"""What proves an archived object, against an S3 whose answers lie (a proxy in front of SeaweedFS
rewriting their headers): an answer that proves nothing falls back to a HEAD, a HEAD that cannot
decide to reading the object back, and an object shown to differ is never completed."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp import web
from multidict import CIMultiDict

from mediad.storage import checksums, s3, s3errors
from tests import media
from tests.archive_support import archive_config, downloaded_rows, events, run_archive, store_of
from tests.s3proxy import lying_s3
from tests.s3server import SeaweedFS
from tests.support import row

OTHER_SHA256 = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()


def object_requests(methods: list[tuple[str, str]]) -> list[str]:
    """The methods of the requests for objects (not the bucket: the stage's start-up checks)."""
    return [method for method, path in methods if path.count("/") > 1]


async def test_a_put_answered_with_another_checksum_falls_back_to_a_head(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """A PUT whose answer echoes a SHA-256 other than ours proves nothing: the HEAD after it
    does, and the row records that it was verified by the HEAD."""

    def rewrite(method: str, path: str, headers: CIMultiDict[str]) -> None:
        if method == "PUT" and "x-amz-checksum-sha256" in headers:
            headers["x-amz-checksum-sha256"] = OTHER_SHA256

    async with lying_s3(s3_server, rewrite) as proxy:
        cfg = archive_config(proxy, tmp_path / "store")
        [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=21)])
        with structlog.testing.capture_logs() as logs:
            await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert r["archive_status"] == "completed"
    [event] = events(r, "archive_completed")
    assert (event["details"]["verified"], event["details"]["verified_by"]) == (
        "checksum_sha256", "head",
    )  # fmt: skip
    assert r["metadata"]["archive"]["verified_by"] == "head"
    assert object_requests(proxy.methods) == ["PUT", "HEAD"]
    assert [e["event"] for e in logs].count("archive_answer_unproven") == 1


async def test_an_object_whose_head_disagrees_is_never_completed(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """When the PUT's answer and the HEAD both say the object holds other bytes, the row is not
    completed: it fails archive_verify_failed once its attempts are spent."""

    def rewrite(method: str, path: str, headers: CIMultiDict[str]) -> None:
        if method in ("PUT", "HEAD") and "x-amz-checksum-sha256" in headers:
            headers["x-amz-checksum-sha256"] = OTHER_SHA256

    async with lying_s3(s3_server, rewrite) as proxy:
        cfg = archive_config(proxy, tmp_path / "store", archive_max_attempts="1")
        [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=22)])
        await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert (r["archive_status"], r["error_code"]) == ("failed", "archive_verify_failed")
    assert "SHA-256 checksum differs" in r["last_error"]
    assert not events(r, "archive_completed")
    assert r["archived_at"] is None
    assert "archive" not in (r["metadata"] or {})


async def test_an_object_no_checksum_can_prove_is_read_back(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """An S3 that echoes no checksum, whose ETags are no MD5s and that keeps no metadata (as with
    some encryption schemes): the object is read back and hashed before the row completes."""

    def rewrite(method: str, path: str, headers: CIMultiDict[str]) -> None:
        if method in ("PUT", "HEAD"):
            headers.popall("x-amz-checksum-sha256", None)
            headers.popall("x-amz-meta-mediad-sha256", None)
            if "ETag" in headers:
                headers["ETag"] = '"opaque"'

    async with lying_s3(s3_server, rewrite) as proxy:
        cfg = archive_config(proxy, tmp_path / "store")
        [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=23)])
        await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert r["archive_status"] == "completed"
    [event] = events(r, "archive_completed")
    assert (event["details"]["verified"], event["details"]["verified_by"]) == (
        "reread_sha256", "reread",
    )  # fmt: skip
    assert object_requests(proxy.methods) == ["PUT", "HEAD", "GET"]


async def test_a_put_answered_slow_down_is_sent_again_and_a_refused_one_is_not(
    s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """The small-object PUT retries what may pass a moment later (503 SlowDown) and is proven by
    the answer of the attempt that passed; what S3 refused for good (400) is not sent again."""
    answers = [
        web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>"),
        web.Response(status=400, text="<Error><Code>InvalidArgument</Code></Error>"),
    ]

    def refuse(method: str, path: str) -> web.Response | None:
        return answers.pop(0) if method == "PUT" and answers else None

    data = bytearray(media.jpeg(seed=24))
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    async with lying_s3(s3_server, refuse=refuse) as proxy:
        cfg = archive_config(proxy, tmp_path / "store")
        async with s3.open_client(cfg.archive) as client:
            with pytest.raises(s3errors.S3RejectedError, match="InvalidArgument"):
                await client.put_bytes("k/1", data, md5=md5, sha256=sha, if_none_match=True)
            assert [m for m, _ in proxy.methods] == ["PUT", "PUT"]
            answers.append(web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>"))
            uploaded = await client.put_bytes("k/1", data, md5=md5, sha256=sha, if_none_match=True)
    assert [m for m, _ in proxy.methods] == ["PUT", "PUT", "PUT", "PUT"]
    assert uploaded is not None
    expected = checksums.Expected(len(data), sha, md5)
    assert checksums.proven_by_answer(
        expected, uploaded.checksum_sha256, uploaded.etag, etag_is_md5=True
    ).ok
