"""The analysis document stored in `ai_analysis`, the built-in prompt, and reading a model's
answer into the document's fields."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mediad import errors

SCHEMA_NAME = "mediad.analysis/1"

BUILTIN_PROMPT = (
    "You describe pictures for a social-media archive. Answer with one JSON object with these"
    " keys: description (one or two plain sentences saying what the picture shows), tags (up"
    " to ten short lowercase keywords), visible_text (every word legible in the picture,"
    " verbatim, or an empty string), objects (the main things visible, as short nouns) and"
    " language (the ISO 639-1 code of the visible text, or null when there is none). When"
    " several frames of one video are given, describe the video as a whole."
)

# What the model is asked to return (response_format json_schema), strict where servers allow.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "visible_text": {"type": "string"},
        "objects": {"type": "array", "items": {"type": "string"}},
        "language": {"type": ["string", "null"]},
    },
    "required": ["description", "tags", "visible_text", "objects", "language"],
    "additionalProperties": False,
}

# Bounds on what an answer may put in the row: a chatty model cannot fill the table.
_MAX_TEXT = 20_000
_MAX_ITEMS = 50


class BadAnswerError(errors.TransientError):
    """The model's answer is not the JSON document asked for (or was cut off): try again."""

    error_code = "analysis_bad_response"


def prompt_sha256(prompt: str) -> str:
    """Names the prompt in the result and the cache: a changed prompt is a new analysis."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def parse_answer(content: str | None) -> dict[str, Any]:
    """The answer's fields: the JSON object itself, or the first JSON object inside the text
    (servers that ignore response_format wrap it in prose or a code fence)."""
    if not content or not content.strip():
        raise BadAnswerError("the answer is empty")
    found = _first_object(content)
    if found is None:
        raise BadAnswerError(f"the answer holds no JSON object: {content[:120]!r}")
    if not isinstance(found.get("description"), str):
        raise BadAnswerError("the answer's JSON has no description")
    return {
        "description": found["description"][:_MAX_TEXT],
        "tags": _strings(found.get("tags")),
        "visible_text": str(found.get("visible_text") or "")[:_MAX_TEXT],
        "objects": _strings(found.get("objects")),
        "language": found.get("language") if isinstance(found.get("language"), str) else None,
    }


def _first_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [str(item)[:200] for item in value if isinstance(item, str | int | float)][:_MAX_ITEMS]


def document(
    *, backend: str, model: str, prompt_sha256: str | None, fields: dict[str, Any]
) -> dict[str, Any]:
    """The `ai_analysis` document: the schema, who made it, then its fields."""
    return {
        "schema": SCHEMA_NAME,
        "backend": backend,
        "model": model,
        "prompt_sha256": prompt_sha256,
        **fields,
    }
