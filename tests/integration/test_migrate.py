"""Migrations: a fresh schema, idempotence, concurrent hosts, and adopting a seed-001 table."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from mediad import db, migrate, queries
from tests.support import event_names, run_once

# The seed-001 table as its users have it: "Current Columns", the FK to posts, their later
# migration (md5_sum, archive_url, ai_analysis_log, the status CHECK), rows still 'pending'.
SEED_001 = """
CREATE TABLE posts (post_id TEXT PRIMARY KEY, text TEXT);
CREATE TABLE post_media (
    media_id TEXT PRIMARY KEY,
    post_id TEXT NOT NULL REFERENCES posts(post_id) ON DELETE CASCADE,
    media_type TEXT NOT NULL,
    media_url TEXT NOT NULL,
    local_file_path TEXT,
    file_size INTEGER,
    mime_type TEXT,
    width INTEGER,
    height INTEGER,
    ai_analysis_status TEXT DEFAULT 'pending',
    ai_analysis TEXT,
    ai_analyzed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
ALTER TABLE post_media ADD COLUMN md5_sum TEXT;
ALTER TABLE post_media ADD COLUMN archive_url TEXT;
ALTER TABLE post_media ADD COLUMN ai_analysis_log JSONB;
CREATE INDEX idx_media_md5_sum ON post_media(md5_sum);
INSERT INTO posts VALUES ('p-1', 'hello'), ('p-2', 'world');
INSERT INTO post_media (media_id, post_id, media_type, media_url, local_file_path, md5_sum,
                        ai_analysis_status, ai_analysis, ai_analysis_log)
VALUES
  ('med-a1', 'p-1', 'image', 'https://pbs.twimg.com/media/A.jpg', './cache/images/x.jpg',
   'd41d8cd98f00b204e9800998ecf8427e', 'pending', NULL,
   '[{"timestamp": "2025-12-01T10:30:00Z", "event": "media_downloaded", "status": "success"}]'),
  ('med-a2', 'p-1', 'video', 'https://video.xx.fbcdn.net/v/b.mp4?oh=1&oe=6754A1B2', NULL, NULL,
   'pending', NULL, NULL),
  ('med-a3', 'p-2', 'image', 'https://example.org/c.png', NULL, NULL,
   'completed', 'a cat', '{"event": "ai_analysis_completed"}');
"""

ALL = len(queries.migrations())


async def test_migrate_creates_the_contract_table(empty_db_url: str) -> None:
    """A fresh database gets post_media with every contract column, and a plain INSERT works."""
    conn = await db.connect(empty_db_url)
    try:
        assert await migrate.migrate(conn) == [
            "0001_post_media",
            "0002_storage_node",
            "0003_timestamps",
            "0004_platform_hosts",
            "0005_analysis",
            "0006_derive",
            "0007_row_counts",
            "0008_restored_at",
            "0009_dashboard_indexes",
            "0010_last_error_at",
        ]
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'post_media'"
            )
        }
        contract = {
            "media_id", "post_id", "platform", "media_type", "media_url", "variants",
            "url_expires_at", "download_status", "local_file_path", "hosted_url", "md5_sum",
            "sha256_sum", "file_size", "mime_type", "width", "height", "duration_seconds",
            "metadata", "downloaded_at", "archive_status", "archive_url", "archived_at",
            "ai_analysis_status", "ai_analysis", "ai_analyzed_at", "ai_analysis_log",
            "error_code", "last_error", "created_at", "updated_at", "storage_node",
            "derive_status", "thumbnail_url", "derivatives",
        }  # fmt: skip
        assert contract <= columns
        media_id = await conn.fetchval(
            "INSERT INTO post_media (post_id, media_url, media_type)"
            " VALUES ('p', 'https://x.com/i/a.jpg', 'image') RETURNING media_id"
        )
        r = await conn.fetchrow("SELECT * FROM post_media WHERE media_id = $1", media_id)
        assert r is not None
        assert media_id.startswith("med-") and len(media_id) == 36
        assert r["platform"] == "twitter"
        assert (r["download_status"], r["archive_status"], r["ai_analysis_status"]) == (
            "not_started", "not_started", "not_started",
        )  # fmt: skip
        assert r["ai_analysis_log"] == []
    finally:
        await conn.close()


async def test_migrate_twice_is_a_no_op(empty_db_url: str) -> None:
    """Running migrate again applies nothing and changes nothing."""
    conn = await db.connect(empty_db_url)
    try:
        await migrate.migrate(conn)
        assert await migrate.migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM mediad_migrations") == ALL
    finally:
        await conn.close()


async def test_concurrent_migrations_are_safe(empty_db_url: str) -> None:
    """Four hosts migrating one empty database at once: one applies, none fails."""
    conns = [await db.connect(empty_db_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, ALL]
        assert await conns[0].fetchval("SELECT count(*) FROM mediad_migrations") == ALL
    finally:
        for conn in conns:
            await conn.close()


async def test_seed_001_table_is_adopted_in_place(empty_db_url: str) -> None:
    """A seed-001 table keeps its rows and FK, gains the columns, and its rows get processed."""
    conn = await db.connect(empty_db_url)
    try:
        await conn.execute(SEED_001)
        await migrate.migrate(conn)
        rows = {
            r["media_id"]: r for r in await conn.fetch("SELECT * FROM post_media ORDER BY media_id")
        }
        assert set(rows) == {"med-a1", "med-a2", "med-a3"}
        a1, a2, a3 = rows["med-a1"], rows["med-a2"], rows["med-a3"]
        assert a1["ai_analysis_status"] == "not_started"
        assert a3["ai_analysis_status"] == "completed" and a3["ai_analysis"] == "a cat"
        assert a1["md5_sum"] == "d41d8cd98f00b204e9800998ecf8427e"
        assert a1["ai_analysis_log"][0]["event"] == "media_downloaded"
        assert a2["ai_analysis_log"] == []
        assert a3["ai_analysis_log"] == [{"event": "ai_analysis_completed"}]
        assert a2["platform"] == "facebook"
        assert a2["url_expires_at"] is not None
        assert {r["download_status"] for r in rows.values()} == {"not_started"}
        # The foreign key still holds.
        fk = await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'post_media'::regclass"
            " AND contype = 'f'"
        )
        assert fk == 1
        try:
            await conn.execute(
                "INSERT INTO post_media (post_id, media_url, media_type)"
                " VALUES ('no-such-post', 'https://e.org/x.jpg', 'image')"
            )
            raise AssertionError("the foreign key should refuse an unknown post")
        except asyncpg.ForeignKeyViolationError:
            pass
        # 'skipped' is now a legal analysis status, and new inserts default to not_started.
        await conn.execute("UPDATE post_media SET ai_analysis_status = 'skipped' WHERE false")
        file_size_type = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'post_media' AND column_name = 'file_size'"
        )
        assert file_size_type == "bigint"
    finally:
        await conn.close()
    await run_once(empty_db_url)
    conn = await db.connect(empty_db_url)
    try:
        done = await conn.fetch("SELECT media_id, download_status, ai_analysis_log FROM post_media")
        assert {r["download_status"] for r in done} == {"completed"}
        a1_log = next(r["ai_analysis_log"] for r in done if r["media_id"] == "med-a1")
        assert event_names(a1_log)[0] == "media_downloaded"  # the seed's own entry is kept
        assert "download_started" in event_names(a1_log)
        assert json.dumps(a1_log)  # still plain JSON
    finally:
        await conn.close()
