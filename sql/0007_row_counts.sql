-- Rows per stage and status (and the failed ones per error_code), kept by statement triggers so
-- that `status`, /metrics and the dashboard read a few rows instead of scanning post_media.
-- Each statement that changes rows appends its deltas here; folds sum them (see queries.sql:
-- write_function, fold_row_counts). No key: appending never waits on a row lock. The
-- triggers, derived from the stage declarations, are installed by migrate, which fills this
-- table from a full count the first time.
CREATE TABLE IF NOT EXISTS mediad_row_counts (
    stage text NOT NULL,
    status text NOT NULL,
    error_code text,
    rows bigint NOT NULL
);
