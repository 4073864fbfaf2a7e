"""Event details: JSON-safe, and no signed-URL secret or credential reaches the log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mediad import events


def test_urls_lose_query_and_credentials() -> None:
    """Query strings (signatures) and userinfo (passwords) are stripped from URLs."""
    assert (
        events.redact_text("https://user:pw@scontent.fbcdn.net/v/a.jpg?oh=SECRET&oe=6754A1B2")
        == "https://scontent.fbcdn.net/v/a.jpg?REDACTED"
    )
    assert events.redact_text("https://a.example/x.jpg") == "https://a.example/x.jpg"


def test_error_text_is_redacted_wherever_a_url_appears() -> None:
    """A URL inside an error message is redacted too."""
    text = "Cannot connect to https://cdn.example/a.mp4?X-Amz-Signature=abc (timeout)"
    assert (
        events.redact_text(text) == "Cannot connect to https://cdn.example/a.mp4?REDACTED (timeout)"
    )


def test_long_errors_are_cut() -> None:
    """An error message never bloats a row: it is cut to the limit."""
    assert len(events.redact_text("x" * 10_000)) == 2000


def test_details_become_plain_json() -> None:
    """Dates, paths and nested values come out as JSON values, URLs redacted."""
    details = events.clean_details(
        {
            "at": datetime(2026, 1, 2, tzinfo=UTC),
            "path": Path("/m/a.jpg"),
            "nested": {"url": "http://h/p?token=1"},
            "list": (1, "two"),
        }
    )
    assert details == {
        "at": "2026-01-02T00:00:00+00:00",
        "path": "/m/a.jpg",
        "nested": {"url": "http://h/p?REDACTED"},
        "list": [1, "two"],
    }
