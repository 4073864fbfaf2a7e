"""The analysis stage with the openai backend, against a local server speaking OpenAI's wire
protocol and a real PostgreSQL: results, reuse, rate limits, refusals, bad answers, pauses."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from mediad import daemon
from mediad.analysis import document
from mediad.commands import status
from mediad.stages import analysis
from tests import media
from tests.acceptance.test_cli import mediad
from tests.archive_support import archive_settings, downloaded_rows, events, store_of
from tests.s3server import SeaweedFS
from tests.support import make_config, row
from tests.vision_server import Reply, VisionServer, api_error, completion, serving

KEY = "sk-test-very-secret-0123456789"


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VisionServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    async for served in serving(KEY):
        yield served


def config(server: VisionServer, root: Path, **overrides: str) -> Any:
    return make_config(
        storage_root=str(root),
        analysis_enabled="true",
        analysis_backend="openai",
        analysis_endpoint_url=server.base_url,
        analysis_model="vision-test",
        analysis_max_image_px="256",
        analysis_input_price_per_mtok="2.5",
        analysis_output_price_per_mtok="10",
        daemon_backoff_base="0.05s",
        daemon_backoff_max="0.1s",
        **overrides,
    )


async def analyse(cfg: Any, db_url: str) -> None:
    """`mediad run --once` with only the analysis stage."""
    async with asyncio.timeout(60):
        await daemon.run(cfg, once=True, url=db_url, openers={"analysis": analysis.open_stage})


async def photo_rows(pool: asyncpg.Pool[Any], cfg: Any, *seeds: int) -> list[str]:
    files = [media.jpeg(640, 480, seed=seed) for seed in seeds]
    made = await downloaded_rows(pool, store_of(cfg), files, analysis="not_started")
    return [d.media_id for d in made]


async def test_a_photo_is_analysed_and_recorded(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """One request with the key, a downscaled JPEG data URL and a json_schema response format;
    the row gets the document, its tokens and cost, and the events the contract names."""
    cfg = config(server, tmp_path)
    [media_id] = await photo_rows(pool, cfg, 1)
    await analyse(cfg, db_url)
    [seen] = server.seen
    assert seen.authorization == f"Bearer {KEY}"
    assert seen.picture_sizes == [(256, 192)]
    assert seen.response_format["type"] == "json_schema"
    assert seen.prompt == document.BUILTIN_PROMPT
    r = await row(pool, media_id)
    assert r["ai_analysis_status"] == "completed"
    assert r["ai_analyzed_at"] is not None
    doc = json.loads(r["ai_analysis"])
    assert doc["schema"] == "mediad.analysis/1"
    assert (doc["backend"], doc["model"]) == ("openai", "vision-test-2026")
    assert doc["prompt_sha256"] == document.prompt_sha256(document.BUILTIN_PROMPT)
    assert doc["description"] == "A red square on a plain background."
    assert doc["tags"] == ["red", "square"]
    cost = (1200 * 2.5 + 80 * 10) / 1_000_000
    assert r["analysis_tokens"] == 1280
    assert r["analysis_cost_usd"] == pytest.approx(cost)
    [done] = events(r, "ai_analysis_completed")
    details = done["details"]
    assert (details["backend"], details["model"], details["cached"]) == (
        "openai",
        "vision-test-2026",
        False,
    )
    assert (details["prompt_tokens"], details["completion_tokens"]) == (1200, 80)
    assert details["tokens_used"] == 1280
    assert details["cost_usd"] == pytest.approx(cost)
    assert details["analysis_time_ms"] >= 0
    assert events(r, "ai_analysis_started")
    assert KEY not in json.dumps(dict(r), default=str)
    report = await status.report(pool, post_id=r["post_id"])
    spend = report["analysis_spend"]
    assert (spend["requests_today"], spend["tokens_today"]) == (1, 1280)
    assert spend["cost_total_usd"] == pytest.approx(cost)
    assert spend["post"]["tokens"] == 1280


async def test_the_key_never_reaches_the_log(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """Whatever happens (an answer, a refusal of the key), the key is in no log line."""
    cfg = config(server, tmp_path)
    await photo_rows(pool, cfg, 2, 3)
    server.replies.append(api_error(401, "invalid_api_key", f"Incorrect API key: {KEY}"))
    with structlog.testing.capture_logs() as logs:
        await analyse(cfg, db_url)
    assert logs
    assert KEY not in json.dumps(logs, default=str)


async def test_the_same_bytes_are_analysed_once(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """Two rows with the same bytes (claimed together) and a third later cost one request; the
    others reuse it with cached: true and 0 tokens."""
    cfg = config(server, tmp_path)
    first, second = await photo_rows(pool, cfg, 4, 4)
    await analyse(cfg, db_url)
    [third] = await photo_rows(pool, cfg, 4)
    await analyse(cfg, db_url)
    assert len(server.seen) == 1
    cached = []
    for media_id in (first, second, third):
        r = await row(pool, media_id)
        assert r["ai_analysis_status"] == "completed"
        [done] = events(r, "ai_analysis_completed")
        cached.append(done["details"]["cached"])
        if done["details"]["cached"]:
            assert done["details"]["tokens_used"] == 0
            assert r["analysis_tokens"] == 0
    assert sorted(cached) == [False, True, True]


async def test_429_waits_for_retry_after(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """A 429 with Retry-After schedules the row's next try no sooner than asked, and no request
    for it is sent before then."""
    cfg = config(server, tmp_path)
    [media_id] = await photo_rows(pool, cfg, 5)
    server.replies.append(
        api_error(429, "rate_limit_exceeded", "slow down", **{"Retry-After": "30"})
    )
    started = time.time()
    await analyse(cfg, db_url)
    assert len(server.seen) == 1
    r = await row(pool, media_id)
    assert (r["ai_analysis_status"], r["error_code"]) == ("not_started", "rate_limited")
    [retry] = events(r, "retry_scheduled")
    assert retry["details"]["retry_in_seconds"] >= 30
    assert r["analysis_next_attempt_at"].timestamp() >= started + 29


@pytest.mark.parametrize(
    ("reply", "error_code"),
    [
        pytest.param(
            completion(refusal="I can't help with that."), "analysis_refused", id="refusal"
        ),
        pytest.param(
            api_error(400, "content_policy_violation", "rejected by our content policy"),
            "analysis_refused",
            id="content-policy",
        ),
        pytest.param(completion("this is not JSON at all"), "analysis_bad_response", id="not-json"),
        pytest.param(completion(finish_reason="length"), "analysis_bad_response", id="cut-off"),
        pytest.param(completion(choices=False), "analysis_bad_response", id="no-choices"),
        pytest.param(
            Reply(text="<html><body>Bad gateway</body></html>", content_type="text/html"),
            "analysis_bad_response",
            id="html",
        ),
        pytest.param(
            Reply(text=json.dumps({"pad": "x" * 10_000_000})),
            "analysis_bad_response",
            id="10-MB-answer",
        ),
        pytest.param(api_error(500, "server_error", "boom"), "http_5xx", id="5xx"),
        pytest.param(Reply(delay=3), "timeout", id="hung"),
    ],
)
async def test_bad_answers_fail_the_row_clearly(
    db_url: str,
    pool: asyncpg.Pool[Any],
    server: VisionServer,
    tmp_path: Path,
    reply: Reply,
    error_code: str,
) -> None:
    """Each bad answer fails its row (on its last attempt) with its own error_code and a message
    saying what was wrong; the next row is analysed as usual."""
    cfg = config(server, tmp_path, analysis_max_attempts="1", analysis_timeout="1s")
    bad, good = await photo_rows(pool, cfg, 6, 7)
    server.replies.append(reply)
    await analyse(cfg, db_url)
    statuses = {}
    for media_id in (bad, good):
        r = await row(pool, media_id)
        statuses[r["ai_analysis_status"]] = r
    assert set(statuses) == {"failed", "completed"}
    failed = statuses["failed"]
    assert failed["error_code"] == error_code
    assert failed["last_error"]
    [event] = events(failed, "ai_analysis_failed")
    assert event["details"]["error_code"] == error_code


async def test_an_answer_wrapped_in_prose_is_read(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """A server that ignores response_format and wraps the JSON in text still works."""
    cfg = config(server, tmp_path)
    [media_id] = await photo_rows(pool, cfg, 8)
    fields = {**json.loads(completion().body["choices"][0]["message"]["content"])}
    fields["description"] = "A wrapped answer."
    server.replies.append(completion(f"Sure! Here it is:\n```json\n{json.dumps(fields)}\n```"))
    await analyse(cfg, db_url)
    doc = json.loads((await row(pool, media_id))["ai_analysis"])
    assert doc["description"] == "A wrapped answer."


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(api_error(401, "invalid_api_key", "Incorrect API key"), id="bad-key"),
        pytest.param(api_error(404, "model_not_found", "no such model"), id="unknown-model"),
        pytest.param(api_error(429, "insufficient_quota", "quota exceeded"), id="quota"),
    ],
)
async def test_refusals_of_the_account_pause_the_stage_and_fail_no_row(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path, reply: Reply
) -> None:
    """A bad key, an unknown model or an exhausted quota pauses the stage, logged once at error
    level; the row is handed back with its attempt uncounted and nothing fails."""
    cfg = config(server, tmp_path, analysis_outage_pause="1h", analysis_concurrency="1")
    ids = await photo_rows(pool, cfg, 9, 10, 11)
    server.replies.append(reply)
    with structlog.testing.capture_logs() as logs:
        await analyse(cfg, db_url)
    assert len(server.seen) == 1
    for media_id in ids:
        r = await row(pool, media_id)
        assert r["ai_analysis_status"] == "not_started"
        assert r["analysis_attempts"] == 0
    refused = [e for e in logs if e["event"] == "analysis_api_refused"]
    assert len(refused) == 1 and refused[0]["log_level"] == "error"


async def test_a_spent_budget_pauses_without_failing_rows(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """Once today's spend reaches analysis.daily_budget the stage pauses until the next UTC day:
    the rows left wait (not_started), none fails, no request is sent for them."""
    cfg = config(server, tmp_path, analysis_daily_budget="0.001", analysis_concurrency="1")
    ids = await photo_rows(pool, cfg, 12, 13, 14)
    await analyse(cfg, db_url)
    assert len(server.seen) == 1
    states = [(await row(pool, m))["ai_analysis_status"] for m in ids]
    assert sorted(states) == ["completed", "not_started", "not_started"]
    waiting = [m for m, s in zip(ids, states, strict=True) if s == "not_started"]
    released = events(await row(pool, waiting[0]), "ai_analysis_released")
    assert released[-1]["details"]["reason"] == "analysis_budget_spent"


async def test_audio_and_documents_are_skipped_with_a_reason(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """Audio is not analysed: skipped, saying why, without a request."""
    cfg = config(server, tmp_path)
    [media_id] = await photo_rows(pool, cfg, 15)
    await pool.execute(
        "UPDATE post_media SET mime_type = 'audio/mpeg' WHERE media_id = $1", media_id
    )
    await analyse(cfg, db_url)
    r = await row(pool, media_id)
    assert r["ai_analysis_status"] == "skipped"
    assert events(r, "ai_analysis_skipped")[-1]["details"]["reason"] == "audio/mpeg is not analysed"
    assert server.seen == []


async def test_a_video_is_analysed_from_three_frames(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """A video goes as its frames at 25, 50 and 75% of its length, in one request."""
    cfg = config(server, tmp_path)
    made = await downloaded_rows(
        pool, store_of(cfg), [(media.mp4(), "videos", "mp4")], analysis="not_started"
    )
    await pool.execute("UPDATE post_media SET mime_type = 'video/mp4'")
    await analyse(cfg, db_url)
    [seen] = server.seen
    assert len(seen.picture_sizes) == 3
    assert (await row(pool, made[0].media_id))["ai_analysis_status"] == "completed"


async def test_a_local_server_without_a_key_works(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No OPENAI_API_KEY (Ollama, llama.cpp): no Authorization header at all, and it works."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async for keyless in serving(None):
        cfg = config(keyless, tmp_path)
        [media_id] = await photo_rows(pool, cfg, 16)
        await analyse(cfg, db_url)
        assert [s.authorization for s in keyless.seen] == [None]
        assert (await row(pool, media_id))["ai_analysis_status"] == "completed"


def cut_short(path: Path) -> None:
    """The stored file damaged behind mediad's back: only its first 200 bytes left."""
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:200])


async def test_a_picture_that_does_not_decode_fails_its_row(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """A stored picture Pillow refuses at analysis time fails corrupt_media, with no request."""
    cfg = config(server, tmp_path)
    [media_id] = await photo_rows(pool, cfg, 17)
    await asyncio.to_thread(cut_short, Path((await row(pool, media_id))["local_file_path"]))
    await analyse(cfg, db_url)
    r = await row(pool, media_id)
    assert (r["ai_analysis_status"], r["error_code"]) == ("failed", "corrupt_media")
    assert server.seen == []


async def test_analyze_requeues_and_show_prints_the_analysis(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """`mediad show` prints the analysis readably; `mediad analyze --media-id` puts the row
    back in the analysis queue; `analyze` naming no rows is bad usage (exit 2)."""
    cfg = config(server, tmp_path)
    [media_id, other] = await photo_rows(pool, cfg, 18, 19)
    await analyse(cfg, db_url)
    env = {"MEDIAD_DATABASE_URL": db_url}
    code, out, _ = await mediad("show", media_id, env=env)
    assert code == 0
    assert "analysis:\n" in out
    assert "  description: A red square on a plain background." in out
    assert "  tags: red, square" in out
    code, out, _ = await mediad("analyze", "--media-id", media_id, env=env)
    assert (code, out.split()) == (0, [media_id])
    r = await row(pool, media_id)
    assert r["ai_analysis_status"] == "not_started"
    assert r["ai_analysis_log"][-1]["details"]["by"] == "mediad analyze"
    assert (await row(pool, other))["ai_analysis_status"] == "completed"
    code, _, err = await mediad("analyze", env=env)
    assert code == 2
    assert "--media-id, --post-id or --all" in err


async def test_an_evicted_file_is_analysed_from_its_archived_object(
    db_url: str,
    pool: asyncpg.Pool[Any],
    server: VisionServer,
    s3_server: SeaweedFS,
    tmp_path: Path,
) -> None:
    """With the local copy evicted, the stage reads the archived object, proven to be the row's
    bytes; an object holding other bytes fails the row archive_corrupt with no request sent."""
    settings = archive_settings(s3_server, tmp_path)
    settings.pop("archive_enabled")
    archive_keys = {k: v for k, v in settings.items() if k.startswith("archive_")}
    cfg = config(server, tmp_path, **archive_keys)
    good, bad = await photo_rows(pool, cfg, 20, 21)
    raw = s3_server.client()
    for media_id, body in ((good, None), (bad, media.jpeg(640, 480, seed=99))):
        r = await row(pool, media_id)
        local = Path(r["local_file_path"])
        key = f"evicted/{r['sha256_sum']}.jpg"
        data = body if body is not None else await asyncio.to_thread(local.read_bytes)
        raw.put_object(Bucket=s3_server.bucket, Key=key, Body=data)
        await asyncio.to_thread(local.unlink)
        await pool.execute(
            "UPDATE post_media SET local_file_path = NULL, hosted_url = NULL,"
            " archive_status = 'completed', archive_url = $2 WHERE media_id = $1",
            media_id,
            f"s3://{s3_server.bucket}/{key}",
        )
    await analyse(cfg, db_url)
    assert len(server.seen) == 1
    assert (await row(pool, good))["ai_analysis_status"] == "completed"
    r = await row(pool, bad)
    assert (r["ai_analysis_status"], r["error_code"]) == ("failed", "archive_corrupt")


async def test_a_video_whose_frames_do_not_decode_fails_its_row(
    db_url: str, pool: asyncpg.Pool[Any], server: VisionServer, tmp_path: Path
) -> None:
    """A stored video whose frames no longer decode fails corrupt_media, with no request."""
    cfg = config(server, tmp_path)
    made = await downloaded_rows(
        pool, store_of(cfg), [(media.mp4()[:3000], "videos", "mp4")], analysis="not_started"
    )
    await pool.execute("UPDATE post_media SET mime_type = 'video/mp4'")
    await analyse(cfg, db_url)
    r = await row(pool, made[0].media_id)
    assert (r["ai_analysis_status"], r["error_code"]) == ("failed", "corrupt_media")
    assert server.seen == []
