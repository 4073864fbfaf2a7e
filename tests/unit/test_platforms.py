"""Per-platform rules: signed-URL expiry, best-quality URLs and variants, URL redaction.

A row's platform is derived in SQL: tests/integration/test_platform_sql.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mediad.net import platforms

FB_URL = (
    "https://scontent-lhr8-1.xx.fbcdn.net/v/t39.30808-6/469797436_1234567890_n.jpg"
    "?_nc_cat=108&ccb=1-7&_nc_sid=127cfc&_nc_ohc=AbCdEf&_nc_ht=scontent-lhr8-1.xx"
    "&oh=00_AYBx9Qk3Zr7s&oe=6754A1B2"
)
IG_URL = (
    "https://scontent.cdninstagram.com/v/t51.29350-15/470000000_n.jpg"
    "?stp=dst-jpg_e35_s1080x1080&_nc_ht=scontent.cdninstagram.com&oh=00_AYA1b2&oe=67A1B2C3"
)
LINKEDIN_URL = (
    "https://media.licdn.com/dms/image/v2/D4E22AQF/feedshare-shrink_800/0/1712345678901"
    "?e=1736985600&v=beta&t=Xy9AbCdEf"
)
TIKTOK_URL = (
    "https://v16-webapp-prime.tiktok.com/video/tos/useast2a/tos-useast2a-ve-0068c004/oQ/"
    "?a=1988&ch=0&x-expires=1700000000&x-signature=AbC%3D"
)


def test_url_expires_at_reads_facebook_oe() -> None:
    """A Facebook CDN URL's oe= is hex Unix time, returned as an aware UTC datetime."""
    expires = platforms.url_expires_at(FB_URL)
    assert expires == datetime.fromtimestamp(0x6754A1B2, tz=UTC)
    assert expires is not None and expires.tzinfo is UTC


def test_url_expires_at_reads_instagram_oe() -> None:
    """An Instagram CDN URL's oe= is read the same way."""
    assert platforms.url_expires_at(IG_URL) == datetime.fromtimestamp(0x67A1B2C3, tz=UTC)


def test_url_expires_at_reads_linkedin_and_tiktok() -> None:
    """LinkedIn's e= and TikTok's x-expires= are decimal Unix times."""
    assert platforms.url_expires_at(LINKEDIN_URL) == datetime(2025, 1, 16, tzinfo=UTC)
    assert platforms.url_expires_at(TIKTOK_URL) == datetime.fromtimestamp(1700000000, tz=UTC)


@pytest.mark.parametrize(
    "url",
    [
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oh=00_AY",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oe=",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oe=zzzz",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oe=-1A",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oe=67_54",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oe=FFFFFFFFFFFFFFFF",
        "https://scontent.xx.fbcdn.net/v/t1.jpg?oe=FFFFFFFFFFFFFFFFFF",
        "https://example.com/a.jpg?oe=6754A1B2",
        "https://pbs.twimg.com/media/A?format=jpg&name=orig",
        "garbage",
    ],
)
def test_url_expires_at_is_none_when_absent_or_garbled(url: str) -> None:
    """No expiry, a garbled one, or an oe= on a host that does not sign that way give None."""
    assert platforms.url_expires_at(url) is None


def _twitter(media_id: str, fmt: str, *names: str) -> list[str]:
    return [f"https://pbs.twimg.com/media/{media_id}?format={fmt}&name={n}" for n in names]


BEST_FIRST = ("orig", "4096x4096", "large", "medium")


def test_candidate_urls_twitter_query_form() -> None:
    """A name=small Twitter image tries orig, 4096x4096, large, medium, then small itself."""
    url = "https://pbs.twimg.com/media/GcXyZ_ab-12?format=jpg&name=small"
    assert platforms.candidate_urls(url) == _twitter("GcXyZ_ab-12", "jpg", *BEST_FIRST, "small")


def test_candidate_urls_twitter_keeps_format() -> None:
    """The requested format (png, webp) is kept in every candidate."""
    url = "https://pbs.twimg.com/media/GcXyZ?format=png&name=large"
    assert platforms.candidate_urls(url) == _twitter("GcXyZ", "png", *BEST_FIRST)


def test_candidate_urls_twitter_legacy_suffix_form() -> None:
    """The legacy ID.png:large form is normalised, its format taken from the suffix."""
    url = "https://pbs.twimg.com/media/GcXyZ.png:large"
    assert platforms.candidate_urls(url) == _twitter("GcXyZ", "png", *BEST_FIRST)


def test_candidate_urls_twitter_bare_legacy_form() -> None:
    """A bare ID.jpeg URL gets jpg format and the best-first sizes."""
    url = "http://pbs.twimg.com/media/GcXyZ.jpeg"
    assert platforms.candidate_urls(url) == _twitter("GcXyZ", "jpg", *BEST_FIRST)


def test_candidate_urls_twitter_orig_is_not_repeated() -> None:
    """An orig URL yields the four named sizes, none twice."""
    url = "https://pbs.twimg.com/media/GcXyZ?name=orig&format=jpg"
    assert platforms.candidate_urls(url) == _twitter("GcXyZ", "jpg", *BEST_FIRST)


@pytest.mark.parametrize(
    "url",
    [
        "https://video.twimg.com/ext_tw_video/1/pu/vid/avc1/1280x720/a.mp4?tag=12",
        "https://pbs.twimg.com/profile_images/1/abc_normal.jpg",
        "https://pbs.twimg.com/media/",
        FB_URL,
        IG_URL,
        "https://example.com/media/GcXyZ?format=jpg&name=small",
    ],
)
def test_candidate_urls_other_urls_are_tried_as_is(url: str) -> None:
    """URLs with no known best-quality rewrite, signed ones included, are tried unchanged."""
    assert platforms.candidate_urls(url) == [url]


TWITTER_VARIANTS: list[dict[str, Any]] = [
    {
        "content_type": "application/x-mpegURL",
        "url": "https://video.twimg.com/ext_tw_video/1/pu/pl/abc.m3u8?tag=12",
    },
    {
        "bitrate": 256000,
        "content_type": "video/mp4",
        "url": "https://video.twimg.com/ext_tw_video/1/pu/vid/avc1/480x270/a.mp4?tag=12",
    },
    {
        "bitrate": 2176000,
        "content_type": "video/mp4",
        "url": "https://video.twimg.com/ext_tw_video/1/pu/vid/avc1/1280x720/c.mp4?tag=12",
    },
    {
        "bitrate": 832000,
        "content_type": "video/mp4",
        "url": "https://video.twimg.com/ext_tw_video/1/pu/vid/avc1/640x360/b.mp4?tag=12",
    },
]


def test_best_variant_picks_highest_bitrate_mp4_from_twitter() -> None:
    """From Twitter's video_info.variants the 2176 kb/s MP4 wins over the HLS playlist."""
    assert platforms.best_variant(TWITTER_VARIANTS) is TWITTER_VARIANTS[2]


def test_best_variant_prefers_mp4_over_richer_manifest() -> None:
    """An MP4 beats an HLS or DASH manifest even when the manifest claims more bitrate."""
    variants: list[dict[str, Any]] = [
        {"url": "https://cdn.example/v.m3u8", "bitrate": 9000000},
        {"url": "https://cdn.example/v.mpd", "content_type": "application/dash+xml", "bitrate": 1},
        {"url": "https://cdn.example/v.mp4", "bitrate": 500000},
    ]
    assert platforms.best_variant(variants) is variants[2]


def test_best_variant_accepts_bit_rate_and_breaks_ties_by_area() -> None:
    """bit_rate counts as bitrate, and equal bitrates go to the larger frame."""
    variants: list[dict[str, Any]] = [
        {"url": "https://cdn.example/s.mp4", "content_type": "video/mp4", "bit_rate": 800000,
         "width": 640, "height": 360},
        {"url": "https://cdn.example/l.mp4", "content_type": "video/mp4", "bit_rate": "800000",
         "width": 1280, "height": 720},
        {"url": "https://cdn.example/x.mp4", "content_type": "video/mp4", "bit_rate": 700000,
         "width": 3840, "height": 2160},
    ]  # fmt: skip
    assert platforms.best_variant(variants) is variants[1]


def test_best_variant_without_mp4_takes_highest_bitrate() -> None:
    """When no variant is MP4, the highest bitrate with a URL wins."""
    variants: list[dict[str, Any]] = [
        {"url": "https://cdn.example/lo.m3u8", "content_type": "application/x-mpegURL",
         "bitrate": 100},
        {"url": "https://cdn.example/hi.m3u8", "content_type": "application/x-mpegURL",
         "bitrate": 900},
        {"content_type": "application/x-mpegURL", "bitrate": 5000},
    ]  # fmt: skip
    assert platforms.best_variant(variants) is variants[1]


def test_best_variant_ignores_entries_without_http_url() -> None:
    """Entries without an http(s) URL are never chosen; none usable gives None."""
    junk: list[dict[str, Any]] = [
        {"url": "file:///etc/passwd", "content_type": "video/mp4", "bitrate": 10**9},
        {"url": "javascript:alert(1)", "content_type": "video/mp4", "bitrate": 10**9},
        {"url": None, "content_type": "video/mp4", "bitrate": 10**9},
        {"content_type": "video/mp4", "bitrate": 10**9},
    ]
    assert platforms.best_variant(junk) is None
    assert platforms.best_variant([]) is None
    good = {"url": "HTTPS://cdn.example/a.mp4", "content_type": "video/mp4", "bitrate": 1}
    assert platforms.best_variant([*junk, good]) is good


def test_best_variant_survives_odd_values() -> None:
    """Missing, null, boolean or non-numeric bitrates count as zero instead of raising."""
    variants: list[dict[str, Any]] = [
        {"url": "https://cdn.example/a.mp4", "content_type": "video/mp4", "bitrate": None},
        {"url": "https://cdn.example/b.mp4", "content_type": "video/mp4", "bitrate": True},
        {"url": "https://cdn.example/c.mp4", "content_type": "video/mp4", "bitrate": "fast"},
        {"url": "https://cdn.example/d.mp4", "content_type": "video/mp4; codecs=avc1",
         "bitrate": 3.5},
    ]  # fmt: skip
    assert platforms.best_variant(variants) is variants[3]


def test_redact_url_hides_signed_query_values() -> None:
    """Every value of a Facebook signed URL's query is replaced, keys, host and path kept."""
    assert platforms.redact_url(FB_URL) == (
        "https://scontent-lhr8-1.xx.fbcdn.net/v/t39.30808-6/469797436_1234567890_n.jpg"
        "?_nc_cat=REDACTED&ccb=REDACTED&_nc_sid=REDACTED&_nc_ohc=REDACTED&_nc_ht=REDACTED"
        "&oh=REDACTED&oe=REDACTED"
    )


def test_redact_url_removes_userinfo_and_fragment() -> None:
    """Credentials in the authority and the fragment never reach a log; the port stays."""
    url = "https://archiver:s3cret@cdn.example:8443/a.jpg?X-Amz-Signature=abc#access_token=xyz"
    assert platforms.redact_url(url) == "https://cdn.example:8443/a.jpg?X-Amz-Signature=REDACTED"


def test_redact_url_keeps_harmless_twitter_params() -> None:
    """format= and name= are kept, being a size selector and no secret."""
    url = "https://pbs.twimg.com/media/GcXyZ?format=jpg&name=orig"
    assert platforms.redact_url(url) == url


def test_redact_url_redacts_bare_and_empty_tokens() -> None:
    """A bare ?token has no key to keep, so it is redacted whole; an empty value is redacted too."""
    url = "https://cdn.example/a.mp4?AbCdEf0123456789&sig=&format=mp4"
    assert platforms.redact_url(url) == "https://cdn.example/a.mp4?REDACTED&sig=REDACTED&format=mp4"


def test_redact_url_redacts_a_padded_bare_token_whole() -> None:
    """A bare base64 token padded with "==" is redacted whole, not read as a key and a value."""
    url = "https://cdn.example/a.mp4?dG9rZW4tdmFsdWU==&sig=x%3D%3D"
    assert platforms.redact_url(url) == "https://cdn.example/a.mp4?REDACTED&sig=REDACTED"


def test_redact_url_leaves_plain_urls_and_survives_garbage() -> None:
    """A URL without secrets comes back unchanged; an unparseable one becomes a placeholder."""
    assert platforms.redact_url("https://example.com/a/b.jpg") == "https://example.com/a/b.jpg"
    assert "s3cret" not in platforms.redact_url("http://u:s3cret@[::1/")
