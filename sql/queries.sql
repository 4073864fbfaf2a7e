-- Every query mediad runs, as named blocks. Blocks under "stage queries" are templates:
-- {stage}, {status} and the {*_event} names are filled in for each stage by
-- mediad/sql.py from a fixed table, never from input.

-- stage queries --

-- claim --
-- Lease a batch of due rows of one stage (queued and due, or leased by a worker whose lease
-- lapsed), closest to URL expiry first, then oldest; count the attempt and log its start.
-- A stage that reads the local file passes its storage node ($4) and takes only the rows
-- stored there (or stored before rows recorded their node); the download stage passes NULL.
WITH due AS MATERIALIZED (
    SELECT media_id
    FROM post_media
    WHERE {stage}_queued
      AND CASE {status}
          WHEN 'not_started' THEN {stage}_next_attempt_at IS NULL OR {stage}_next_attempt_at <= now()
          ELSE {stage}_lease_expires_at IS NULL OR {stage}_lease_expires_at <= now()
      END
      AND ($4::text IS NULL OR storage_node IS NULL OR storage_node = $4)
    ORDER BY url_expires_at, created_at, media_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE post_media AS p
SET {status} = 'started',
    updated_at = now(),
    {stage}_lease_owner = $1,
    {stage}_lease_expires_at = now() + make_interval(secs => $3),
    {stage}_next_attempt_at = NULL,
    {stage}_attempts = p.{stage}_attempts + 1,
    ai_analysis_log = p.ai_analysis_log || mediad_event('{started_event}', 'info', jsonb_strip_nulls(
        jsonb_build_object(
            'attempt', p.{stage}_attempts + 1,
            'worker', $1::text,
            'reclaimed_from', CASE WHEN p.{status} = 'started' THEN p.{stage}_lease_owner END)))
FROM due
WHERE p.media_id = due.media_id
RETURNING p.media_id, p.post_id, p.platform, p.media_type, p.media_url, p.variants,
    p.url_expires_at, p.{stage}_attempts AS attempt, p.local_file_path, p.md5_sum,
    p.sha256_sum, p.file_size, p.mime_type, p.archive_url;

-- heartbeat --
-- Extend the leases this worker still holds; the rows not returned were lost to another worker.
UPDATE post_media AS p
SET {stage}_lease_expires_at = now() + make_interval(secs => $3),
    updated_at = now()
FROM unnest($1::text[], $2::integer[]) AS h(media_id, attempt)
WHERE p.media_id = h.media_id
  AND p.{status} = 'started'
  AND p.{stage}_lease_owner = $4
  AND p.{stage}_attempts = h.attempt
RETURNING p.media_id;

-- release --
-- Hand rows back unprocessed (shutdown, a paused stage): due again at once for any worker,
-- and the interrupted attempt does not count.
UPDATE post_media AS p
SET {status} = 'not_started',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = NULL,
    {stage}_attempts = greatest(p.{stage}_attempts - 1, 0),
    ai_analysis_log = p.ai_analysis_log || mediad_event('{released_event}', 'info',
        jsonb_build_object('attempt', h.attempt, 'worker', $3::text, 'reason', $4::text))
FROM unnest($1::text[], $2::integer[]) AS h(media_id, attempt)
WHERE p.media_id = h.media_id
  AND p.{status} = 'started'
  AND p.{stage}_lease_owner = $3
  AND p.{stage}_attempts = h.attempt
RETURNING p.media_id;

-- retry --
-- Re-queue rows after a transient failure, due again after their backoff delay.
UPDATE post_media AS p
SET {status} = 'not_started',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = now() + make_interval(secs => r.delay),
    error_code = r.error_code,
    last_error = r.error,
    ai_analysis_log = p.ai_analysis_log || mediad_event('retry_scheduled', 'failure',
        jsonb_build_object(
            'stage', '{stage}',
            'attempt', r.attempt,
            'error_code', r.error_code,
            'error', r.error,
            'retry_in_seconds', round(r.delay::numeric, 3),
            'next_attempt_at', to_char((now() + make_interval(secs => r.delay)) AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
FROM unnest($1::text[], $2::integer[], $3::double precision[], $4::text[], $5::text[])
    AS r(media_id, attempt, delay, error_code, error)
WHERE p.media_id = r.media_id
  AND p.{status} = 'started'
  AND p.{stage}_lease_owner = $6
  AND p.{stage}_attempts = r.attempt
RETURNING p.media_id;

-- defer --
-- Re-queue rows not worth an attempt now (their host is backing off): due after the delay,
-- and the attempt they were claimed for does not count.
UPDATE post_media AS p
SET {status} = 'not_started',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = now() + make_interval(secs => r.delay),
    {stage}_attempts = greatest(p.{stage}_attempts - 1, 0),
    ai_analysis_log = p.ai_analysis_log || mediad_event('{stage}_deferred', 'info',
        jsonb_build_object('reason', r.error_code, 'error', r.error,
            'retry_in_seconds', round(r.delay::numeric, 3)))
FROM unnest($1::text[], $2::integer[], $3::double precision[], $4::text[], $5::text[])
    AS r(media_id, attempt, delay, error_code, error)
WHERE p.media_id = r.media_id
  AND p.{status} = 'started'
  AND p.{stage}_lease_owner = $6
  AND p.{stage}_attempts = r.attempt
RETURNING p.media_id;

-- fail --
-- Give rows up: a permanent failure, or a transient one on the last allowed attempt.
UPDATE post_media AS p
SET {status} = 'failed',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = NULL,
    error_code = r.error_code,
    last_error = r.error,
    ai_analysis_log = p.ai_analysis_log || mediad_event('{failed_event}', 'failure',
        jsonb_build_object('attempt', r.attempt, 'error_code', r.error_code, 'error', r.error))
FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[])
    AS r(media_id, attempt, error_code, error)
WHERE p.media_id = r.media_id
  AND p.{status} = 'started'
  AND p.{stage}_lease_owner = $5
  AND p.{stage}_attempts = r.attempt
RETURNING p.media_id;

-- count_due --
-- How many rows of this stage a claim (with the same storage node, $1) would take now: run
-- --once stops when all are zero.
SELECT count(*)
FROM post_media
WHERE {stage}_queued
  AND CASE {status}
      WHEN 'not_started' THEN {stage}_next_attempt_at IS NULL OR {stage}_next_attempt_at <= now()
      ELSE {stage}_lease_expires_at IS NULL OR {stage}_lease_expires_at <= now()
  END
  AND ($1::text IS NULL OR storage_node IS NULL OR storage_node = $1);

-- requeue --
-- Put rows of this stage back in the queue as new (the retry command): attempts start over.
UPDATE post_media AS p
SET {status} = 'not_started',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = NULL,
    {stage}_attempts = 0,
    ai_analysis_log = p.ai_analysis_log || mediad_event('requeued', 'info',
        jsonb_build_object('stage', '{stage}', 'previous_status', p.{status}, 'by', $5::text))
WHERE p.{status} = ANY($1::text[])
  AND ($2::text IS NULL OR p.media_id = $2)
  AND ($3::text IS NULL OR p.error_code = $3)
  AND ($4::text IS NULL OR p.post_id = $4)
  AND p.{status} <> 'started'
RETURNING p.media_id;

-- plain queries --

-- complete_download --
-- Record finished downloads (fenced on the lease), stored on node $8, and open the archive and
-- analysis stages, or mark them skipped where they are disabled.
UPDATE post_media AS p
SET download_status = 'completed',
    updated_at = now(),
    download_lease_owner = NULL,
    download_lease_expires_at = NULL,
    download_next_attempt_at = NULL,
    error_code = NULL,
    last_error = NULL,
    local_file_path = x.local_file_path,
    hosted_url = x.hosted_url,
    md5_sum = x.md5_sum,
    sha256_sum = x.sha256_sum,
    file_size = x.file_size,
    mime_type = x.mime_type,
    width = x.width,
    height = x.height,
    duration_seconds = x.duration_seconds,
    metadata = x.metadata,
    url_expires_at = COALESCE(p.url_expires_at, x.url_expires_at),
    downloaded_at = now(),
    storage_node = $8,
    archive_status = CASE WHEN $6 AND p.archive_status = 'not_started'
        THEN 'skipped' ELSE p.archive_status END,
    ai_analysis_status = CASE WHEN $7 AND p.ai_analysis_status = 'not_started'
        THEN 'skipped' ELSE p.ai_analysis_status END,
    ai_analysis_log = p.ai_analysis_log
        || mediad_event('media_downloaded', 'success', r.details)
        || CASE WHEN $6 AND p.archive_status = 'not_started'
           THEN mediad_event('archive_skipped', 'info', '{"reason": "archive.enabled is false"}')
           ELSE '[]' END
        || CASE WHEN $7 AND p.ai_analysis_status = 'not_started'
           THEN mediad_event('ai_analysis_skipped', 'info', '{"reason": "analysis.enabled is false"}')
           ELSE '[]' END
FROM unnest($1::text[], $2::integer[], $3::jsonb[], $4::jsonb[]) AS r(media_id, attempt, result, details)
CROSS JOIN LATERAL jsonb_populate_record(NULL::post_media, r.result) AS x
WHERE p.media_id = r.media_id
  AND p.download_status = 'started'
  AND p.download_lease_owner = $5
  AND p.download_attempts = r.attempt
RETURNING p.media_id;

-- stage_counts --
-- Rows per stage and status, with how many are due now and how many are leased.
SELECT stage, status, count(*) AS rows,
    count(*) FILTER (WHERE due) AS due,
    count(*) FILTER (WHERE leased) AS leased
FROM post_media,
LATERAL (VALUES
    ('download', download_status,
        download_status = 'not_started' AND coalesce(download_next_attempt_at <= now(), true),
        download_status = 'started' AND download_lease_expires_at > now()),
    ('archive', archive_status,
        archive_status = 'not_started' AND download_status = 'completed'
            AND coalesce(archive_next_attempt_at <= now(), true),
        archive_status = 'started' AND archive_lease_expires_at > now()),
    ('analysis', ai_analysis_status,
        ai_analysis_status = 'not_started' AND download_status = 'completed'
            AND coalesce(analysis_next_attempt_at <= now(), true),
        ai_analysis_status = 'started' AND analysis_lease_expires_at > now())
) AS s(stage, status, due, leased)
GROUP BY stage, status
ORDER BY stage, status;

-- failures_by_code --
-- Failed rows per stage and error_code, most frequent first.
SELECT stage, coalesce(error_code, 'unknown') AS error_code, count(*) AS rows
FROM post_media,
LATERAL (VALUES ('download', download_status), ('archive', archive_status),
    ('analysis', ai_analysis_status)) AS s(stage, status)
WHERE status = 'failed'
GROUP BY stage, error_code
ORDER BY rows DESC, stage, error_code;

-- enqueue --
-- Insert one row as a scraper would, returning its media_id.
INSERT INTO post_media (post_id, media_url, media_type, platform, variants)
VALUES ($1, $2, $3, $4, $5)
RETURNING media_id;

-- import_lock --
-- Taken by `mediad import` for each file's transaction: one import at a time, so two runs over
-- the same files cannot both queue a medium.
SELECT pg_advisory_xact_lock(hashtext('mediad import'));

-- import_media --
-- Queue one medium of an imported post, unless the same post already has a row for this URL;
-- returns the new media_id, or NULL when it was already queued.
INSERT INTO post_media (post_id, media_url, media_type, platform, variants)
SELECT $1, $2, $3, $4, $5
WHERE NOT EXISTS (
    SELECT 1 FROM post_media WHERE post_id IS NOT DISTINCT FROM $1::text AND media_url = $2::text
)
RETURNING media_id;

-- list_rows --
-- Rows, newest first, optionally of one post and/or with one status in any stage.
SELECT media_id, post_id, platform, media_type, media_url, download_status, archive_status,
    ai_analysis_status, error_code, local_file_path, hosted_url, archive_url, sha256_sum,
    file_size, mime_type, created_at, updated_at
FROM post_media
WHERE ($1::text IS NULL OR post_id = $1)
  AND ($2::text IS NULL OR $2 IN (download_status, archive_status, ai_analysis_status))
ORDER BY created_at DESC, media_id
LIMIT $3;

-- show_row --
-- One row, every column.
SELECT * FROM post_media WHERE media_id = $1;

-- migration_lock --
-- Serialise migrations across every host (session-level advisory lock).
SELECT pg_advisory_lock($1);

-- migration_unlock --
-- Let the next host migrate.
SELECT pg_advisory_unlock($1);

-- migration_table --
-- Where applied migrations are recorded.
CREATE TABLE IF NOT EXISTS mediad_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- migrations_applied --
-- The versions applied so far.
SELECT version FROM mediad_migrations;

-- migration_record --
-- Record one applied migration.
INSERT INTO mediad_migrations (version, name) VALUES ($1, $2);

-- complete_archive --
-- Record verified uploads (fenced on the lease): the object's URL, how it was verified (under
-- metadata.archive), and a local file found missing; an older archive retry's error is cleared.
UPDATE post_media AS p
SET archive_status = 'completed',
    archive_lease_owner = NULL,
    archive_lease_expires_at = NULL,
    archive_next_attempt_at = NULL,
    archive_url = r.result->>'archive_url',
    archived_at = now(),
    metadata = coalesce(p.metadata, '{}'::jsonb)
        || jsonb_build_object('archive', (r.result->'archive')
            || jsonb_build_object('verified_at', to_char(now() AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))),
    local_file_path = CASE WHEN (r.result->>'local_file_gone')::boolean
        THEN NULL ELSE p.local_file_path END,
    hosted_url = CASE WHEN (r.result->>'local_file_gone')::boolean
        THEN NULL ELSE p.hosted_url END,
    error_code = CASE WHEN p.download_status = 'failed' OR p.ai_analysis_status = 'failed'
        OR p.analysis_next_attempt_at IS NOT NULL THEN p.error_code END,
    last_error = CASE WHEN p.download_status = 'failed' OR p.ai_analysis_status = 'failed'
        OR p.analysis_next_attempt_at IS NOT NULL THEN p.last_error END,
    ai_analysis_log = p.ai_analysis_log || mediad_event('archive_completed', 'success', r.details)
FROM unnest($1::text[], $2::integer[], $3::jsonb[], $4::jsonb[]) AS r(media_id, attempt, result, details)
WHERE p.media_id = r.media_id
  AND p.archive_status = 'started'
  AND p.archive_lease_owner = $5
  AND p.archive_attempts = r.attempt
RETURNING p.media_id;

-- evict_candidates --
-- Local files under the store ($1, with its trailing slash) that nothing needs locally any more:
-- every row pointing at one has finished downloading, archiving and analysis. Least recently
-- downloaded first, paged on (last_used, path) after ($2, $3); only files stored on this node
-- ($5), since another host's store may use the same path.
SELECT local_file_path,
    max(coalesce(downloaded_at, created_at)) AS last_used,
    min(sha256_sum) AS sha256_sum,
    min(md5_sum) AS md5_sum,
    max(file_size) AS file_size,
    jsonb_agg(DISTINCT jsonb_build_object('url', archive_url,
        'checksum_sha256', metadata #>> '{archive,checksum_sha256}')) AS archive_copies
FROM post_media
WHERE local_file_path IS NOT NULL
  AND starts_with(local_file_path, $1)
  AND (storage_node IS NULL OR storage_node = $5)
GROUP BY local_file_path
HAVING bool_and(download_status = 'completed' AND archive_status = 'completed'
        AND archive_url IS NOT NULL
        AND ai_analysis_status IN ('completed', 'failed', 'skipped'))
   AND (max(coalesce(downloaded_at, created_at)), local_file_path) > ($2::timestamptz, $3::text)
ORDER BY last_used, local_file_path
LIMIT $4;

-- evict_lock_file --
-- Lock the rows of one local file on this node ($2) and say again whether each lets it go.
SELECT media_id,
    download_status = 'completed' AND archive_status = 'completed' AND archive_url IS NOT NULL
        AND ai_analysis_status IN ('completed', 'failed', 'skipped') AS evictable
FROM post_media
WHERE local_file_path = $1
  AND (storage_node IS NULL OR storage_node = $2)
FOR UPDATE;

-- evict_file --
-- The local copy is gone: clear the rows' local path and hosted URL, and say so.
UPDATE post_media AS p
SET local_file_path = NULL,
    hosted_url = NULL,
    ai_analysis_log = p.ai_analysis_log || mediad_event('local_file_evicted', 'info',
        jsonb_build_object('path', $2::text, 'file_size', $3::bigint, 'archive_url', p.archive_url,
            'by', $4::text, 'max_bytes', $5::bigint))
WHERE p.media_id = ANY($1::text[])
RETURNING p.media_id;

-- archive_damaged --
-- Objects found missing or wrong ($1, s3:// URLs): their rows are no longer archived, so no
-- local copy is evicted on their account, until `verify --repair` or `retry --stage archive`.
UPDATE post_media AS p
SET archive_status = 'failed',
    error_code = $2,
    last_error = $3,
    ai_analysis_log = p.ai_analysis_log || mediad_event('archive_damaged', 'failure',
        jsonb_build_object('archive_url', p.archive_url, 'error_code', $2::text,
            'error', $3::text, 'by', $4::text))
WHERE p.archive_url = ANY($1::text[])
  AND p.archive_status = 'completed'
RETURNING p.media_id;

-- scrub_count --
-- How many distinct files (by SHA-256) `mediad verify` will look at: those of the rows stored on
-- this node ($1); other hosts verify their own.
SELECT count(DISTINCT sha256_sum)
FROM post_media
WHERE download_status = 'completed'
  AND sha256_sum IS NOT NULL
  AND (local_file_path IS NOT NULL OR archive_url IS NOT NULL)
  AND (storage_node IS NULL OR storage_node = $1);

-- scrub_groups --
-- The next page of files to verify, by SHA-256 after $1: every row of this node ($3) holding
-- those bytes, with its local path and archived object.
SELECT sha256_sum,
    min(md5_sum) AS md5_sum,
    max(file_size) AS file_size,
    jsonb_agg(jsonb_build_object(
        'media_id', media_id,
        'local_file_path', local_file_path,
        'archive_url', archive_url,
        'archive_status', archive_status,
        'checksum_sha256', metadata #>> '{archive,checksum_sha256}') ORDER BY media_id) AS rows
FROM post_media
WHERE download_status = 'completed'
  AND sha256_sum IS NOT NULL
  AND sha256_sum > $1
  AND (local_file_path IS NOT NULL OR archive_url IS NOT NULL)
  AND (storage_node IS NULL OR storage_node = $3)
GROUP BY sha256_sum
ORDER BY sha256_sum
LIMIT $2;

-- local_file_damaged --
-- A local file found missing or not matching its row (said once until something changes).
UPDATE post_media AS p
SET ai_analysis_log = p.ai_analysis_log || mediad_event('local_file_damaged', 'failure',
        jsonb_build_object('path', $2::text, 'problem', $3::text, 'by', $4::text))
WHERE p.media_id = ANY($1::text[])
  AND p.ai_analysis_log -> -1 ->> 'event' IS DISTINCT FROM 'local_file_damaged'
RETURNING p.media_id;

-- local_file_relinked --
-- Rows given back a verified local file: restored from a good copy ($4 = local_file_repaired),
-- or bytes already local again after an eviction ($4 = local_file_restored).
UPDATE post_media AS p
SET local_file_path = $2,
    hosted_url = $3,
    ai_analysis_log = p.ai_analysis_log || mediad_event($4::text, 'success',
        jsonb_build_object('path', $5::text, 'source', $6::text, 'by', $7::text))
WHERE p.media_id = ANY($1::text[])
RETURNING p.media_id;

-- archive_repaired --
-- Rows whose object ($2) is intact again, re-uploaded from a verified local file (its new
-- record in $3) or found intact after all ($3 NULL).
UPDATE post_media AS p
SET archive_status = 'completed',
    archived_at = CASE WHEN $3::jsonb IS NULL THEN p.archived_at ELSE now() END,
    metadata = CASE WHEN $3::jsonb IS NULL THEN p.metadata
        ELSE coalesce(p.metadata, '{}'::jsonb) || jsonb_build_object('archive', $3::jsonb
            || jsonb_build_object('verified_at', to_char(now() AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))) END,
    error_code = CASE WHEN p.error_code IN ('archive_missing', 'archive_corrupt')
        THEN NULL ELSE p.error_code END,
    last_error = CASE WHEN p.error_code IN ('archive_missing', 'archive_corrupt')
        THEN NULL ELSE p.last_error END,
    ai_analysis_log = p.ai_analysis_log || mediad_event('archive_repaired', 'success', $4::jsonb)
WHERE p.media_id = ANY($1::text[])
  AND p.archive_url = $2
  AND p.archive_status <> 'started'
RETURNING p.media_id;

-- best_url_row --
-- What `mediad url` chooses from: the local file and hosted URL, the archived object, the original.
SELECT media_id, media_url, url_expires_at, local_file_path, hosted_url, archive_status,
    archive_url
FROM post_media
WHERE media_id = $1;
