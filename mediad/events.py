"""The event log's Python side: details made JSON-safe and free of secrets.

The entries themselves are built in SQL (`mediad_event`), in the statement that changes the
status; this module only prepares what goes into their `details`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

# A URL's query string and fragment may carry signatures (oh=, Signature=, X-Amz-...), and
# its userinfo a password: neither may enter the log.
_URL = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/\s@]*@)?(?P<rest>[^\s?#'\"<>]*)(?P<query>[?#][^\s'\"<>]*)?"
)


def _redact_match(match: re.Match[str]) -> str:
    query = "?REDACTED" if match.group("query") else ""
    return f"{match.group('scheme')}{match.group('rest')}{query}"


def redact_text(text: str, limit: int = 2000) -> str:
    """Free text (an error message) with every URL in it redacted, cut to `limit` characters."""
    redacted = _URL.sub(_redact_match, text)
    return redacted if len(redacted) <= limit else redacted[: limit - 1] + "…"


def clean_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details as plain JSON values, with every string's URLs redacted."""
    return {str(k): _clean(v) for k, v in details.items()}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return clean_details(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return redact_text(str(value))
