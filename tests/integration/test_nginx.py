"""deploy/nginx-media.conf in Debian's nginx: a derived thumbnail is served with the headers
the originals get (immutable caching, CORS, nosniff) and its right Content-Type."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from mediad.storage.local import Store
from tests import media
from tests.derive_support import derive_config, derived_rows, read, run_derive
from tests.nginx_support import nginx
from tests.support import row, wait_for


async def test_nginx_serves_a_thumbnail_with_the_right_headers(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """The thumbnail_url of a derived row, under the deployed site, answers 200 with the
    thumbnail's bytes, image/webp, immutable caching, CORS and nosniff; the temp folder is not
    served."""
    root = tmp_path / "media"
    cfg = derive_config(root, storage_public_base_url="http://placeholder/media")
    [media_id] = await derived_rows(
        pool, Store.from_config(cfg.storage), [(media.jpeg_with_exif(seed=80), "image/jpeg")]
    )
    await run_derive(cfg, db_url)
    r = await row(pool, media_id)
    thumbnail = r["thumbnail_url"].removeprefix("http://placeholder")
    with nginx(root, tmp_path / "nginx") as base:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(base + "/media/.tmp/x") as response:
                        return response.status == 404
                return False

            await wait_for(up)
            async with session.get(base + thumbnail) as response:
                body = await response.read()
                assert response.status == 200
                headers = response.headers
        assert body == read(r["derivatives"]["thumbnail"]["path"])
        assert headers["Content-Type"] == "image/webp"
        assert "public, immutable" in headers.getall("Cache-Control")
        assert "max-age=31536000" in headers.getall("Cache-Control")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "Expires" in headers
