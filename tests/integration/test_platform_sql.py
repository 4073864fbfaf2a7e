"""The platform of a row: `mediad_platform`, the SQL function the insert trigger derives it with."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.unit.test_platforms import FB_URL, IG_URL, LINKEDIN_URL

PLATFORM_OF = "SELECT url, mediad_platform(url) FROM unnest($1::text[]) AS url"

HOSTS = {
    "https://twitter.com/nasa/status/1": "twitter",
    "https://x.com/nasa/status/1": "twitter",
    "https://pbs.twimg.com/media/GcXyZ?format=jpg&name=small": "twitter",
    "https://video.twimg.com/ext_tw_video/1/pu/vid/avc1/1280x720/a.mp4": "twitter",
    "https://t.co/AbC123": "twitter",
    "https://www.facebook.com/photo/?fbid=1": "facebook",
    FB_URL: "facebook",
    "https://fb.com/123": "facebook",
    "https://lookaside.fbsbx.com/lookaside/crawler/media/?media_id=1": "facebook",
    "https://fb.watch/AbC123/": "facebook",
    "https://www.instagram.com/p/C0dE/": "instagram",
    IG_URL: "instagram",
    "https://www.linkedin.com/posts/x": "linkedin",
    LINKEDIN_URL: "linkedin",
    "https://www.tiktok.com/@user/video/1": "tiktok",
    "https://p16-sign-va.tiktokcdn.com/obj/x.jpeg": "tiktok",
    "https://v19.tiktokcdn-us.com/x.mp4": "tiktok",
    "https://api16-normal-c-useast1a.tiktokv.com/aweme/v1/play/": "tiktok",
    "HTTPS://PBS.TWIMG.COM/media/A.jpg": "twitter",
    "https://example.com/a.jpg": "other",
}

LOOKALIKES_AND_GARBAGE = [
    "https://notx.com/a.jpg",
    "https://x.com.evil.example/a.jpg",
    "https://evil.example/?u=https://twitter.com/",
    "https://twitter.com@evil.example/a.jpg",
    "https://fakefacebook.com/a.jpg",
    "not a url",
    "",
    "http://[::1/",
]


async def _platforms(pool: asyncpg.Pool[Any], urls: list[str]) -> dict[str, str]:
    return {url: platform for url, platform in await pool.fetch(PLATFORM_OF, urls)}


async def test_platform_matches_host_suffixes(pool: asyncpg.Pool[Any]) -> None:
    """Each platform's hosts and their subdomains map to it, whatever their case."""
    assert await _platforms(pool, list(HOSTS)) == HOSTS


async def test_platform_is_other_for_lookalikes_and_garbage(pool: asyncpg.Pool[Any]) -> None:
    """Lookalike hosts, platform names outside the host, and garbage are "other"."""
    found = await _platforms(pool, LOOKALIKES_AND_GARBAGE)
    assert found == dict.fromkeys(LOOKALIKES_AND_GARBAGE, "other")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://www.x.com./home", id="trailing-dot"),
        pytest.param(" https://x.com/nasa/status/1", id="leading-space"),
        pytest.param("https://a@b@twitter.com/media/x.jpg", id="userinfo-with-at"),
    ],
)
async def test_platform_reads_the_host_a_fetch_would_reach(
    pool: asyncpg.Pool[Any], url: str
) -> None:
    """A host's trailing dot, or spaces the fetch strips from the URL, leave its platform as is."""
    assert await _platforms(pool, [url]) == {url: "twitter"}


async def test_insert_derives_a_missing_platform_from_the_url(pool: asyncpg.Pool[Any]) -> None:
    """The insert trigger fills a NULL platform from the URL, and keeps one given."""
    await pool.execute(
        "INSERT INTO post_media (media_id, post_id, media_url, media_type, platform)"
        " VALUES ('m-1', 'p', $1, 'image', NULL), ('m-2', 'p', $1, 'image', 'archive')",
        "https://pbs.twimg.com/media/A.jpg",
    )
    rows = await pool.fetch("SELECT media_id, platform FROM post_media ORDER BY media_id")
    assert [tuple(r) for r in rows] == [("m-1", "twitter"), ("m-2", "archive")]
