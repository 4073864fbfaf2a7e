"""The analysis stage: a downloaded image (or a video's frames at 25, 50 and 75%) becomes one JSON
document in `ai_analysis`, made by the configured backend.

source (the local file, or the archived object when it was evicted) ▸ the same bytes analysed
before with this backend, model and prompt? reuse it ▸ analyse ▸ record tokens and cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg
import structlog

from mediad import errors, metrics, queries, stages
from mediad.analysis import document
from mediad.config import AnalysisConfig
from mediad.media import decoders
from mediad.media.decoders import DecoderPool
from mediad.resources import Resources
from mediad.singleflight import SingleFlight
from mediad.stage import Result, Row, Stage
from mediad.storage import originals
from mediad.storage.local import Store

log = structlog.get_logger(__name__)
# One analysis: its document, its (input, output) tokens and its cost in USD.
_Analysed = tuple[dict[str, Any], tuple[int, int], float]

# Frames of a video that are analysed, as fractions of its length.
VIDEO_FRAMES = (0.25, 0.5, 0.75)
# How long the day's spend read from the database stands before it is read again: other hosts
# spend from the same budget.
_SPEND_REFRESH = 10.0


class Backend(Protocol):
    name: str
    model: str
    prompt_sha256: str | None

    async def describe(self, path: Path, mime_type: str) -> Analysed: ...

    async def close(self) -> None: ...


class Analysed:
    """One backend's analysis of one file: the document's fields and its tokens."""

    def __init__(
        self, fields: dict[str, Any], model: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None:
        self.fields = fields
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


def kind_of(mime_type: str | None) -> str | None:
    """ "image" or "video" for what the stage analyses; None for audio, documents and the rest."""
    major = (mime_type or "").partition("/")[0]
    return major if major in ("image", "video") else None


class OpenAIPictures:
    """The openai backend fed with JPEGs of the file (the picture, or the video's frames),
    decoded and downscaled in a decoder worker."""

    def __init__(
        self, config: AnalysisConfig, decoder_pool: DecoderPool, session: aiohttp.ClientSession
    ) -> None:
        from mediad.analysis.openai import OpenAIBackend

        self._api = OpenAIBackend(config, os.environ.get("OPENAI_API_KEY") or None, session)
        self._max_px = config.max_image_px
        self._decoders = decoder_pool
        self.name = self._api.name
        self.model = self._api.model
        self.prompt_sha256: str | None = self._api.prompt_sha256

    async def describe(self, path: Path, mime_type: str) -> Analysed:
        payload = {
            "path": str(path),
            "mime_type": mime_type,
            "longest": self._max_px,
            "fractions": list(VIDEO_FRAMES),
        }
        jpegs = await self._decoders.run("jpegs", payload, cost_bytes=await self._cost(payload))
        answer = await self._api.analyze(jpegs["jpegs"])
        return Analysed(answer.fields, answer.model, answer.prompt_tokens, answer.completion_tokens)

    async def _cost(self, payload: dict[str, Any]) -> int:
        if kind_of(payload["mime_type"]) == "video" or payload["mime_type"] == "image/jpeg":
            # A JPEG decodes at a DCT scale near max_image_px; a video a few frames at a time.
            return 4 * self._max_px * self._max_px * 4
        return decoders.pixel_bytes(await self._decoders.run("image_header", payload))

    async def close(self) -> None:
        """The session is the daemon's to close."""


class LocalAnalysis:
    """The local backend: OCR, perceptual hashes, colours and the blank flag, offline, in a
    decoder worker (its libraries are imported there, never in the daemon)."""

    name = "local"

    def __init__(self, config: AnalysisConfig, decoder_pool: DecoderPool) -> None:
        from mediad.analysis import local

        self._max_px = config.max_image_px
        self._decoders = decoder_pool
        # The model's name without loading it here: the OCR runtime stays in the workers.
        self.model = local.model_name()
        self.prompt_sha256: str | None = local.settings_sha256(max_px=self._max_px)

    async def describe(self, path: Path, mime_type: str) -> Analysed:
        payload = {"path": str(path), "mime_type": mime_type, "max_px": self._max_px}
        doc = await self._decoders.run("analyze_local", payload)
        fields = {k: v for k, v in doc.items() if k not in _DOCUMENT_HEAD}
        return Analysed(fields, str(doc.get("model") or self.model))

    async def close(self) -> None:
        """Nothing of its own to close."""


# The keys document.document() writes itself.
_DOCUMENT_HEAD = frozenset({"schema", "backend", "model", "prompt_sha256"})


def _is_file(path: str | None) -> bool:
    return path is not None and os.path.isfile(path)


class Analyser:
    """Analyses one row with the backend, once per distinct bytes, within the budget."""

    def __init__(
        self,
        config: AnalysisConfig,
        backend: Backend,
        pool: asyncpg.Pool[Any],
        store: Store,
        archive: Callable[[], Awaitable[Any]] | None,
    ) -> None:
        self._config = config
        self._backend = backend
        self._pool = pool
        self._store = store
        self._archive = archive
        self._sql = queries.plain()
        self._in_flight: SingleFlight[tuple[str, ...], _Analysed] = SingleFlight()
        self._spent: tuple[float, float] | None = None  # (read at, USD today)

    async def process(self, row: Row) -> Result:
        kind = kind_of(row.mime_type)
        if kind is None:
            raise errors.SkipRowError(f"{row.mime_type or row.media_type} is not analysed")
        if not row.sha256_sum:
            raise errors.PermanentError("the row has no SHA-256", error_code="bad_digests")
        key = (
            row.sha256_sum,
            self._backend.name,
            self._backend.model,
            self._backend.prompt_sha256 or "",
        )
        started = time.monotonic()
        cached = await self._pool.fetchval(self._sql["analysis_cached"], *key)
        if cached is not None:
            return self._result(cached, started, cached=True)
        # The same bytes analysed for another row right now: that one's answer, once.
        analysed, shared = await self._in_flight.run(key, lambda: self._analyse(row, key))
        doc, tokens, cost = analysed
        if shared:
            return self._result(doc, started, cached=True)
        return self._result(doc, started, cached=False, tokens=tokens, cost=cost)

    async def _analyse(self, row: Row, key: tuple[str, ...]) -> _Analysed:
        await self._check_budget()
        async with self._source(row) as path:
            analysed = await self._backend.describe(path, row.mime_type or "")
        cost = (
            analysed.prompt_tokens * self._config.input_price_per_mtok
            + analysed.completion_tokens * self._config.output_price_per_mtok
        ) / 1_000_000
        doc = document.document(
            backend=self._backend.name,
            model=analysed.model,
            prompt_sha256=self._backend.prompt_sha256,
            fields=analysed.fields,
        )
        await self._pool.execute(
            self._sql["analysis_record"],
            *key,
            doc,
            analysed.prompt_tokens,
            analysed.completion_tokens,
            cost,
        )
        if self._spent is not None:
            self._spent = (self._spent[0], self._spent[1] + cost)
        metrics.ANALYSIS_PROMPT_TOKENS.inc(analysed.prompt_tokens)
        metrics.ANALYSIS_COMPLETION_TOKENS.inc(analysed.completion_tokens)
        metrics.ANALYSIS_COST_USD.inc(cost)
        return doc, (analysed.prompt_tokens, analysed.completion_tokens), cost

    async def _check_budget(self) -> None:
        """A spent daily_budget pauses the stage until the next UTC day; it fails no row."""
        budget = self._config.daily_budget
        if budget <= 0:
            return
        now = time.monotonic()
        if self._spent is None or now - self._spent[0] > _SPEND_REFRESH:
            self._spent = (now, await self._pool.fetchval(self._sql["analysis_spent_today"]))
        if self._spent[1] >= budget:
            today = datetime.now(UTC)
            midnight = (today + timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            raise errors.StagePausedError(
                f"analysis.daily_budget ({budget} USD) is spent for today: {self._spent[1]:.4f}"
                " USD; analysis resumes at the next UTC day",
                error_code="analysis_budget_spent",
                pause_for=(midnight - today).total_seconds() + 1,
            )

    @contextlib.asynccontextmanager
    async def _source(self, row: Row) -> AsyncIterator[Path]:
        """The row's bytes on disk: its local file, or its archived object fetched into a temp
        file and proven to be the row's SHA-256 (nothing else is analysed)."""
        if await asyncio.to_thread(_is_file, row.local_file_path):
            assert row.local_file_path is not None
            yield Path(row.local_file_path)
            return
        if not row.archive_url or self._archive is None:
            raise errors.PermanentError(
                "the local file is gone and there is no archived copy to read",
                error_code="local_file_missing",
            )
        assert row.sha256_sum is not None
        tmp = await originals.fetch(
            await self._archive(), self._store, row.archive_url, row.sha256_sum
        )
        try:
            yield tmp.path
        finally:
            await asyncio.to_thread(tmp.discard)

    def _result(
        self,
        doc: dict[str, Any],
        started: float,
        *,
        cached: bool,
        tokens: tuple[int, int] = (0, 0),
        cost: float = 0.0,
    ) -> Result:
        prompt_tokens, completion_tokens = tokens
        details = {
            "backend": doc.get("backend"),
            "model": doc.get("model"),
            "analysis_time_ms": round((time.monotonic() - started) * 1000, 1),
            "tokens_used": prompt_tokens + completion_tokens,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": round(cost, 6),
            "cached": cached,
        }
        columns = {
            "ai_analysis": json.dumps(doc, ensure_ascii=False),
            "analysis_tokens": prompt_tokens + completion_tokens,
            "analysis_cost_usd": cost,
        }
        return Result(columns=columns, details=details)


@contextlib.asynccontextmanager
async def open_stage(resources: Resources) -> AsyncIterator[Stage]:
    """The analysis stage with the configured backend."""
    config = resources.config
    backend: Backend
    if config.analysis.backend == "openai":
        session = await resources.session(
            timeout=aiohttp.ClientTimeout(total=config.analysis.timeout),
            connector=aiohttp.TCPConnector(limit=2 * config.analysis.concurrency),
        )
        backend = OpenAIPictures(config.analysis, await resources.decoders(), session)
    else:
        # OCR's models take ~450 MB of each worker's address space and more while they run:
        # workers of their own, with analysis.worker_memory, one per row analysed at once.
        ocr_workers = dataclasses.replace(
            config.media,
            workers=config.analysis.concurrency,
            worker_memory=config.analysis.worker_memory,
        )
        backend = LocalAnalysis(config.analysis, await resources.decoders("analysis", ocr_workers))
    archive = resources.s3 if config.archive.bucket else None
    analyser = Analyser(config.analysis, backend, resources.pool, resources.store, archive)
    try:
        yield Stage.configured(stages.ANALYSIS, analyser.process, config)
    finally:
        await backend.close()
