-- Creates post_media, or adopts a seed-001 post_media table in place: every statement is
-- written so that it also works on a table that already has some of these columns, keeping
-- its rows and foreign keys.

CREATE TABLE IF NOT EXISTS post_media (
    media_id text PRIMARY KEY,
    post_id text,
    media_type text NOT NULL,
    media_url text NOT NULL
);

ALTER TABLE post_media
    ALTER COLUMN media_id SET DEFAULT 'med-' || replace(gen_random_uuid()::text, '-', ''),
    ADD COLUMN IF NOT EXISTS platform text,
    ADD COLUMN IF NOT EXISTS variants jsonb,
    ADD COLUMN IF NOT EXISTS url_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS download_status text NOT NULL DEFAULT 'not_started',
    ADD COLUMN IF NOT EXISTS local_file_path text,
    ADD COLUMN IF NOT EXISTS hosted_url text,
    ADD COLUMN IF NOT EXISTS md5_sum text,
    ADD COLUMN IF NOT EXISTS sha256_sum text,
    ADD COLUMN IF NOT EXISTS file_size bigint,
    ADD COLUMN IF NOT EXISTS mime_type text,
    ADD COLUMN IF NOT EXISTS width integer,
    ADD COLUMN IF NOT EXISTS height integer,
    ADD COLUMN IF NOT EXISTS duration_seconds double precision,
    ADD COLUMN IF NOT EXISTS metadata jsonb,
    ADD COLUMN IF NOT EXISTS downloaded_at timestamptz,
    ADD COLUMN IF NOT EXISTS archive_status text NOT NULL DEFAULT 'not_started',
    ADD COLUMN IF NOT EXISTS archive_url text,
    ADD COLUMN IF NOT EXISTS archived_at timestamptz,
    ADD COLUMN IF NOT EXISTS ai_analysis_status text NOT NULL DEFAULT 'not_started',
    ADD COLUMN IF NOT EXISTS ai_analysis text,
    ADD COLUMN IF NOT EXISTS ai_analyzed_at timestamptz,
    ADD COLUMN IF NOT EXISTS ai_analysis_log jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS error_code text,
    ADD COLUMN IF NOT EXISTS last_error text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now(),
    -- mediad's bookkeeping: per stage, attempts so far, the lease (owner and expiry) of the
    -- worker holding the row, and when a row waiting for a retry becomes due again.
    ADD COLUMN IF NOT EXISTS download_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS download_lease_owner text,
    ADD COLUMN IF NOT EXISTS download_lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS download_next_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS archive_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS archive_lease_owner text,
    ADD COLUMN IF NOT EXISTS archive_lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS archive_next_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS analysis_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS analysis_lease_owner text,
    ADD COLUMN IF NOT EXISTS analysis_lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS analysis_next_attempt_at timestamptz;

-- Seed 001 declared these narrower or with other defaults.
ALTER TABLE post_media
    ALTER COLUMN file_size TYPE bigint,
    ALTER COLUMN ai_analysis_status SET DEFAULT 'not_started',
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now();

-- Adopted rows: seed 001's 'pending' (and a 'started' no lease protects) are queued work,
-- and its log may hold a single object rather than an array.
ALTER TABLE post_media DROP CONSTRAINT IF EXISTS post_media_ai_analysis_status_check;
UPDATE post_media SET ai_analysis_status = 'not_started'
    WHERE ai_analysis_status IS NULL OR ai_analysis_status IN ('pending', 'started');
UPDATE post_media SET ai_analysis_log = jsonb_build_array(ai_analysis_log)
    WHERE jsonb_typeof(ai_analysis_log) <> 'array';
UPDATE post_media SET ai_analysis_log = '[]' WHERE ai_analysis_log IS NULL;
UPDATE post_media SET created_at = now() WHERE created_at IS NULL;
UPDATE post_media SET updated_at = now() WHERE updated_at IS NULL;
ALTER TABLE post_media
    ALTER COLUMN ai_analysis_status SET NOT NULL,
    ALTER COLUMN ai_analysis_log SET NOT NULL,
    ALTER COLUMN ai_analysis_log SET DEFAULT '[]',
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET NOT NULL,
    ADD CONSTRAINT post_media_ai_analysis_status_check
        CHECK (ai_analysis_status IN ('not_started', 'started', 'completed', 'failed', 'skipped')),
    ADD CONSTRAINT post_media_download_status_check
        CHECK (download_status IN ('not_started', 'started', 'completed', 'failed')),
    ADD CONSTRAINT post_media_archive_status_check
        CHECK (archive_status IN ('not_started', 'started', 'completed', 'failed', 'skipped'));
-- media_type and platform get no CHECK on purpose: a scraper's INSERT must never be refused
-- for them; a media_type nobody knows fails its row with an error_code instead.

-- One event of the log, in the shape of the contract; timestamps are ISO-8601 UTC.
CREATE OR REPLACE FUNCTION mediad_event(name text, status text, details jsonb)
RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object(
        'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'event', name,
        'status', status,
        'details', COALESCE(details, '{}'::jsonb))
$$;

-- The platform, from the URL's host.
CREATE OR REPLACE FUNCTION mediad_platform(url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN host ~ '(^|\.)(twitter\.com|x\.com|twimg\.com|t\.co)$' THEN 'twitter'
        WHEN host ~ '(^|\.)(facebook\.com|fb\.com|fbcdn\.net|fbsbx\.com|fb\.watch)$' THEN 'facebook'
        WHEN host ~ '(^|\.)(instagram\.com|cdninstagram\.com)$' THEN 'instagram'
        WHEN host ~ '(^|\.)(linkedin\.com|licdn\.com)$' THEN 'linkedin'
        WHEN host ~ '(^|\.)(tiktok\.com|tiktokcdn\.com|tiktokcdn-us\.com|tiktokv\.com)$' THEN 'tiktok'
        ELSE 'other'
    END
    FROM (SELECT lower(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/@?#]*@)?([^/:?#]+)')) AS host) AS h
$$;

-- When a Facebook/Instagram signed URL dies: its oe= parameter is a hex Unix time.
CREATE OR REPLACE FUNCTION mediad_url_expires_at(url text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(('x' || lpad(oe, 16, '0'))::bit(64)::bigint)
    FROM (SELECT substring(url FROM '[?&]oe=([0-9A-Fa-f]{1,8})(?:[&#]|$)') AS oe) AS o
    WHERE oe IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION mediad_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.platform IS NULL THEN
        NEW.platform := mediad_platform(NEW.media_url);
    END IF;
    IF NEW.url_expires_at IS NULL AND NEW.platform IN ('facebook', 'instagram') THEN
        NEW.url_expires_at := mediad_url_expires_at(NEW.media_url);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION mediad_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Wakes idle pools: a row became due for a stage (inserted, re-queued, or its download done).
CREATE OR REPLACE FUNCTION mediad_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.download_status = 'not_started'
       AND (TG_OP = 'INSERT' OR OLD.download_status <> 'not_started') THEN
        PERFORM pg_notify('mediad', 'download');
    END IF;
    IF NEW.download_status = 'completed' THEN
        IF NEW.archive_status = 'not_started' AND (TG_OP = 'INSERT'
           OR OLD.archive_status <> 'not_started' OR OLD.download_status <> 'completed') THEN
            PERFORM pg_notify('mediad', 'archive');
        END IF;
        IF NEW.ai_analysis_status = 'not_started' AND (TG_OP = 'INSERT'
           OR OLD.ai_analysis_status <> 'not_started' OR OLD.download_status <> 'completed') THEN
            PERFORM pg_notify('mediad', 'analysis');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER mediad_before_insert BEFORE INSERT ON post_media
    FOR EACH ROW EXECUTE FUNCTION mediad_before_insert();

-- mediad's own statements set updated_at themselves; anyone else's UPDATE gets it here.
CREATE TRIGGER mediad_touch BEFORE UPDATE ON post_media
    FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION mediad_touch();

-- The WHEN clause keeps the function out of the hot path: claims and most completions do
-- not make a row due anywhere.
CREATE TRIGGER mediad_notify AFTER INSERT OR UPDATE OF download_status, archive_status, ai_analysis_status
    ON post_media FOR EACH ROW
    WHEN (NEW.download_status = 'not_started'
          OR (NEW.download_status = 'completed'
              AND 'not_started' IN (NEW.archive_status, NEW.ai_analysis_status)))
    EXECUTE FUNCTION mediad_notify();

UPDATE post_media SET platform = mediad_platform(media_url) WHERE platform IS NULL;
UPDATE post_media SET url_expires_at = mediad_url_expires_at(media_url)
    WHERE url_expires_at IS NULL AND platform IN ('facebook', 'instagram');

-- Whether a row is in each stage's queue (waiting or leased). Claims flip a status from
-- not_started to started without changing these, so no indexed column changes and a claim is
-- a HOT update (no index entry written), given free room on the page: hence fillfactor 80.
ALTER TABLE post_media
    ADD COLUMN download_queued boolean
        GENERATED ALWAYS AS (download_status IN ('not_started', 'started')) STORED,
    ADD COLUMN archive_queued boolean
        GENERATED ALWAYS AS (archive_status IN ('not_started', 'started')
                             AND download_status = 'completed') STORED,
    ADD COLUMN analysis_queued boolean
        GENERATED ALWAYS AS (ai_analysis_status IN ('not_started', 'started')
                             AND download_status = 'completed') STORED;
ALTER TABLE post_media SET (fillfactor = 80);

-- The claim queries walk these in claim order, over the rows a stage may still take.
CREATE INDEX post_media_download_queue
    ON post_media (url_expires_at, created_at, media_id) WHERE download_queued;
CREATE INDEX post_media_archive_queue
    ON post_media (url_expires_at, created_at, media_id) WHERE archive_queued;
CREATE INDEX post_media_analysis_queue
    ON post_media (url_expires_at, created_at, media_id) WHERE analysis_queued;
CREATE INDEX IF NOT EXISTS post_media_post_id ON post_media (post_id);
CREATE INDEX IF NOT EXISTS post_media_sha256_sum ON post_media (sha256_sum);
