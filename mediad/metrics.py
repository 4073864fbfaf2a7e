"""This process's Prometheus metrics, each defined once here and counted where its event happens.

Only counters and a histogram live here: they add up across processes, so with
`PROMETHEUS_MULTIPROC_DIR` set (prometheus_client's multiprocess mode, read when this module is
first imported) one endpoint can serve every worker process of a host. What is read at scrape
time instead (rows per stage and status from the database, the store's size, paused stages) is
made by the endpoint's collectors in mediad/http/collectors.py.

Labels are `stage`, `status` and `error_code` only, each from a bounded set: no media_id, no URL.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Histogram

OUTCOMES = Counter(
    "mediad_outcomes",
    "Rows this process finished, per stage, outcome (completed, retried, deferred, failed,"
    " skipped, released) and error_code (empty when completed or skipped). Retries are"
    ' status="retried".',
    ["stage", "status", "error_code"],
)
LEASES_LOST = Counter(
    "mediad_leases_lost",
    "Rows whose lease another worker took over while this process held them",
    ["stage"],
)
STAGE_PAUSES = Counter(
    "mediad_stage_pauses",
    "Times a stage stopped claiming because it cannot work at all (S3 down, disk full, analysis"
    " budget spent), by the error_code that paused it",
    ["stage", "error_code"],
)
DOWNLOAD_SECONDS = Histogram(
    "mediad_download_seconds",
    "Seconds of one fetch from its origin, first byte asked to last byte read",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf")),
)
DOWNLOAD_BYTES = Counter("mediad_download_bytes", "Bytes fetched from origins and stored")
DEDUP_HITS = Counter(
    "mediad_dedup_hits",
    "Downloads whose bytes the store already held (the same SHA-256 from another row)",
)
ARCHIVE_UPLOADED_BYTES = Counter(
    "mediad_archive_uploaded_bytes",
    "Bytes uploaded to the archive (objects already present there are not counted)",
)
ANALYSIS_PROMPT_TOKENS = Counter(
    "mediad_analysis_prompt_tokens", "Prompt (input) tokens the analysis backend was sent"
)
ANALYSIS_COMPLETION_TOKENS = Counter(
    "mediad_analysis_completion_tokens", "Completion (output) tokens the analysis backend answered"
)
ANALYSIS_COST_USD = Counter(
    "mediad_analysis_cost_usd",
    "What analysis cost, in USD, at analysis.input_price_per_mtok and output_price_per_mtok",
)

# error_codes are mediad's own identifiers; anything else (a bug, a service's raw code) is
# folded into one value so a label can never grow without bound.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def error_code_label(error_code: str | None) -> str:
    """`error_code` as a label value: itself when it looks like one of ours, else `other`."""
    if not error_code:
        return ""
    return error_code if _ERROR_CODE.fullmatch(error_code) else "other"


def count_outcome(stage: str, status: str, error_code: str | None = None) -> None:
    """One row finished by this process."""
    OUTCOMES.labels(stage, status, error_code_label(error_code)).inc()


def count_pause(stage: str, error_code: str) -> None:
    """A stage began a pause."""
    STAGE_PAUSES.labels(stage, error_code_label(error_code)).inc()
