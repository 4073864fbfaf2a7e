"""The event log's Python side: details made JSON-safe and free of secrets.

The entries themselves are built in SQL (`mediad_event`), in the statement that changes the
status; this module only prepares what goes into their `details`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from mediad.net import platforms


def redact_text(text: str, limit: int = 2000) -> str:
    """Free text (an error message) with every URL in it redacted, cut to `limit` characters.

    Signed-URL query values and credentials never reach the log or `last_error`; the rule is
    platforms.redact_url's, so a URL reads the same in an event as in the row's metadata. A NUL
    becomes U+FFFD.
    """
    # PostgreSQL text cannot hold a NUL (nor JSON a \u0000), and an error may quote hostile bytes.
    redacted = platforms.redact_urls(text).replace("\x00", "\ufffd")
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
