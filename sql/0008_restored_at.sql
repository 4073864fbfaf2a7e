-- When `mediad restore` last brought a row's evicted file back. Eviction frees the least
-- recently used files first, by the latest download of the rows sharing a file; a file
-- restored just now, because someone wants it locally, counts as used now: without this it
-- would keep its old download time and be the first evicted again.
ALTER TABLE post_media
    ADD COLUMN IF NOT EXISTS restored_at timestamptz;
