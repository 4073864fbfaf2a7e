"""The dashboard in a real headless Chromium: media downloaded and derived by the daemon, their
thumbnails served by nginx with deploy/nginx-media.conf, every picture on the grid loaded, and
input (a post id, analysis text) shown as text, never run."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mediad.commands import url
from tests import media
from tests.browser import chromium
from tests.http_support import serving_daemon
from tests.nginx_support import nginx
from tests.origin import Origin, serving, status
from tests.support import wait_for

XSS = '<script>document.title="owned"</script><img src=x onerror="document.title=1">'
IMAGES = """Array.from(document.images).map(
    i => ({src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth}))"""


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serving() as served:
        yield served


async def everything_finished(pool: asyncpg.Pool[Any]) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM post_media WHERE download_status NOT IN ('completed', 'failed')"
        " OR (download_status = 'completed' AND derive_status NOT IN ('completed', 'failed'))"
    )


async def test_the_dashboard_loads_in_chromium_with_every_thumbnail(
    db_url: str, pool: asyncpg.Pool[Any], origin: Origin, tmp_path: Path
) -> None:
    """The front page counts the rows, groups the 404 with its example and its retry command,
    and shows a thumbnail of each downloaded photo that Chromium fetches from nginx; the post
    page of a post id full of markup shows it as text and runs no script; the media page shows
    the event log and analysis text as text; the JSON API gives `mediad url`'s best URL."""
    root = tmp_path / "media"
    root.mkdir()
    sources = [
        ("post-1", origin.serve("/a.jpg", media.jpeg(640, 480, seed=1), content_type="image/jpeg")),
        ("post-1", origin.serve("/b.png", media.png(300, 200, seed=2), content_type="image/png")),
        (XSS, origin.serve("/c.jpg", media.jpeg(200, 300, seed=3), content_type="image/jpeg")),
        ("post-2", origin.route("/gone.jpg", status(404))),
    ]
    with nginx(root, tmp_path / "nginx") as media_base:
        settings = {
            "storage_root": str(root),
            "storage_public_base_url": media_base + "/media",
            "download_allowed_networks": "127.0.0.1/32",
            "media_workers": "1",
            "daemon_poll_interval": "200ms",
        }
        async with serving_daemon(db_url, settings) as served:
            ids = [
                await pool.fetchval(
                    "INSERT INTO post_media (post_id, media_url, media_type)"
                    " VALUES ($1, $2, 'image') RETURNING media_id",
                    post_id,
                    source,
                )
                for post_id, source in sources
            ]
            await wait_for(lambda: everything_finished(pool), within=90)
            rows = {r["media_id"]: dict(r) for r in await pool.fetch("SELECT * FROM post_media")}
            assert [rows[i]["derive_status"] for i in ids[:3]] == ["completed"] * 3
            analysed = ids[0]
            await pool.execute(
                "UPDATE post_media SET ai_analysis = $2 WHERE media_id = $1",
                analysed,
                json.dumps({"description": "<script>document.title='analysis'</script>"}),
            )

            async with chromium(tmp_path / "chromium") as browser:
                front = json.loads(
                    await browser.load(
                        served.base + "/",
                        f"JSON.stringify({{images: {IMAGES}, text: document.body.innerText}})",
                    )
                )
                quoted = urllib.parse.quote(XSS, safe="")
                post = json.loads(
                    await browser.load(
                        f"{served.base}/posts/{quoted}",
                        'JSON.stringify({id: document.getElementById("post-id").textContent,'
                        " scripts: document.scripts.length, title: document.title,"
                        ' injected: document.querySelectorAll("[onerror]").length})',
                    )
                )
                page = json.loads(
                    await browser.load(
                        f"{served.base}/media/{analysed}",
                        'JSON.stringify({description: document.getElementById("description")'
                        ".textContent, events: document.querySelectorAll('table')[1]"
                        ".rows.length - 1, scripts: document.scripts.length,"
                        " title: document.title})",
                    )
                )
            api_status, api_text = await served.get("/api/posts/post-1")

    images = front["images"]
    thumbnails = sorted(rows[i]["thumbnail_url"] for i in ids[:3])
    assert sorted(image["src"] for image in images) == thumbnails
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    assert "http_404" in front["text"]
    assert "mediad retry --failed --stage download --error-code http_404" in front["text"]
    assert ids[3] in front["text"]

    assert post["id"] == XSS
    assert (post["scripts"], post["injected"]) == (0, 0)
    assert post["title"].startswith("post ")

    assert page["description"] == "<script>document.title='analysis'</script>"
    assert page["events"] == len(rows[analysed]["ai_analysis_log"])
    assert page["scripts"] == 0
    assert page["title"] != "analysis"

    assert api_status == 200
    listed = {m["media_id"]: m for m in json.loads(api_text)["media"]}
    assert set(listed) == set(ids[:2])
    for media_id, entry in listed.items():
        best = await url.choose(rows[media_id], presign=None, expiry=3600)
        assert (entry["best_url"], entry["best_url_kind"]) == (best.url, best.kind)
        assert entry["display_image_url"] == rows[media_id]["hosted_url"] == best.url
        assert entry["has_local_image"] is True
        assert entry["thumbnail_url"] == rows[media_id]["thumbnail_url"]
        assert entry["statuses"]["download"] == "completed"
