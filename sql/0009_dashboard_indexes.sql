-- The dashboard's front page reads the newest rows and the latest failed rows of each
-- error_code; without these both were a scan and sort of the whole table (seconds at a
-- million rows, at every refresh). With them each is a walk of a few index entries.
CREATE INDEX IF NOT EXISTS post_media_created_at ON post_media (created_at, media_id);
CREATE INDEX IF NOT EXISTS post_media_error_code
    ON post_media (error_code, updated_at) WHERE error_code IS NOT NULL;
