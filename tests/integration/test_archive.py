"""The archive stage against real S3 servers (SeaweedFS, and moto's where any S3 must do):
uploads proven by checksums, idempotence, key templates, credentials refused, an outage in the
middle of a run, and a server whose answers prove nothing or lie."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import random
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from mediad import daemon
from mediad.stage import Row
from mediad.stages import archive
from mediad.storage import checksums, objectkeys, s3, s3shortcuts
from tests import media
from tests.archive_support import (
    archive_config,
    downloaded_rows,
    events,
    run_archive,
    store_bytes,
    store_of,
    upload_stored,
)
from tests.s3proxy import lying_s3
from tests.s3server import S3Service, SeaweedFS
from tests.support import make_config, row, wait_for


def b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def key_of(archive_url: str) -> str:
    return archive_url.removeprefix("s3://media/")


async def test_small_file_is_uploaded_and_verified(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """A JPEG is one PUT, proven by its answer echoing our SHA-256 where the server checked it
    (SeaweedFS), else by a HEAD whose ETag is our MD5 (moto), before the row completes."""
    cfg = archive_config(any_s3, tmp_path / "store")
    [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg_with_exif(seed=1)])
    await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert r["archive_status"] == "completed" and r["archived_at"] is not None
    sha = done.stored.sha256
    assert re.fullmatch(rf"s3://media/t-[0-9a-f]{{8}}/media/{sha[:2]}/{sha}\.jpg", r["archive_url"])
    [event] = events(r, "archive_completed")
    assert event["status"] == "success"
    proof = ("checksum_sha256", "put_response") if any_s3.echoes_checksums else ("etag_md5", "head")
    assert (event["details"]["verified"], event["details"]["verified_by"]) == proof
    assert (event["details"]["outcome"], event["details"]["uploaded"]) == ("uploaded", True)
    assert event["details"]["size"] == done.stored.size
    head = any_s3.client().head_object(
        Bucket="media", Key=key_of(r["archive_url"]), ChecksumMode="ENABLED"
    )
    if any_s3.echoes_checksums:
        assert head["ChecksumSHA256"] == b64(sha)
    assert head["ETag"].strip('"') == done.stored.md5
    body = any_s3.client().get_object(Bucket="media", Key=key_of(r["archive_url"]))["Body"]
    assert body.read() == done.stored.path.read_bytes()
    record = r["metadata"]["archive"]
    assert (record["verified"], record["verified_by"]) == proof


async def test_large_file_goes_in_parts_and_is_not_uploaded_again(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """A file over part_size is multipart (a SHA-256 per part), proven by the answer to its
    completion: the composite checksum (with AWS's `-N` or, as moto spells it, without), or where
    no checksum comes back, the ETag its parts' MD5s predict. Archiving it again finds the object
    and uploads nothing."""
    cfg = archive_config(any_s3, tmp_path / "store", archive_part_size="5MiB")
    big = media.image("BMP", 1500, 1300, seed=7)  # 5.85 MB of real BMP
    [done] = await downloaded_rows(pool, store_of(cfg), [(big, "images", "bmp")])
    await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert r["archive_status"] == "completed"
    [event] = events(r, "archive_completed")
    assert event["details"]["parts"] == 2
    evidence = "composite_sha256" if any_s3.echoes_checksums else "multipart_etag"
    assert (event["details"]["verified"], event["details"]["verified_by"]) == (
        evidence, "put_response",
    )  # fmt: skip
    key = key_of(r["archive_url"])
    head = any_s3.client().head_object(Bucket="media", Key=key, ChecksumMode="ENABLED")
    part = 5 * 1024 * 1024
    digests = b"".join(hashlib.sha256(big[i : i + part]).digest() for i in range(0, len(big), part))
    composite = base64.b64encode(hashlib.sha256(digests).digest()).decode()
    assert head["ChecksumSHA256"] in (composite + "-2", composite)
    md5s = b"".join(hashlib.md5(big[i : i + part]).digest() for i in range(0, len(big), part))
    assert head["ETag"].strip('"') == hashlib.md5(md5s).hexdigest() + "-2"
    assert any_s3.client().get_object(Bucket="media", Key=key)["Body"].read() == big

    await pool.execute("UPDATE post_media SET archive_status = 'not_started'")
    await run_archive(cfg, db_url)
    again = events(await row(pool, done.media_id), "archive_completed")[-1]["details"]
    assert (again["outcome"], again["uploaded"], again["verified_by"]) == (
        "already_present", False, "head",
    )  # fmt: skip
    after = any_s3.client().head_object(Bucket="media", Key=key)
    assert after["LastModified"] == head["LastModified"]


async def test_the_same_bytes_are_uploaded_once(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """Two rows with the same bytes share one content-addressed object: one upload, one
    already_present, and both rows archived at the same URL."""
    cfg = archive_config(any_s3, tmp_path / "store", archive_concurrency="1")
    data = media.png(seed=3)
    first, second = await downloaded_rows(pool, store_of(cfg), [(data, "images", "png")] * 2)
    await run_archive(cfg, db_url)
    a, b = await row(pool, first.media_id), await row(pool, second.media_id)
    assert a["archive_url"] == b["archive_url"]
    outcomes = sorted(events(x, "archive_completed")[0]["details"]["outcome"] for x in (a, b))
    assert outcomes == ["already_present", "uploaded"]


async def test_seed_001_key_template(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """`media/{year}/{month}/{media_id}.{ext}` keys each row by its media_id and the UTC month."""
    cfg = archive_config(
        any_s3,
        tmp_path / "store",
        archive_key_template="seed/media/{year}/{month}/{media_id}.{ext}",
    )
    rows = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=4)] * 2)
    before = datetime.now(UTC)
    await run_archive(cfg, db_url)
    for done in rows:
        r = await row(pool, done.media_id)
        assert r["archive_status"] == "completed"
        assert r["archive_url"] == (
            f"s3://media/seed/media/{before:%Y}/{before:%m}/{done.media_id}.jpg"
        )
        body = any_s3.client().get_object(Bucket="media", Key=key_of(r["archive_url"]))
        assert body["Body"].read() == done.stored.path.read_bytes()


async def test_wrong_credentials_pause_the_pool_and_fail_nothing(
    db_url: str,
    pool: asyncpg.Pool[Any],
    s3_server: SeaweedFS,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """A refused signature is logged once, loudly; the rows are handed back with no attempt
    spent, and they archive once the credentials are right."""
    cfg = archive_config(s3_server, tmp_path / "store")
    rows = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=s) for s in range(6)])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with structlog.testing.capture_logs() as logs:
        await run_archive(cfg, db_url)
    loud = [e for e in logs if e["event"] == "archive_access_denied"]
    assert len(loud) == 1 and loud[0]["log_level"] == "error"
    assert "not-the-secret" not in repr(logs)
    for done in rows:
        r = await row(pool, done.media_id)
        assert (r["archive_status"], r["archive_attempts"], r["error_code"]) == (
            "not_started", 0, None,
        )  # fmt: skip
    released = await pool.fetchval(
        "SELECT count(*) FROM post_media, jsonb_array_elements(ai_analysis_log) AS e"
        " WHERE e->>'event' = 'archive_released' AND e->'details'->>'reason' LIKE 's3_%'"
    )
    assert released >= 1
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    await run_archive(cfg, db_url)
    statuses = await pool.fetch("SELECT archive_status FROM post_media")
    assert {r["archive_status"] for r in statuses} == {"completed"}


async def test_seaweedfs_stopped_mid_run_fails_no_row(
    db_url: str, pool: asyncpg.Pool[Any], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """S3 goes away in the middle of a run and comes back: every row ends archived, none failed."""
    cfg = archive_config(s3_server, tmp_path / "store", archive_concurrency="2")
    rows = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=s) for s in range(16)])
    stop = asyncio.Event()
    task = asyncio.create_task(
        daemon.run(cfg, url=db_url, openers={"archive": archive.open_stage}, stop=stop)
    )
    try:
        await wait_for(lambda: _archived_at_least(pool, 3), within=30)
        await asyncio.to_thread(s3_server.stop)
        await wait_for(lambda: _trouble_seen(pool), within=30)
        await asyncio.to_thread(s3_server.start)
        await wait_for(lambda: _archived_at_least(pool, len(rows)), within=60)
    finally:
        if not s3_server.running:
            await asyncio.to_thread(s3_server.start)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    states = await pool.fetch("SELECT archive_status, error_code FROM post_media")
    assert [s["archive_status"] for s in states] == ["completed"] * len(rows)
    for done in rows:
        r = await row(pool, done.media_id)
        last = events(r, "archive_completed")[-1]["details"]
        assert last["verified"] == "checksum_sha256"
        assert not events(r, "archive_failed")
    why = await pool.fetch(
        "SELECT DISTINCT coalesce(e->'details'->>'error_code', e->'details'->>'reason') AS code"
        " FROM post_media, jsonb_array_elements(ai_analysis_log) AS e"
        " WHERE e->>'event' IN ('archive_released', 'retry_scheduled')"
    )
    assert {w["code"] for w in why} <= {"s3_unavailable"}


async def _archived_at_least(pool: asyncpg.Pool[Any], count: int) -> bool:
    done = await pool.fetchval("SELECT count(*) FROM post_media WHERE archive_status = 'completed'")
    return bool(done >= count)


async def _trouble_seen(pool: asyncpg.Pool[Any]) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM post_media, jsonb_array_elements(ai_analysis_log) AS e"
            " WHERE e->>'event' IN ('archive_released', 'retry_scheduled')"
        )
    )


async def test_missing_local_file_fails_the_row_clearly(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """A local file gone before it was archived fails the row at once with local_file_missing."""
    cfg = archive_config(any_s3, tmp_path / "store")
    [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=9)])
    done.stored.path.unlink()
    await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert (r["archive_status"], r["error_code"], r["archive_attempts"]) == (
        "failed", "local_file_missing", 1,
    )  # fmt: skip
    assert events(r, "archive_failed")[0]["details"]["error_code"] == "local_file_missing"


async def test_a_corrupted_local_file_is_never_archived(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """S3 refuses bytes that do not match the row's digests (or, checking nothing, as moto, keeps
    them, and the HEAD shows another MD5); the row fails local_file_corrupt, never completed,
    and an S3 that checks leaves no object behind."""
    cfg = archive_config(any_s3, tmp_path / "store")
    [done] = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=10)])
    data = bytearray(done.stored.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    done.stored.path.write_bytes(bytes(data))
    await run_archive(cfg, db_url)
    r = await row(pool, done.media_id)
    assert (r["archive_status"], r["error_code"]) == ("failed", "local_file_corrupt")
    assert not events(r, "archive_completed")
    if any_s3.echoes_checksums:
        sha = done.stored.sha256
        prefix = cfg.archive.key_template.split("/")[0]
        listed = any_s3.client().list_objects_v2(Bucket="media", Prefix=f"{prefix}/")
        assert listed.get("KeyCount", 0) == 0, f"an object for {sha} was stored"


async def test_disabled_archive_skips_rows_left_waiting(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """With archive.enabled false the daemon opens no archive stage (no S3 is configured at
    all), and rows downloaded while it was on are marked skipped, not left waiting forever."""
    cfg = make_config(storage_root=str(tmp_path / "store"))
    [waiting] = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=70)])
    await daemon.run(cfg, once=True, url=db_url)
    r = await row(pool, waiting.media_id)
    assert r["archive_status"] == "skipped"
    assert events(r, "archive_skipped")[0]["details"] == {"reason": "archive.enabled is false"}


async def test_an_evicted_row_archived_again_checks_its_object(
    db_url: str, pool: asyncpg.Pool[Any], any_s3: S3Service, tmp_path: Path
) -> None:
    """Re-archiving a row whose local copy was evicted verifies the object it already has, and
    fails local_file_missing only when that object is gone too."""
    cfg = archive_config(any_s3, tmp_path / "store")
    kept, lost = await downloaded_rows(pool, store_of(cfg), [media.jpeg(seed=s) for s in (60, 61)])
    await run_archive(cfg, db_url)
    lost_url = (await row(pool, lost.media_id))["archive_url"]
    any_s3.client().delete_object(Bucket="media", Key=key_of(lost_url))
    await pool.execute(
        "UPDATE post_media SET local_file_path = NULL, hosted_url = NULL,"
        " archive_status = 'not_started'"
    )
    await run_archive(cfg, db_url)
    r = await row(pool, kept.media_id)
    assert r["archive_status"] == "completed"
    details = events(r, "archive_completed")[-1]["details"]
    assert (details["outcome"], details["local_file"]) == ("already_present", "missing")
    r = await row(pool, lost.media_id)
    assert (r["archive_status"], r["error_code"]) == ("failed", "local_file_missing")


async def test_a_small_file_costs_one_put(any_s3: S3Service, tmp_path: Path) -> None:
    """Per small file: one PUT (If-None-Match, Content-MD5, SHA-256, the file's SHA-256 as the
    signed payload hash, the storage class, its body sent at once, not after an `Expect:
    100-continue` round trip), proven by its answer; a HEAD only after a server whose answer
    echoes no checksum (moto). The same bytes again: the refused PUT and the HEAD that checks
    what is there. Seen on the wire, by a proxy in front of the server."""
    async with lying_s3(any_s3) as proxy:
        cfg = archive_config(proxy, tmp_path / "store", archive_storage_class="STANDARD")
        uploads = await upload_stored(cfg, media.jpeg(seed=9), times=2)
    stored, key, (first, again) = uploads.stored, uploads.key, uploads.outcomes
    sent = proxy.requests
    if any_s3.echoes_checksums:
        assert (first.outcome, first.verified_by) == ("uploaded", "put_response")
        assert [r.method for r in sent] == ["PUT", "PUT", "HEAD"]
    else:
        assert (first.outcome, first.verified_by) == ("uploaded", "head")
        assert [r.method for r in sent] == ["PUT", "HEAD", "PUT", "HEAD"]
    assert (again.outcome, again.verified_by) == ("already_present", "head")
    assert {r.path for r in sent} == {f"/{any_s3.bucket}/{key}"}
    put = sent[0].headers
    assert "Expect" not in put
    assert put["If-None-Match"] == "*"
    assert put["Content-MD5"] == b64(stored.md5)
    assert put["x-amz-checksum-sha256"] == b64(stored.sha256)
    assert put["x-amz-content-sha256"] == stored.sha256
    assert put["x-amz-meta-mediad-sha256"] == stored.sha256
    assert put["x-amz-storage-class"] == "STANDARD"
    assert "mediad/" in put["User-Agent"]


async def test_a_row_keeps_its_recorded_key_unless_it_is_unsafe(
    s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """A row archived before in this bucket keeps its key; a key that would add an empty, . or
    .. segment, another bucket's, or no s3:// URL at all gets the template's key instead."""
    cfg = archive_config(s3_server, tmp_path / "store")
    sha, md5 = hashlib.sha256(b"x").hexdigest(), hashlib.md5(b"x").hexdigest()
    local = archive.Local(None, sha, md5, 1, "jpg")
    fresh = Row("med-1", 1, "https://x.example/1.jpg", "image")
    async with s3.open_client(cfg.archive) as client:
        archiver = archive.Archiver(cfg.archive, client, store_of(cfg))
        templated = archiver.key_for(fresh, local)
        assert templated.endswith(f"/media/{sha[:2]}/{sha}.jpg")
        kept = dataclasses.replace(fresh, archive_url="s3://media/old/key.jpg")
        assert archiver.key_for(kept, local) == "old/key.jpg"
        for url in ("s3://media/a/../b", "s3://media/a//b", "s3://other/old/key.jpg", "x"):
            assert archiver.key_for(dataclasses.replace(fresh, archive_url=url), local) == templated


# Headers that differ between any two requests: the time, its signature, a random id.
_PER_REQUEST = {"X-Amz-Date", "amz-sdk-invocation-id", "Authorization"}


async def test_botocore_shortcuts_are_taken_and_change_no_request(
    s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """With the botocore installed every shortcut is taken, and the HEADs of an object and of a
    key never seen are the same requests with them as without (URL, headers, signed headers);
    with them an object key never seen before resolves its endpoint from botocore's cache."""
    cfg = archive_config(s3_server, tmp_path / "store")
    data = bytearray(media.jpeg(seed=11))
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    key = f"{cfg.archive.key_template.split('/')[0]}/{sha}.jpg"
    never = [f"{key}.never-{n}-{secrets.token_hex(4)}" for n in range(2)]
    seen: dict[frozenset[str], list[Any]] = {}
    for shortcuts in (s3shortcuts.ALL, frozenset()):
        sent: list[Any] = []
        async with s3.open_client(cfg.archive, shortcuts=shortcuts) as client:
            assert client.shortcuts == shortcuts
            client.client.meta.events.register(
                "before-send.s3", lambda request, sent=sent, **_: sent.append(request)
            )
            uploaded = await client.put_bytes(key, data, md5=md5, sha256=sha, if_none_match=False)
            assert uploaded is not None
            _, verdict = await client.check(key, checksums.Expected(len(data), sha, md5))
            assert verdict.ok
            provider = client.client._ruleset_resolver._provider
            cache = type(provider).resolve_endpoint.cache_info
            missed = cache().misses
            for unseen in never:
                assert await client.head(unseen) is None
            assert cache().misses - missed == (0 if shortcuts else 2)
        seen[shortcuts] = sent
    for taken, plain in zip(seen[s3shortcuts.ALL], seen[frozenset()], strict=True):
        assert (taken.method, taken.url) == (plain.method, plain.url)
        assert {k: v for k, v in taken.headers.items() if k not in _PER_REQUEST} == {
            k: v for k, v in plain.headers.items() if k not in _PER_REQUEST
        }
        signed = [r.headers["Authorization"].split(b"SignedHeaders=")[1].split(b",")[0]
                  for r in (taken, plain)]  # fmt: skip
        assert signed[0] == signed[1]


async def test_stray_multipart_uploads_older_than_a_day_are_aborted(
    s3_server: SeaweedFS, tmp_path: Path
) -> None:
    """Uploads a killed process left under the key template's prefix are aborted once they are
    over a day old; a younger one (maybe in flight on another host) and keys outside the
    template's prefix are left alone."""
    cfg = archive_config(s3_server, tmp_path / "store")
    raw = s3_server.client()
    key = objectkeys.parse(cfg.archive.key_template).prefix + "ab/" + "a" * 64 + ".jpg"
    ours = raw.create_multipart_upload(Bucket="media", Key=key)
    foreign = raw.create_multipart_upload(Bucket="media", Key="other-app/file.bin")
    async with s3.open_client(cfg.archive) as client:
        today = archive.Archiver(cfg.archive, client, store_of(cfg))
        assert await today.abort_stray_uploads() == []
        later = datetime.now(UTC) + timedelta(days=1, minutes=1)
        tomorrow = archive.Archiver(cfg.archive, client, store_of(cfg), now=lambda: later)
        assert await tomorrow.abort_stray_uploads() == [key]
    left = {u["UploadId"] for u in raw.list_multipart_uploads(Bucket="media").get("Uploads", [])}
    assert ours["UploadId"] not in left
    assert foreign["UploadId"] in left
    raw.abort_multipart_upload(
        Bucket="media", Key="other-app/file.bin", UploadId=foreign["UploadId"]
    )


async def test_a_file_over_a_mebibyte_is_still_one_put_sent_in_slices(
    any_s3: S3Service, tmp_path: Path
) -> None:
    """Up to part_size a file is one PUT, however large: one of 3 MB (sent a slice at a time,
    with its own Content-Length) arrives whole, proven, and reads back byte for byte."""
    data = bytearray(random.Random(5).randbytes(3_000_000))
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    async with lying_s3(any_s3) as proxy:
        cfg = archive_config(proxy, tmp_path / "store")
        async with s3.open_client(cfg.archive) as client:
            uploaded = await client.put_bytes(
                "big/one", data, md5=md5, sha256=sha, if_none_match=True
            )
    assert uploaded is not None and uploaded.etag == md5
    assert [(r.method, r.headers["Content-Length"]) for r in proxy.requests] == [
        ("PUT", str(len(data)))
    ]
    assert "Transfer-Encoding" not in proxy.requests[0].headers
    body = any_s3.client().get_object(Bucket=any_s3.bucket, Key="big/one")["Body"].read()
    assert body == data


async def test_server_side_encryption_is_asked_for_on_the_put(
    any_s3: S3Service, tmp_path: Path
) -> None:
    """archive.sse = AES256 goes with a small file's PUT: the object says it is encrypted, and
    (SSE-S3 keeping the ETag an MD5) the PUT's answer still proves it."""
    cfg = archive_config(any_s3, tmp_path / "store", archive_sse="AES256")
    stored = store_bytes(store_of(cfg), media.jpeg(seed=12))
    async with s3.open_client(cfg.archive) as client:
        archiver = archive.Archiver(cfg.archive, client, store_of(cfg))
        local = archive.Local(stored.path, stored.sha256, stored.md5, stored.size, "jpg")
        key = archiver.key_for(Row("med-1", 1, "https://x.example/1.jpg", "image"), local)
        done, _ = await archiver.upload(local, key)
    assert done.outcome == "uploaded"
    head = any_s3.client().head_object(Bucket=any_s3.bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
