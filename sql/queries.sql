-- Every query mediad runs, as named blocks. Blocks under "stage queries" are templates
-- filled in for each stage from its declaration (mediad/stage.py), never from input: {stage},
-- {status}, the {*_event} names, and the pieces under "fragments" ({due}, ...), which
-- mediad/queries.py assembles from the declarations. Blocks under "plain queries" that hold a
-- {token} are assembled the same way from every declared stage.

-- stage queries --

-- Fences. A statement writing the rows of a batch (h) writes only those still leased to this
-- worker for the attempt it names, and says the fence as one comparison with h: "CASE WHEN
-- leased to us THEN attempts END = h.attempt". Written as three conditions on the row alone,
-- the planner estimated them from statistics in which leased rows are rare (none at all when a
-- fresh queue was analysed), expected one row, and for a batch of more than ~150 rows of a
-- 20,000-row table chose to scan the table and join every row it found against every row of
-- the batch: 113 ms for 500 rows instead of 36 (EXPLAIN ANALYZE). A comparison with h is a
-- join condition: the batch drives, each row found by its key.

-- claim --
-- Lease a batch of due rows of one stage, closest to URL expiry first, then oldest; count the
-- attempt and log its start. A stage that reads the local file passes its storage node ($4)
-- and takes only the rows stored there (or stored before rows recorded their node); others
-- pass NULL. A row whose lease lapsed on its last allowed attempt ($5) had its worker die
-- under it each time it was tried: it is failed here (worker_lost), never handed out again,
-- and returned with `lost` set.
WITH due AS MATERIALIZED (
    SELECT media_id, {status} = 'started' AND {stage}_attempts >= $5 AS lost
    FROM post_media
    WHERE {due}
      AND ($4::text IS NULL OR storage_node IS NULL OR storage_node = $4)
    ORDER BY url_expires_at, created_at, media_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE post_media AS p
SET {status} = CASE WHEN due.lost THEN 'failed' ELSE 'started' END,
    updated_at = now(),
    {stage}_lease_owner = CASE WHEN due.lost THEN NULL ELSE $1 END,
    {stage}_lease_expires_at = CASE WHEN due.lost THEN NULL
        ELSE now() + make_interval(secs => $3) END,
    {stage}_next_attempt_at = NULL,
    {stage}_attempts = p.{stage}_attempts + CASE WHEN due.lost THEN 0 ELSE 1 END,
    error_code = CASE WHEN due.lost THEN 'worker_lost' ELSE p.error_code END,
    last_error = CASE WHEN due.lost THEN format('the lease of attempt %s of %s lapsed without a'
        ' result: the worker died processing the row; not tried again', p.{stage}_attempts, $5)
        ELSE p.last_error END,
    last_error_at = CASE WHEN due.lost THEN now() ELSE p.last_error_at END,
    ai_analysis_log = p.ai_analysis_log || CASE WHEN due.lost
        THEN mediad_event('{failed_event}', 'failure', jsonb_build_object(
            'attempt', p.{stage}_attempts,
            'error_code', 'worker_lost',
            'error', 'the worker died processing the row on its last allowed attempt',
            'worker', p.{stage}_lease_owner))
        ELSE mediad_event('{started_event}', 'info', jsonb_strip_nulls(jsonb_build_object(
            'attempt', p.{stage}_attempts + 1,
            'worker', $1::text,
            'reclaimed_from', CASE WHEN p.{status} = 'started' THEN p.{stage}_lease_owner END)))
        END
FROM due
WHERE p.media_id = due.media_id
RETURNING due.lost, p.media_id, p.{stage}_attempts AS attempt{returning};

-- heartbeat --
-- Extend the leases this worker still holds; the rows not returned were lost to another worker.
UPDATE post_media AS p
SET {stage}_lease_expires_at = now() + make_interval(secs => $3),
    updated_at = now()
FROM unnest($1::text[], $2::integer[]) AS h(media_id, attempt)
WHERE p.media_id = h.media_id
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $4
      THEN p.{stage}_attempts END = h.attempt
RETURNING p.media_id;

-- complete --
-- Record finished rows (fenced on the lease): the declared columns their results hold (a
-- column a result leaves out keeps its value), keys merged into metadata, and the stages the
-- completion opens marked skipped where they are disabled. An older error is cleared unless
-- another stage of the row failed or waits for a retry.
UPDATE post_media AS p
SET {status} = 'completed',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = NULL,{completion_columns}
    metadata = CASE WHEN h.metadata = '{}'::jsonb THEN p.metadata
        ELSE coalesce(p.metadata, '{}'::jsonb) || h.metadata END,
    error_code = CASE WHEN {trouble_elsewhere} THEN p.error_code END,
    last_error = CASE WHEN {trouble_elsewhere} THEN p.last_error END,
    last_error_at = CASE WHEN {trouble_elsewhere} THEN p.last_error_at END,
    ai_analysis_log = p.ai_analysis_log
        || mediad_event('{completed_event}', 'success', h.details){skip_events}
FROM unnest($1::text[], $2::integer[], $3::jsonb[], $4::jsonb[], $5::jsonb[])
    AS h(media_id, attempt, result, details, metadata)
CROSS JOIN LATERAL jsonb_populate_record(NULL::post_media, h.result) AS x
WHERE p.media_id = h.media_id
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $6
      THEN p.{stage}_attempts END = h.attempt
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
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $3
      THEN p.{stage}_attempts END = h.attempt
RETURNING p.media_id;

-- retry --
-- Re-queue rows after a transient failure, due again after their backoff delay.
UPDATE post_media AS p
SET {status} = 'not_started',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = now() + make_interval(secs => h.delay),
    error_code = h.error_code,
    last_error = h.error,
    last_error_at = now(),
    ai_analysis_log = p.ai_analysis_log || mediad_event('retry_scheduled', 'failure',
        jsonb_build_object(
            'stage', '{stage}',
            'attempt', h.attempt,
            'error_code', h.error_code,
            'error', h.error,
            'retry_in_seconds', round(h.delay::numeric, 3),
            'next_attempt_at', mediad_timestamp(now() + make_interval(secs => h.delay))))
FROM unnest($1::text[], $2::integer[], $3::double precision[], $4::text[], $5::text[])
    AS h(media_id, attempt, delay, error_code, error)
WHERE p.media_id = h.media_id
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $6
      THEN p.{stage}_attempts END = h.attempt
RETURNING p.media_id;

-- defer --
-- Re-queue rows not worth an attempt now (their host is backing off): due after the delay,
-- and the attempt they were claimed for does not count.
UPDATE post_media AS p
SET {status} = 'not_started',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = now() + make_interval(secs => h.delay),
    {stage}_attempts = greatest(p.{stage}_attempts - 1, 0),
    ai_analysis_log = p.ai_analysis_log || mediad_event('{deferred_event}', 'info',
        jsonb_build_object('reason', h.error_code, 'error', h.error,
            'retry_in_seconds', round(h.delay::numeric, 3)))
FROM unnest($1::text[], $2::integer[], $3::double precision[], $4::text[], $5::text[])
    AS h(media_id, attempt, delay, error_code, error)
WHERE p.media_id = h.media_id
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $6
      THEN p.{stage}_attempts END = h.attempt
RETURNING p.media_id;

-- fail --
-- Give rows up: a permanent failure, or a transient one on the last allowed attempt.
UPDATE post_media AS p
SET {status} = 'failed',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = NULL,
    error_code = h.error_code,
    last_error = h.error,
    last_error_at = now(),
    ai_analysis_log = p.ai_analysis_log || mediad_event('{failed_event}', 'failure',
        jsonb_build_object('attempt', h.attempt, 'error_code', h.error_code, 'error', h.error))
FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[])
    AS h(media_id, attempt, error_code, error)
WHERE p.media_id = h.media_id
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $5
      THEN p.{stage}_attempts END = h.attempt
RETURNING p.media_id;

-- skip --
-- Rows the stage itself has no work for (a kind of media it does not handle): skipped, with
-- the reason in the event.
UPDATE post_media AS p
SET {status} = 'skipped',
    updated_at = now(),
    {stage}_lease_owner = NULL,
    {stage}_lease_expires_at = NULL,
    {stage}_next_attempt_at = NULL,
    ai_analysis_log = p.ai_analysis_log || mediad_event('{skipped_event}', 'info',
        jsonb_build_object('reason', h.reason))
FROM unnest($1::text[], $2::integer[], $3::text[]) AS h(media_id, attempt, reason)
WHERE p.media_id = h.media_id
  AND CASE WHEN p.{status} = 'started' AND p.{stage}_lease_owner = $4
      THEN p.{stage}_attempts END = h.attempt
RETURNING p.media_id;

-- skip_waiting --
-- A disabled stage: mark up to $1 of the rows waiting for it skipped (queued before it was
-- disabled; later ones are skipped by the completion that opens them).
WITH waiting AS MATERIALIZED (
    SELECT media_id
    FROM post_media
    WHERE {stage}_queued AND {status} = 'not_started'
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE post_media AS p
SET {status} = 'skipped',
    updated_at = now(),
    {stage}_next_attempt_at = NULL,
    ai_analysis_log = p.ai_analysis_log
        || mediad_event('{skipped_event}', 'info', jsonb_build_object('reason', $2::text))
FROM waiting
WHERE p.media_id = waiting.media_id
RETURNING p.media_id;

-- count_due --
-- How many rows of this stage a claim (with the same storage node, $1) would take now: run
-- --once stops when all are zero.
SELECT count(*)
FROM post_media
WHERE {due}
  AND ($1::text IS NULL OR storage_node IS NULL OR storage_node = $1);

-- count_held --
-- How many rows of this stage the lease owners $1 (a host's worker processes) hold now: run
-- --once with several processes stops when this and count_due are zero for every stage.
SELECT count(*)
FROM post_media
WHERE {stage}_lease_owner = ANY($1::text[])
  AND {stage}_lease_expires_at > now();

-- requeue --
-- Put rows of this stage back in the queue as new (retry, analyze, derive): attempts start
-- over. $2 names rows by media_id (NULL: any), $3 an error_code, $4 a post.
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
  AND ($2::text[] IS NULL OR p.media_id = ANY($2))
  AND ($3::text IS NULL OR p.error_code = $3)
  AND ($4::text IS NULL OR p.post_id = $4)
  AND p.{status} <> 'started'
RETURNING p.media_id;

-- fragments --

-- due --
-- A row a claim may take: queued and due, or leased by a worker whose lease lapsed.
{stage}_queued
      AND CASE {status}
          WHEN 'not_started' THEN {stage}_next_attempt_at IS NULL OR {stage}_next_attempt_at <= now()
          ELSE {stage}_lease_expires_at IS NULL OR {stage}_lease_expires_at <= now()
      END

-- result_column --
-- A column a completion writes when its result holds it.
{column} = CASE WHEN h.result ? '{column}' THEN x.{column} ELSE p.{column} END

-- in_trouble --
-- This stage of the row failed, or waits for a retry.
p.{status} = 'failed' OR p.{stage}_next_attempt_at IS NOT NULL

-- skip_opened --
-- A disabled stage this completion opens (once its other prerequisites, {ready}, are done) is
-- skipped.
{status} = CASE WHEN p.{status} = 'not_started'{ready} THEN 'skipped' ELSE p.{status} END

-- skip_opened_event --
-- ... and says why.
CASE WHEN p.{status} = 'not_started'{ready}
    THEN mediad_event('{skipped_event}', 'info', jsonb_build_object('reason', '{disabled_reason}'))
    ELSE '[]' END

-- count_key --
-- One stage's key of a row in mediad_row_counts: the stage, its status, and for a failed row
-- its error_code.
('{stage}', {status}, CASE WHEN {status} = 'failed' THEN coalesce(error_code, 'unknown') END)

-- queue_count --
-- One stage's rows due now and rows leased, read through its queue index (the rows waiting or
-- leased), so the cost follows the queue, not the table.
SELECT '{stage}' AS stage,
    count(*) FILTER (WHERE {due}) AS due,
    count(*) FILTER (WHERE {status} = 'started' AND {stage}_lease_expires_at > now()) AS leased
FROM post_media
WHERE {stage}_queued

-- evictable --
-- This stage lets a local file go.
{status} IN ({evictable_statuses})

-- waiting --
-- A row waiting in this stage's queue as a statement left it ("n").
(n.{stage}_queued AND n.{status} = 'not_started')

-- made_due --
-- Whether a statement made rows due for this stage: waiting in its result ({waiting}), and not
-- already so before it ({was_due}: false for an insert).
bool_or({waiting} AND NOT {was_due}) AS {stage}

-- was_due --
-- ... for an update: the row as it was ("o").
coalesce(o.{stage}_queued AND o.{status} = 'not_started', false)

-- notify_stage --
-- Wake this stage's pools.
IF made_due.{stage} THEN
        PERFORM pg_notify('mediad', '{stage}');
    END IF;

-- plain queries --

-- write_function --
-- What every statement writing post_media causes, called once per statement with the rows it
-- wrote as transition tables (however many: a bulk INSERT ... SELECT or COPY of 100,000 rows
-- is one call); (re)installed by every migrate from the stage declarations.
-- Counts: mediad_row_counts gets, in the statement's own transaction, one delta row per
-- (stage, status, error_code) it changed. Appending takes no row lock, so writers never wait
-- on each other's counts, however long a scraper's transaction; fold_row_counts sums them.
-- Wake-ups: one NOTIFY per stage for which the statement made rows due (inserted, re-queued,
-- or their last prerequisite done), in one pass over its rows.
CREATE OR REPLACE FUNCTION mediad_after_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    made_due record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM mediad_row_counts;
        RETURN NULL;
    END IF;
    -- The rows are grouped by their statuses first (a handful of groups however many rows),
    -- then each group is split into its stages' keys.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mediad_row_counts (stage, status, error_code, rows)
        SELECT k.stage, k.status, k.error_code, sum(g.rows)
        FROM (SELECT {status_columns}, error_code, count(*) AS rows
              FROM mediad_new GROUP BY {status_columns}, error_code) AS g,
        LATERAL (VALUES {count_keys}) AS k(stage, status, error_code)
        GROUP BY 1, 2, 3;
        SELECT {made_due_inserted} INTO made_due FROM mediad_new AS n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO mediad_row_counts (stage, status, error_code, rows)
        SELECT k.stage, k.status, k.error_code, -sum(g.rows)
        FROM (SELECT {status_columns}, error_code, count(*) AS rows
              FROM mediad_old GROUP BY {status_columns}, error_code) AS g,
        LATERAL (VALUES {count_keys}) AS k(stage, status, error_code)
        GROUP BY 1, 2, 3;
        RETURN NULL;
    ELSE
        INSERT INTO mediad_row_counts (stage, status, error_code, rows)
        SELECT k.stage, k.status, k.error_code, sum(g.rows)
        FROM (SELECT {status_columns}, error_code, count(*) AS rows
              FROM mediad_new GROUP BY {status_columns}, error_code
              UNION ALL
              SELECT {status_columns}, error_code, -count(*)
              FROM mediad_old GROUP BY {status_columns}, error_code) AS g,
        LATERAL (VALUES {count_keys}) AS k(stage, status, error_code)
        GROUP BY 1, 2, 3
        HAVING sum(g.rows) <> 0;
        -- Only the rows waiting in some queue now can have been made due: a claim's, a
        -- heartbeat's or a completion's of a last stage join nothing.
        SELECT {made_due_updated} INTO made_due
        FROM mediad_new AS n LEFT JOIN mediad_old AS o USING (media_id)
        WHERE {any_waiting};
    END IF;
    {notify_stages}
    RETURN NULL;
END
$$;

-- write_triggers --
-- One statement trigger per kind of write (transition tables take one event each, and cannot
-- go with `UPDATE OF columns`: every UPDATE calls it, one that changes no status costing a
-- pass over the rows it wrote). The row trigger that NOTIFYed once per row is dropped.
DROP TRIGGER IF EXISTS mediad_notify ON post_media;
DROP FUNCTION IF EXISTS mediad_notify();
DROP TRIGGER IF EXISTS mediad_after_insert ON post_media;
DROP TRIGGER IF EXISTS mediad_after_update ON post_media;
DROP TRIGGER IF EXISTS mediad_after_delete ON post_media;
DROP TRIGGER IF EXISTS mediad_after_truncate ON post_media;
CREATE TRIGGER mediad_after_insert AFTER INSERT ON post_media
    REFERENCING NEW TABLE AS mediad_new
    FOR EACH STATEMENT EXECUTE FUNCTION mediad_after_write();
CREATE TRIGGER mediad_after_update AFTER UPDATE ON post_media
    REFERENCING OLD TABLE AS mediad_old NEW TABLE AS mediad_new
    FOR EACH STATEMENT EXECUTE FUNCTION mediad_after_write();
CREATE TRIGGER mediad_after_delete AFTER DELETE ON post_media
    REFERENCING OLD TABLE AS mediad_old
    FOR EACH STATEMENT EXECUTE FUNCTION mediad_after_write();
CREATE TRIGGER mediad_after_truncate AFTER TRUNCATE ON post_media
    FOR EACH STATEMENT EXECUTE FUNCTION mediad_after_write();

-- count_lock --
-- While the counts are taken again and the triggers replaced, no row may change (reads go
-- on): taken first, so the later trigger DDL cannot deadlock with a writer.
LOCK TABLE post_media IN SHARE ROW EXCLUSIVE MODE;

-- recount_rows --
-- Count every row again: a full scan, run only when the triggers change (the first migrate
-- that installs them, a stage added or removed).
DELETE FROM mediad_row_counts;
INSERT INTO mediad_row_counts (stage, status, error_code, rows)
SELECT k.stage, k.status, k.error_code, count(*)
FROM post_media, LATERAL (VALUES {count_keys}) AS k(stage, status, error_code)
GROUP BY 1, 2, 3;

-- derived_table --
-- The schema objects derived from the stage declarations, as last installed.
CREATE TABLE IF NOT EXISTS mediad_derived (
    name text PRIMARY KEY,
    definition text NOT NULL
);

-- derived_definitions --
-- What is installed now.
SELECT name, definition FROM mediad_derived;

-- derived_record --
-- Remember what was installed.
INSERT INTO mediad_derived (name, definition) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition;

-- row_counts --
-- Rows per stage and status, and the failed ones per error_code, summed from the delta rows
-- the counting triggers keep (a handful per key between folds).
SELECT stage, status, error_code, sum(rows)::bigint AS rows
FROM mediad_row_counts
GROUP BY stage, status, error_code
HAVING sum(rows) <> 0;

-- fold_row_counts --
-- Sum the delta rows into one row per key once there are more than $2 of them, unless another
-- fold holds the lock ($1). Atomic: a reader sees the deltas or their sums, never both, and
-- deltas committed meanwhile stay for the next fold.
WITH folding AS MATERIALIZED (
    SELECT (SELECT count(*) FROM mediad_row_counts) > $2 AND pg_try_advisory_xact_lock($1)
        AS allowed
), folded AS (
    DELETE FROM mediad_row_counts
    WHERE (SELECT allowed FROM folding)
    RETURNING stage, status, error_code, rows
)
INSERT INTO mediad_row_counts (stage, status, error_code, rows)
SELECT stage, status, error_code, sum(rows)
FROM folded
GROUP BY stage, status, error_code
HAVING sum(rows) <> 0;

-- queue_counts --
-- Per stage, the rows due now and the rows leased (see the queue_count fragment).
{queue_counts}

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
-- Queue a batch of imported media, one array element each ($1 post_id, $2 media_url,
-- $3 media_type, $4 platform, $5 variants as JSON text, $6 position in the post), except
-- those whose post already has a row for the URL; each new row's log starts with
-- media_imported, which says where in the post the medium stands. Returns the new media_ids.
INSERT INTO post_media (post_id, media_url, media_type, platform, variants, ai_analysis_log)
SELECT m.post_id, m.media_url, m.media_type, m.platform, m.variants::jsonb,
    jsonb_build_array(mediad_event('media_imported', 'info',
        jsonb_build_object('position', m.position, 'primary', m.position = 0)))
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[])
    AS m(post_id, media_url, media_type, platform, variants, position)
-- Two tests rather than IS NOT DISTINCT FROM, which no index can answer: each is a probe of
-- the post_id index per medium (a NULL post_id is found there too). OFFSET 0 keeps each a
-- probe: as an anti-join, the planner would hash the whole table for every batch (0.4 s a
-- batch at 400,000 rows, growing with the table).
WHERE NOT EXISTS (
    SELECT 1 FROM post_media p WHERE p.post_id = m.post_id AND p.media_url = m.media_url
    OFFSET 0
) AND NOT (m.post_id IS NULL AND EXISTS (
    SELECT 1 FROM post_media p WHERE p.post_id IS NULL AND p.media_url = m.media_url OFFSET 0
))
RETURNING media_id;

-- list_rows --
-- Rows, newest first, optionally of one post and/or with one status in any stage.
SELECT media_id, post_id, platform, media_type, media_url, {status_columns}, error_code,
    local_file_path, hosted_url, archive_url, sha256_sum, file_size, mime_type, created_at,
    updated_at
FROM post_media
WHERE ($1::text IS NULL OR post_id = $1)
  AND ($2::text IS NULL OR $2 IN ({status_columns}))
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

-- evict_candidates --
-- Local files under the store ($1, with its trailing slash) that nothing needs locally any more:
-- every row pointing at one is archived and done with every stage eviction waits for. Least recently
-- used first (downloaded, or brought back by `mediad restore`), paged on (last_used, path) after
-- ($2, $3); only files stored on this node ($5), since another host's store may use the same path.
SELECT local_file_path,
    max(greatest(coalesce(downloaded_at, created_at), restored_at)) AS last_used,
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
HAVING bool_and(archive_url IS NOT NULL AND {evictable})
   AND (max(greatest(coalesce(downloaded_at, created_at), restored_at)), local_file_path)
       > ($2::timestamptz, $3::text)
ORDER BY last_used, local_file_path
LIMIT $4;

-- evict_lock_file --
-- Lock the rows of one local file on this node ($2) and say again whether each lets it go.
SELECT media_id,
    archive_url IS NOT NULL AND {evictable} AS evictable
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
    last_error_at = now(),
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
    -- A file brought back is wanted now: eviction must not take it first (0008).
    restored_at = CASE WHEN $4::text = 'local_file_restored' THEN now() ELSE p.restored_at END,
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
        ELSE coalesce(p.metadata, '{}'::jsonb) || jsonb_build_object('archive', $3::jsonb) END,
    error_code = CASE WHEN p.error_code IN ('archive_missing', 'archive_corrupt')
        THEN NULL ELSE p.error_code END,
    last_error = CASE WHEN p.error_code IN ('archive_missing', 'archive_corrupt')
        THEN NULL ELSE p.last_error END,
    last_error_at = CASE WHEN p.error_code IN ('archive_missing', 'archive_corrupt')
        THEN NULL ELSE p.last_error_at END,
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

-- dashboard_recent_media --
-- The dashboard's grid: the newest rows (walking post_media_created_at backwards).
SELECT * FROM post_media
ORDER BY created_at DESC, media_id DESC
LIMIT $1;

-- dashboard_post_media --
-- One post's media, in the order they were enqueued.
SELECT * FROM post_media
WHERE post_id = $1
ORDER BY created_at, media_id
LIMIT $2;

-- dashboard_failure_examples --
-- The most recently failed rows of one stage ($2) with one error_code ($3), at most $1:
-- the rows of that error_code newest first through post_media_error_code, until $1 of them
-- are failed in that stage.
SELECT media_id, post_id, media_url, last_error
FROM post_media
WHERE error_code = $3 AND {failed_in_stage}
ORDER BY last_error_at DESC NULLS LAST
LIMIT $1;

-- analysis_cached --
-- The analysis already made of these bytes ($1) with this backend, model and prompt.
SELECT result FROM mediad_analysis_cache
WHERE sha256 = $1 AND backend = $2 AND model = $3 AND prompt_sha256 = $4;

-- analysis_record --
-- Keep an analysis for the next rows with the same bytes (the first one kept stands), and add
-- its request's tokens and cost to today's (UTC) spend, in one statement.
WITH kept AS (
    INSERT INTO mediad_analysis_cache (sha256, backend, model, prompt_sha256, result)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT DO NOTHING
)
INSERT INTO mediad_analysis_spend AS s
    (day, backend, model, requests, prompt_tokens, completion_tokens, cost_usd)
VALUES ((now() AT TIME ZONE 'UTC')::date, $2, $3, 1, $6, $7, $8)
ON CONFLICT (day, backend, model) DO UPDATE
SET requests = s.requests + 1,
    prompt_tokens = s.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = s.completion_tokens + EXCLUDED.completion_tokens,
    cost_usd = s.cost_usd + EXCLUDED.cost_usd;

-- analysis_spent_today --
-- USD spent on analysis today (UTC), by every host: the budget's measure.
SELECT coalesce(sum(cost_usd), 0)::double precision
FROM mediad_analysis_spend
WHERE day = (now() AT TIME ZONE 'UTC')::date;

-- analysis_spend --
-- Requests, tokens and cost of analysis today (UTC) and in total.
SELECT
    coalesce(sum(requests) FILTER (WHERE today), 0)::bigint AS requests_today,
    coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE today), 0)::bigint
        AS tokens_today,
    coalesce(sum(cost_usd) FILTER (WHERE today), 0)::double precision AS cost_today_usd,
    coalesce(sum(requests), 0)::bigint AS requests_total,
    coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS tokens_total,
    coalesce(sum(cost_usd), 0)::double precision AS cost_total_usd
FROM mediad_analysis_spend,
LATERAL (SELECT day = (now() AT TIME ZONE 'UTC')::date AS today) AS t;

-- analysis_post_spend --
-- Tokens and cost of one post's analyses.
SELECT count(*) FILTER (WHERE analysis_tokens > 0) AS analysed,
    coalesce(sum(analysis_tokens), 0)::bigint AS tokens,
    coalesce(sum(analysis_cost_usd), 0)::double precision AS cost_usd
FROM post_media
WHERE post_id = $1;

-- analysis_hashes --
-- Each distinct analysed file (by SHA-256) with its perceptual hashes and the rows holding it,
-- of one post ($1) or all. Only mediad's own documents are read (an adopted table's free-text
-- analyses are left alone).
SELECT sha256_sum,
    array_agg(media_id ORDER BY media_id) AS media_ids,
    array_agg(DISTINCT post_id) FILTER (WHERE post_id IS NOT NULL) AS post_ids,
    (min(ai_analysis)::jsonb) -> 'hashes' AS hashes
FROM post_media
WHERE ai_analysis_status = 'completed'
  AND ai_analysis LIKE '{"schema": "mediad.analysis/1"%'
  AND ($1::text IS NULL OR post_id = $1)
GROUP BY sha256_sum
HAVING (min(ai_analysis)::jsonb) ? 'hashes';

-- derive_reuse --
-- The derivatives another row already made of these bytes ($1) with this plan ($3), in the
-- store of this node ($4): the same bytes are derived once.
SELECT media_id, derivatives, metadata -> 'derive' AS derive
FROM post_media
WHERE sha256_sum = $1
  AND media_id <> $2
  AND derive_status = 'completed'
  AND derivatives IS NOT NULL
  AND metadata #> '{derive,plan}' = $3::jsonb
  AND ($4::text IS NULL OR storage_node IS NULL OR storage_node = $4)
ORDER BY derived_at DESC NULLS LAST
LIMIT 1;

-- derive_siblings --
-- The rows `mediad derive` re-queues: those named ($1), those of a post ($2), and every row
-- holding the same bytes as one of them (they share one set of derivative files).
SELECT DISTINCT p.media_id
FROM post_media AS named
JOIN post_media AS p ON p.sha256_sum = named.sha256_sum OR p.media_id = named.media_id
WHERE named.media_id = ANY($1::text[]) OR named.post_id = $2::text
ORDER BY p.media_id;

-- derived_rows --
-- The next page of rows (by media_id after $1) whose derivatives `verify` checks: completed on
-- this node ($3), with what re-deriving one needs.
SELECT media_id, post_id, media_type, local_file_path, hosted_url, md5_sum, sha256_sum,
    file_size, mime_type, width, height, archive_url, derivatives
FROM post_media
WHERE derive_status = 'completed'
  AND derivatives IS NOT NULL
  AND media_id > $1
  AND (storage_node IS NULL OR storage_node = $3)
ORDER BY media_id
LIMIT $2;

-- derivatives_repaired --
-- Rows holding the bytes $1 on this node ($6) whose derivatives were made again (`verify
-- --repair`): the new record ($2, $3, $4), and an event ($5).
UPDATE post_media AS p
SET derivatives = $2::jsonb,
    thumbnail_url = $3::text,
    derived_at = now(),
    metadata = coalesce(p.metadata, '{}'::jsonb) || jsonb_build_object('derive', $4::jsonb),
    ai_analysis_log = p.ai_analysis_log || mediad_event('derivatives_repaired', 'success', $5::jsonb)
WHERE p.sha256_sum = $1
  AND p.derive_status = 'completed'
  AND (p.storage_node IS NULL OR p.storage_node = $6)
RETURNING p.media_id;

-- derivative_url_row --
-- What `mediad url --kind` chooses from: best_url_row's columns and the row's derivatives.
SELECT media_id, media_url, url_expires_at, local_file_path, hosted_url, archive_status,
    archive_url, derive_status, derivatives, metadata #> '{derive,not_kept}' AS not_kept
FROM post_media
WHERE media_id = $1;

-- restore_candidates --
-- Evicted rows of this node ($4) that `mediad restore` brings back: all of them ($1), or those
-- named ($2) or of a post ($3), and the evicted rows holding the same bytes; one line per
-- distinct bytes.
WITH evicted AS (
    SELECT media_id, post_id, sha256_sum, mime_type, file_size, archive_url
    FROM post_media
    WHERE download_status = 'completed'
      AND local_file_path IS NULL
      AND archive_url IS NOT NULL
      AND sha256_sum IS NOT NULL
      AND (storage_node IS NULL OR storage_node = $4)
)
SELECT sha256_sum, min(mime_type) AS mime_type, max(file_size) AS file_size,
    array_agg(media_id ORDER BY media_id) AS media_ids,
    array_agg(DISTINCT archive_url) AS archive_urls
FROM evicted
WHERE sha256_sum IN (
    SELECT sha256_sum FROM evicted
    WHERE $1 OR media_id = ANY($2::text[]) OR post_id = $3::text
)
GROUP BY sha256_sum
ORDER BY sha256_sum;

-- restore_failed --
-- Rows whose evicted file could not be brought back (the archive does not hold their bytes).
UPDATE post_media AS p
SET ai_analysis_log = p.ai_analysis_log || mediad_event('restore_failed', 'failure',
        jsonb_build_object('archive_url', p.archive_url, 'error_code', $2::text,
            'error', $3::text, 'by', $4::text))
WHERE p.media_id = ANY($1::text[])
RETURNING p.media_id;
