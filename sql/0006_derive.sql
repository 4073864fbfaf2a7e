-- The derive stage: thumbnails, previews, the optimized JPEG and the public copy of each image
-- (and of a video's poster frame). Rows downloaded before this migration are queued for it
-- like new ones: an archive upgraded to this version gets thumbnails for what it already holds.
ALTER TABLE post_media
    ADD COLUMN IF NOT EXISTS derive_status text NOT NULL DEFAULT 'not_started',
    ADD COLUMN IF NOT EXISTS thumbnail_url text,
    ADD COLUMN IF NOT EXISTS derivatives jsonb,
    ADD COLUMN IF NOT EXISTS derived_at timestamptz,
    ADD COLUMN IF NOT EXISTS derive_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS derive_lease_owner text,
    ADD COLUMN IF NOT EXISTS derive_lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS derive_next_attempt_at timestamptz;

ALTER TABLE post_media
    DROP CONSTRAINT IF EXISTS post_media_derive_status_check,
    ADD CONSTRAINT post_media_derive_status_check
        CHECK (derive_status IN ('not_started', 'started', 'completed', 'failed', 'skipped'));

-- Whether a row is in the derive queue (waiting or leased): see 0001's download_queued.
ALTER TABLE post_media
    ADD COLUMN derive_queued boolean
        GENERATED ALWAYS AS (derive_status IN ('not_started', 'started')
                             AND download_status = 'completed') STORED;

CREATE INDEX post_media_derive_queue
    ON post_media (url_expires_at, created_at, media_id) WHERE derive_queued;
