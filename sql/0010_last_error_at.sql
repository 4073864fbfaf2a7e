-- When a row's error_code and last_error were recorded. The dashboard lists the latest failed
-- rows of each error_code through an index ordered by time; 0009 ordered that index by
-- updated_at, which every UPDATE changes, and an UPDATE that changes an indexed column cannot
-- be HOT: every claim then wrote an entry into each of the table's ten indexes. This column
-- changes only with the error itself, so claims are HOT again (0001's fillfactor).
ALTER TABLE post_media
    ADD COLUMN IF NOT EXISTS last_error_at timestamptz;

UPDATE post_media SET last_error_at = updated_at
WHERE error_code IS NOT NULL AND last_error_at IS NULL;

DROP INDEX IF EXISTS post_media_error_code;
CREATE INDEX post_media_error_code
    ON post_media (error_code, last_error_at DESC NULLS LAST) WHERE error_code IS NOT NULL;
