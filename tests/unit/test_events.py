"""Event details: JSON-safe, and no signed-URL secret or credential reaches the log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mediad import events
from mediad.net import platforms


def test_urls_lose_query_and_credentials() -> None:
    """Query values (signatures) and userinfo (passwords) are stripped from URLs."""
    redacted = events.redact_text(
        "https://user:pw@scontent.fbcdn.net/v/a.jpg?oh=SECRET&oe=6754A1B2"
    )
    assert redacted == "https://scontent.fbcdn.net/v/a.jpg?oh=REDACTED&oe=REDACTED"
    assert "SECRET" not in redacted and "6754A1B2" not in redacted and "pw" not in redacted
    assert events.redact_text("https://a.example/x.jpg") == "https://a.example/x.jpg"


def test_error_text_is_redacted_wherever_a_url_appears() -> None:
    """A URL inside an error message is redacted too."""
    text = "Cannot connect to https://cdn.example/a.mp4?X-Amz-Signature=abc (timeout)"
    assert (
        events.redact_text(text)
        == "Cannot connect to https://cdn.example/a.mp4?X-Amz-Signature=REDACTED (timeout)"
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
        "nested": {"url": "http://h/p?token=REDACTED"},
        "list": [1, "two"],
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://archiver:s3cret@cdn.example:8443/a.jpg?X-Amz-Signature=abc#access_token=xyz",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?_nc_cat=108&oh=00_AYBx9Qk3Zr7s&oe=6754A1B2",
        "https://pbs.twimg.com/media/GcXyZ?format=jpg&name=orig",
        "https://cdn.example/a.mp4?AbCdEf0123456789&sig=&format=mp4",
        "https://example.com/a/b.jpg",
    ],
)
def test_a_url_in_text_reads_as_the_url_alone(url: str) -> None:
    """One rule: a URL inside an error message is redacted exactly as the URL on its own."""
    alone = platforms.redact_url(url)
    assert events.redact_text(url) == alone
    assert events.redact_text(f"HTTP 404 from {url} (after 2 hops)") == (
        f"HTTP 404 from {alone} (after 2 hops)"
    )


def test_redacting_twice_changes_nothing() -> None:
    """Messages redacted where they are built pass through the event log's redaction unchanged."""
    text = "redirect loop back to https://u:p@cdn.example/a.jpg?sig=abc&name=orig&tok#frag"
    once = events.redact_text(text)
    assert events.redact_text(once) == once
    assert "abc" not in once and "u:p" not in once and "frag" not in once
