"""The `openai` backend: any OpenAI-compatible `/chat/completions` endpoint with vision (OpenAI,
Ollama, vLLM, llama.cpp's server, LM Studio), spoken over the stage's own aiohttp session.

The picture goes as a `data:image/jpeg;base64,` URL, downscaled to `analysis.max_image_px`; the
answer is asked for as JSON (`response_format` json_schema), and read from the text of servers
that ignore that. The key comes from OPENAI_API_KEY only and is never logged. Retries are
mediad's backoff, not a client's.

Why not the official `openai` client: measured against the same local server answering after
200 ms, 500 requests 32 at a time, it cost 5.2 ms of CPU per request (its typed request
transforms and response models), where this plain POST costs 1.0 ms; the wire protocol used
here is one request and one JSON answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from mediad import errors
from mediad.analysis import document
from mediad.analysis.limits import PerMinute
from mediad.config import AnalysisConfig
from mediad.net.fetch import retry_after_seconds
from mediad.outage import Outage

log = structlog.get_logger(__name__)

# A rough count for the tokens-per-minute limit before the answer says the real one: the
# prompt's characters / 4, and what a 1024 px picture costs at OpenAI's high detail.
_TOKENS_PER_PICTURE = 765
_RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "media_analysis", "schema": document.ANSWER_SCHEMA, "strict": True},
}
_REFUSAL_CODES = frozenset({"content_policy_violation", "content_filter", "moderation_blocked"})


@dataclass(frozen=True)
class Answer:
    """One analysis by the model: the document's fields and what it cost in tokens."""

    fields: dict[str, Any]
    model: str
    prompt_tokens: int
    completion_tokens: int


class RefusedError(errors.PermanentError):
    """The model refused the picture (a refusal, or a content-policy answer)."""

    error_code = "analysis_refused"


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Any
    body: Any  # the decoded JSON, or None when the body is not JSON
    text: str


class OpenAIBackend:
    """Analyses pictures (JPEG, base64) with one chat completion each row."""

    name = "openai"

    def __init__(
        self, config: AnalysisConfig, key: str | None, session: aiohttp.ClientSession
    ) -> None:
        self.model = config.model
        self.prompt = config.prompt_text() or document.BUILTIN_PROMPT
        self.prompt_sha256 = document.prompt_sha256(self.prompt)
        self._config = config
        self._session = session
        self._url = config.endpoint_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            # A local server needs no key: then no Authorization header at all.
            self._headers["Authorization"] = f"Bearer {key}"
        self._requests = PerMinute(config.requests_per_minute)
        self._tokens = PerMinute(config.tokens_per_minute)
        self.outage = Outage("analysis_api", config.outage_pause, config.outage_pause_max)

    async def analyze(self, pictures: list[str]) -> Answer:
        """Describe `pictures` (a photo, or a video's frames), as one JSON document."""
        estimate = len(self.prompt) / 4 + _TOKENS_PER_PICTURE * len(pictures)
        estimate += self._config.max_output_tokens
        await self._requests.take(1)
        await self._tokens.take(estimate)
        body = {
            "model": self.model,
            "messages": self._messages(pictures),
            "response_format": _RESPONSE_FORMAT,
            "max_tokens": self._config.max_output_tokens,
        }
        try:
            reply = await self._post(json.dumps(body).encode())
        except errors.StageError:
            self._tokens.adjust(-estimate)
            raise
        if reply.status >= 400:
            self._tokens.adjust(-estimate)
            raise self._refusal(reply)
        self.outage.ok()
        answer = reply.body
        if not isinstance(answer, dict):
            raise document.BadAnswerError(
                f"the answer is not a chat completion: {reply.text[:120]!r}"
            )
        usage: dict[str, Any] = answer["usage"] if isinstance(answer.get("usage"), dict) else {}
        prompt_tokens = _count(usage.get("prompt_tokens"))
        completion_tokens = _count(usage.get("completion_tokens"))
        self._tokens.adjust(prompt_tokens + completion_tokens - estimate)
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise document.BadAnswerError("the answer has no choices")
        choice = choices[0]
        message: dict[str, Any] = (
            choice["message"] if isinstance(choice.get("message"), dict) else {}
        )
        if message.get("refusal"):
            raise RefusedError(f"the model refused: {str(message['refusal'])[:300]}")
        if choice.get("finish_reason") == "content_filter":
            raise RefusedError("the answer was stopped by the server's content filter")
        if choice.get("finish_reason") == "length":
            raise document.BadAnswerError("the answer was cut off (finish_reason: length)")
        content = message.get("content")
        fields = document.parse_answer(content if isinstance(content, str) else None)
        model: str = answer["model"] if isinstance(answer.get("model"), str) else self.model
        return Answer(fields, model, prompt_tokens, completion_tokens)

    async def _post(self, body: bytes) -> _Reply:
        """One POST, its answer read up to analysis.max_response_size."""
        limit = self._config.max_response_size
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as resp:
                raw = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > limit:
                        raise document.BadAnswerError(
                            f"the answer is over analysis.max_response_size ({limit} bytes)"
                        )
                status, headers = resp.status, resp.headers
        except TimeoutError:
            raise errors.TransientError(
                "the analysis API did not answer within analysis.timeout", error_code="timeout"
            ) from None
        except aiohttp.ClientError as exc:
            raise errors.TransientError(
                f"cannot reach the analysis API: {exc}", error_code="connection_error"
            ) from None
        text = raw.decode("utf-8", "replace")
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = None
        return _Reply(status, headers, decoded, text)

    def _messages(self, pictures: list[str]) -> list[dict[str, Any]]:
        what = "this picture" if len(pictures) == 1 else f"these {len(pictures)} video frames"
        content: list[dict[str, Any]] = [{"type": "text", "text": f"Analyse {what}."}]
        content += [
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{picture}"}}
            for picture in pictures
        ]
        return [{"role": "system", "content": self.prompt}, {"role": "user", "content": content}]

    def _refusal(self, reply: _Reply) -> errors.StageError:
        """An HTTP error as the row's or the stage's."""
        status, code, message = reply.status, *_error_of(reply.body)
        detail = f"HTTP {status}" + (f" ({code})" if code else "")
        if status == 429 and code == "insufficient_quota":
            return self.outage.refused(
                "analysis_quota_exhausted",
                f"{detail}: the account's quota is exhausted",
                "add credit or raise the limit with the API's provider; no row fails meanwhile",
            )
        if status == 429:
            return errors.TransientError(
                f"{detail}: rate limited",
                error_code="rate_limited",
                retry_after=_retry_after(reply.headers),
            )
        if status in (401, 403):
            return self.outage.refused(
                "analysis_bad_credentials",
                f"{detail}: the API refuses the key",
                "check OPENAI_API_KEY and analysis.endpoint_url; no row fails meanwhile",
            )
        if status == 404:
            return self.outage.refused(
                "analysis_unknown_model",
                f"{detail}: the endpoint has no model {self.model!r}",
                "check analysis.model and analysis.endpoint_url; no row fails meanwhile",
            )
        if status == 400 and (code in _REFUSAL_CODES or "content" in message.lower()):
            return RefusedError(f"{detail}: the request was refused by the content policy")
        if status >= 500:
            return errors.TransientError(
                f"{detail} from the analysis API",
                error_code="http_5xx",
                retry_after=_retry_after(reply.headers),
            )
        return errors.PermanentError(
            f"{detail}: the analysis API rejected the request: {message[:300]}",
            error_code="analysis_rejected",
        )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _error_of(body: Any) -> tuple[str | None, str]:
    """An error answer's code and message (OpenAI's shape: {"error": {"code", "message"}})."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        return None, ""
    code = inner.get("code")
    return (str(code) if code is not None else None), str(inner.get("message") or "")


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, else Retry-After."""
    try:
        return max(float(headers["retry-after-ms"]) / 1000, 0.0)
    except (KeyError, ValueError):
        return retry_after_seconds(headers.get("retry-after"))
