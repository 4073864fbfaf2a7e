"""The `openai` backend: any OpenAI-compatible `/chat/completions` endpoint with vision (OpenAI,
Ollama, vLLM, llama.cpp's server, LM Studio), through the official client with its own retries
off, so mediad's backoff decides.

The picture goes as a `data:image/jpeg;base64,` URL, downscaled to `analysis.max_image_px`; the
answer is asked for as JSON (`response_format` json_schema), and read from the text of servers
that ignore that. The key comes from OPENAI_API_KEY only and is never logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx2
import openai
import structlog
from openai.types.chat import ChatCompletion

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


class ResponseTooLargeError(httpx2.ReadError):
    """The answer grew past analysis.max_response_size while it was read."""


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLargeError(f"the answer is over {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedTransport(httpx2.AsyncBaseTransport):
    """Reads at most `limit` bytes of an answer: a server cannot make us hold 10 MB of JSON."""

    def __init__(self, limit: int, key: str | None) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._limit = limit
        self._key = key

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._key is None:
            # A local server needs no key: send none rather than a placeholder.
            request.headers.pop("Authorization", None)
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        response.stream = _BoundedStream(stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class OpenAIBackend:
    """Analyses pictures (JPEG, base64) with one chat completion each row."""

    name = "openai"

    def __init__(self, config: AnalysisConfig, key: str | None) -> None:
        self.model = config.model
        self.prompt = config.prompt_text() or document.BUILTIN_PROMPT
        self.prompt_sha256 = document.prompt_sha256(self.prompt)
        self._config = config
        self._client = openai.AsyncOpenAI(
            base_url=config.endpoint_url,
            # The client insists on a key; without one, the transport sends no header at all.
            api_key=key or "none",
            max_retries=0,
            timeout=config.timeout,
            http_client=httpx2.AsyncClient(
                transport=_BoundedTransport(config.max_response_size, key),
                timeout=config.timeout,
            ),
        )
        self._requests = PerMinute(config.requests_per_minute)
        self._tokens = PerMinute(config.tokens_per_minute)
        self.outage = Outage("analysis_api", config.outage_pause, config.outage_pause_max)

    async def close(self) -> None:
        await self._client.close()

    async def analyze(self, pictures: list[str]) -> Answer:
        """Describe `pictures` (a photo, or a video's frames), as one JSON document."""
        estimate = len(self.prompt) / 4 + _TOKENS_PER_PICTURE * len(pictures)
        estimate += self._config.max_output_tokens
        await self._requests.take(1)
        await self._tokens.take(estimate)
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=cast(Any, self._messages(pictures)),
                response_format=cast(Any, _RESPONSE_FORMAT),
                max_tokens=self._config.max_output_tokens,
            )
        except openai.APIError as exc:
            self._tokens.adjust(-estimate)
            raise self._translate(exc) from None
        self.outage.ok()
        if not isinstance(response, ChatCompletion):
            # The client hands back what it could not parse as it came (an HTML error page).
            raise document.BadAnswerError(
                f"the answer is not a chat completion: {str(response)[:120]!r}"
            )
        usage = response.usage
        prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
        completion_tokens = (usage.completion_tokens or 0) if usage else 0
        self._tokens.adjust(prompt_tokens + completion_tokens - estimate)
        if not response.choices:
            raise document.BadAnswerError("the answer has no choices")
        choice = response.choices[0]
        message = choice.message
        if getattr(message, "refusal", None):
            raise RefusedError(f"the model refused: {str(message.refusal)[:300]}")
        if choice.finish_reason == "content_filter":
            raise RefusedError("the answer was stopped by the server's content filter")
        if choice.finish_reason == "length":
            raise document.BadAnswerError("the answer was cut off (finish_reason: length)")
        fields = document.parse_answer(message.content)
        return Answer(fields, response.model or self.model, prompt_tokens, completion_tokens)

    def _messages(self, pictures: list[str]) -> list[dict[str, Any]]:
        what = "this picture" if len(pictures) == 1 else f"these {len(pictures)} video frames"
        content: list[dict[str, Any]] = [{"type": "text", "text": f"Analyse {what}."}]
        content += [
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{picture}"}}
            for picture in pictures
        ]
        return [{"role": "system", "content": self.prompt}, {"role": "user", "content": content}]

    def _translate(self, exc: openai.APIError) -> errors.StageError:
        """The client's error as the row's or the stage's."""
        if isinstance(exc, openai.APITimeoutError):
            return errors.TransientError(
                "the analysis API did not answer in time", error_code="timeout"
            )
        if isinstance(exc, openai.APIConnectionError):
            if _caused_by(exc, ResponseTooLargeError):
                limit = self._config.max_response_size
                return document.BadAnswerError(
                    f"the answer is over analysis.max_response_size ({limit} bytes)"
                )
            return errors.TransientError(
                f"cannot reach the analysis API: {exc.message}", error_code="connection_error"
            )
        if not isinstance(exc, openai.APIStatusError):
            return document.BadAnswerError(f"the answer is not a chat completion: {exc.message}")
        status, code = exc.status_code, _error_code(exc)
        detail = f"HTTP {status}" + (f" ({code})" if code else "")
        if status == 429 and code == "insufficient_quota":
            return self.outage.refused(
                "analysis_quota_exhausted",
                f"{detail}: the account's quota is exhausted",
                "add credit or raise the limit with the API's provider; no row fails meanwhile",
            )
        if status == 429:
            return errors.TransientError(
                f"{detail}: rate limited", error_code="rate_limited", retry_after=_retry_after(exc)
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
        if status == 400 and (code in _REFUSAL_CODES or "content" in str(exc.message).lower()):
            return RefusedError(f"{detail}: the request was refused by the content policy")
        if status >= 500:
            return errors.TransientError(
                f"{detail} from the analysis API",
                error_code="http_5xx",
                retry_after=_retry_after(exc),
            )
        return errors.PermanentError(
            f"{detail}: the analysis API rejected the request: {str(exc.message)[:300]}",
            error_code="analysis_rejected",
        )


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("code") is not None:
            return str(inner["code"])
    return exc.code


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, else Retry-After."""
    headers = exc.response.headers
    try:
        return max(float(headers["retry-after-ms"]) / 1000, 0.0)
    except (KeyError, ValueError):
        return retry_after_seconds(headers.get("retry-after"))
