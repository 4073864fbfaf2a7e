"""http.listen and who may reach it: the address parsed, loopback told from the rest, the token
required off loopback, and metric labels kept bounded."""

from __future__ import annotations

import pytest

from mediad import config, errors, metrics
from mediad.http import access


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:0", ("localhost", 0)),
        ("", None),
        ("  ", None),
    ],
)
def test_listen_addresses_parse(text: str, expected: tuple[str, int] | None) -> None:
    """host:port, [IPv6]:port, port 0 for any free one; empty turns the endpoint off."""
    assert config.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8765", "127.0.0.1", "::1:8765", "host:99999", "a b:1"])
def test_bad_listen_addresses_are_config_errors(text: str) -> None:
    """A malformed http.listen is refused at load, naming the key."""
    with pytest.raises(errors.ConfigError, match=r"MEDIAD_HTTP_LISTEN"):
        config.load(None, env={"MEDIAD_HTTP_LISTEN": text})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_loopback_is_told_from_every_other_address(host: str, loopback: bool) -> None:
    """Only loopback addresses (and `localhost`) count as this machine alone."""
    assert access.is_loopback(host) is loopback


def test_a_public_address_needs_the_token() -> None:
    """Off loopback, no token (or a blank one) is a ConfigError naming MEDIAD_HTTP_TOKEN; with
    one, that token is what requests must carry; loopback and off need none."""
    public = config.load(None, env={"MEDIAD_HTTP_LISTEN": "0.0.0.0:8765"}).http
    for env in ({}, {"MEDIAD_HTTP_TOKEN": "  "}):
        with pytest.raises(errors.ConfigError, match="MEDIAD_HTTP_TOKEN"):
            access.check_access(public, env)
    assert access.check_access(public, {"MEDIAD_HTTP_TOKEN": "t0ken"}) == "t0ken"
    assert access.check_access(config.load(None, env={}).http, {}) is None
    off = config.load(None, env={"MEDIAD_HTTP_LISTEN": ""}).http
    assert access.check_access(off, {}) is None


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("http_404", "http_404"),
        (None, ""),
        ("", ""),
        ("NoSuchBucket", "other"),
        ("x" * 80, "other"),
        ("https://cdn.example/a.jpg", "other"),
    ],
)
def test_error_code_labels_stay_bounded(code: str | None, label: str) -> None:
    """mediad's own error codes are labels as they are; anything else folds into `other`."""
    assert metrics.error_code_label(code) == label
