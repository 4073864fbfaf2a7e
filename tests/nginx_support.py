"""Debian's nginx serving the store through deploy/nginx-media.conf, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
