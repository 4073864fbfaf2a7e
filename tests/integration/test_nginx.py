"""deploy/nginx-media.conf in Debian's nginx: a derived thumbnail is served with the headers
the originals get (immutable caching, CORS, nosniff) and its right Content-Type."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from mediad.storage.local import Store
from tests import media
from tests.derive_support import derive_config, derived_rows, read, run_derive
from tests.support import row, wait_for

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "nginx-media.conf"
MIME_TYPES = Path("/etc/nginx/mime.types")

CONF = """\
{user}daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
    {mime_types}
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        include {work}/media.conf;
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert found, "nginx is not installed: apt-get install nginx-light (.ci/run does)"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def nginx(root: Path, work: Path) -> Iterator[str]:
    """nginx with the deployed site pointed at `root`, on a free loopback port; its base URL."""
    work.mkdir()
    site = SITE.read_text().replace("/srv/mediad/media/", f"{root}/")
    (work / "media.conf").write_text(site)
    port = free_port()
    (work / "nginx.conf").write_text(
        CONF.format(
            work=work,
            port=port,
            # As root, workers would drop to nobody, who cannot enter the test's folders.
            user="user root;\n" if os.geteuid() == 0 else "",
            mime_types=f"include {MIME_TYPES};" if MIME_TYPES.exists() else "",
        )
    )
    command = [nginx_binary(), "-p", str(work), "-c", str(work / "nginx.conf")]
    proc = subprocess.Popen(
        [*command, "-e", str(work / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
