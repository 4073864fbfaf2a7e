"""Per-platform rules: when a signed link dies, a URL's best-quality form, and what of a URL
may be logged.

Adding a platform is one `Platform(...)` entry, plus an expiry or candidates function if its
CDN needs one. A row's platform itself is derived in SQL (`mediad_platform`, sql/0001), whose
host list a new platform must join too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qs, urlencode, urlsplit, urlunsplit


@dataclass(frozen=True)
class Platform:
    """One platform: its hosts (subdomains included) and its CDN's quirks."""

    name: str
    domains: tuple[str, ...]
    # When the signed URL stops working; None when the URL says nothing.
    expires_at: Callable[[SplitResult], datetime | None] = lambda _: None
    # Best-quality URLs to try in order; None when no rewrite applies and the original is best.
    candidates: Callable[[SplitResult], list[str] | None] = lambda _: None


def _unix_time(value: str | None, base: int) -> datetime | None:
    if value is None or not value.isascii() or not value.isalnum() or len(value) > 16:
        return None
    try:
        return datetime.fromtimestamp(int(value, base), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _query_value(parts: SplitResult, key: str) -> str | None:
    values = parse_qs(parts.query, keep_blank_values=True).get(key)
    return values[0] if values else None


def _meta_expires_at(parts: SplitResult) -> datetime | None:
    # Facebook and Instagram sign CDN links with oh= (hash) and oe= (expiry, hex Unix time).
    return _unix_time(_query_value(parts, "oe"), 16)


def _linkedin_expires_at(parts: SplitResult) -> datetime | None:
    # media.licdn.com links carry e= (expiry, decimal Unix time) beside the t= token.
    return _unix_time(_query_value(parts, "e"), 10)


def _tiktok_expires_at(parts: SplitResult) -> datetime | None:
    return _unix_time(_query_value(parts, "x-expires"), 10)


_TWITTER_MEDIA = re.compile(
    r"^/media/(?P<id>[A-Za-z0-9_-]+)(?:\.(?P<ext>[A-Za-z0-9]+))?(?::(?P<size>[A-Za-z0-9]+))?$"
)
# pbs.twimg.com serves these named sizes; orig is the upload itself.
_TWITTER_SIZES = ("orig", "4096x4096", "large", "medium")


def _twitter_candidates(parts: SplitResult) -> list[str] | None:
    match = _TWITTER_MEDIA.match(parts.path)
    if parts.hostname != "pbs.twimg.com" or match is None:
        return None
    fmt = (_query_value(parts, "format") or match["ext"] or "jpg").lower()
    fmt = "jpg" if fmt == "jpeg" else fmt
    sizes = list(_TWITTER_SIZES)
    # The size the URL asked for (small, 900x900) comes last: a small file beats none at all.
    asked = _query_value(parts, "name") or match["size"]
    if asked and asked not in sizes:
        sizes.append(asked)
    path = f"/media/{match['id']}"
    return [
        urlunsplit(("https", "pbs.twimg.com", path, urlencode({"format": fmt, "name": s}), ""))
        for s in sizes
    ]


PLATFORMS: tuple[Platform, ...] = (
    Platform(
        "twitter",
        ("twitter.com", "x.com", "twimg.com", "t.co"),
        candidates=_twitter_candidates,
    ),
    Platform(
        "facebook",
        ("facebook.com", "fbcdn.net", "fb.com", "fbsbx.com"),
        expires_at=_meta_expires_at,
    ),
    Platform("instagram", ("instagram.com", "cdninstagram.com"), expires_at=_meta_expires_at),
    Platform("linkedin", ("linkedin.com", "licdn.com"), expires_at=_linkedin_expires_at),
    Platform(
        "tiktok",
        ("tiktok.com", "tiktokcdn.com", "tiktokcdn-us.com", "tiktokv.com"),
        expires_at=_tiktok_expires_at,
    ),
)


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url.strip())
    except ValueError:
        return None


# Each platform's domains, for a lookup of a host and its parent domains (a host's few labels,
# instead of every domain of every platform against each row's URL).
_BY_DOMAIN: dict[str, Platform] = {d: p for p in reversed(PLATFORMS) for d in p.domains}


def _platform(parts: SplitResult | None) -> Platform | None:
    host = (parts.hostname or "").rstrip(".") if parts is not None else ""
    while host:
        found = _BY_DOMAIN.get(host)
        if found is not None:
            return found
        host = host.partition(".")[2]
    return None


def url_expires_at(url: str) -> datetime | None:
    """When a signed CDN URL stops working (UTC), or None when it does not say or says nonsense."""
    parts = _split(url)
    platform = _platform(parts)
    if parts is None or platform is None:
        return None
    return platform.expires_at(parts)


def candidate_urls(url: str) -> list[str]:
    """URLs to try in order, best quality first; `[url]` when the platform has no trick."""
    parts = _split(url)
    platform = _platform(parts)
    found = platform.candidates(parts) if parts is not None and platform is not None else None
    return found or [url]


_MANIFEST_TYPES = ("application/x-mpegurl", "application/vnd.apple.mpegurl", "application/dash+xml")
_MANIFEST_SUFFIXES = (".m3u8", ".mpd")


def _number(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return 0
    return 0


_Variant = TypeVar("_Variant", bound=Mapping[str, Any])


def _variant_rank(variant: Mapping[str, Any]) -> tuple[int, int, int]:
    url = str(variant["url"])
    path = urlsplit(url).path.lower()
    ctype = str(variant.get("content_type") or "").split(";")[0].strip().lower()
    if ctype == "video/mp4" or (not ctype and path.endswith(".mp4")):
        kind = 2
    elif ctype in _MANIFEST_TYPES or path.endswith(_MANIFEST_SUFFIXES):
        # A manifest is a playlist, not the media: only a last resort.
        kind = 0
    else:
        kind = 1
    bitrate = _number(variant.get("bitrate", variant.get("bit_rate")))
    area = _number(variant.get("width")) * _number(variant.get("height"))
    return kind, bitrate, area


def _has_http_url(variant: object) -> bool:
    if not isinstance(variant, Mapping):
        return False
    url = variant.get("url")
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))


def best_variant(variants: Sequence[_Variant]) -> _Variant | None:
    """The best of `[{url, bitrate, width, height, content_type}]`: highest-bitrate MP4 first."""
    usable = [v for v in variants if _has_http_url(v)]
    return max(usable, key=_variant_rank, default=None)


# What of a URL may be logged: one rule, for a URL on its own (fetch errors, the row's
# metadata) and for each URL inside free text (every error message, every event's details).
# Scheme, host, port, path and query keys stay, so a line still says where a request went;
# harmless parameters stay whole (Twitter's size selector, which says which candidate was
# fetched); every other value may be a signature, token or session id, and CDNs invent new
# ones, so an allowlist is the only safe rule.
_SAFE_QUERY_KEYS = frozenset({"format", "name"})
REDACTED = "REDACTED"
# A URL in free text runs from its scheme to the first space, quote or angle bracket.
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]*")


def redact_url(url: str) -> str:
    """`url` safe to log: no userinfo or fragment, and query values redacted but a harmless few."""
    parts = _split(url)
    if parts is None:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_urls(text: str) -> str:
    """Free text with every URL in it redacted by the same rule as redact_url."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)


def _redact_pair(pair: str) -> str:
    key, sep, value = pair.partition("=")
    if key.lower() in _SAFE_QUERY_KEYS:
        return pair
    # A bare "?abc123" has no key to keep: it is the value, and may well be the token. So is a
    # base64 token padded with "==": its first "=" is padding, not a separator.
    if not sep or (value and not value.strip("=")):
        return REDACTED
    return f"{key}={REDACTED}"
