-- Which store holds a row's local file. Each host has its own storage.root (unless operators
-- share one), so the stages and commands that read or delete local files (archive, analysis,
-- verify, evict) take only the rows stored on their own node. NULL: downloaded before this
-- column existed; any node may try those, as before.
ALTER TABLE post_media ADD COLUMN IF NOT EXISTS storage_node text;
