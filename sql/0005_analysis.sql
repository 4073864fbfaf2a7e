-- The analysis stage: what each row's analysis cost, one analysis per (bytes, backend, model,
-- prompt) reused by every row holding those bytes, and the spend per UTC day (the budget).
ALTER TABLE post_media
    ADD COLUMN IF NOT EXISTS analysis_tokens integer,
    ADD COLUMN IF NOT EXISTS analysis_cost_usd double precision;

CREATE TABLE IF NOT EXISTS mediad_analysis_cache (
    sha256 text NOT NULL,
    backend text NOT NULL,
    model text NOT NULL,
    prompt_sha256 text NOT NULL,
    result jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, backend, model, prompt_sha256)
);

CREATE TABLE IF NOT EXISTS mediad_analysis_spend (
    day date NOT NULL,
    backend text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (day, backend, model)
);
