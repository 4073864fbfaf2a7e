"""nginx on loopback serving a corpus, optionally answering after a CDN-like round trip."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NGINX_CONF = """\
{load_module}daemon off;
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    open_file_cache max=20000 inactive=120s;
    types {{ image/jpeg jpg; image/png png; video/mp4 mp4; }}
    default_type application/octet-stream;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{latency_map}    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
{latency_location}    }}
}}
"""

# The CDN-like latency scenario: /delayed/PATH is /PATH served after a pause before the first
# byte (echo_sleep is a timer: no CPU spent waiting), like a CDN edge one round trip away. The
# first request of a connection waits three round trips: over https the TCP and TLS handshakes
# each cost one before the request can be sent.
LATENCY_MAP = """\
    map $connection_requests $first_byte_delay {{ 1 {first:.3f}; default {rtt:.3f}; }}
"""
LATENCY_LOCATION = """\
        location ~ ^/delayed(/.+)$ {
            echo_sleep $first_byte_delay;
            echo_exec $1;
        }
"""
LATENCY_PREFIX = "/delayed"
ECHO_MODULE = "ngx_http_echo_module.so"


@dataclass(frozen=True)
class Origin:
    url: str  # http://127.0.0.1:PORT (with LATENCY_PREFIX when delayed), no trailing slash
    pid: int  # the nginx master


def echo_module(binary: str) -> Path | None:
    """The echo module (Debian: libnginx-mod-http-echo) in nginx's modules path, if installed."""
    try:
        built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    for word in built.stderr.split():
        if word.startswith("--modules-path="):
            path = Path(word.partition("=")[2]) / ECHO_MODULE
            return path if path.exists() else None
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def nginx(
    binary: str,
    root: Path,
    work: Path,
    probe_path: str,
    *,
    latency: float = 0.0,
    module: Path | None = None,
) -> Iterator[Origin]:
    """nginx serving `root` on a free loopback port until the block ends (even on Ctrl-C).

    With `latency` (seconds, needs the echo `module`), the origin's URL serves every file after
    that round trip (three on a connection's first request).
    """
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    delayed = latency > 0 and module is not None
    conf.write_text(
        NGINX_CONF.format(
            work=work,
            port=port,
            root=root,
            load_module=f"load_module {module};\n" if delayed else "",
            latency_map=LATENCY_MAP.format(first=3 * latency, rtt=latency) if delayed else "",
            latency_location=LATENCY_LOCATION if delayed else "",
        )
    )
    stderr = (work / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_nginx(proc, base, probe_path, work)
        yield Origin(base + (LATENCY_PREFIX if delayed else ""), proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()


def _wait_for_nginx(proc: subprocess.Popen[bytes], base: str, probe_path: str, work: Path) -> None:
    deadline = time.monotonic() + 10
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        if proc.poll() is not None:
            log = (
                (work / "error.log").read_text(errors="replace")
                if (work / "error.log").exists()
                else ""
            )
            raise SystemExit(f"nginx exited with status {proc.returncode}:\n{log[-2000:]}")
        try:
            with opener.open(f"{base}/{probe_path}", timeout=2) as resp:
                resp.read()
            return
        except urllib.error.HTTPError as exc:
            raise SystemExit(
                f"nginx answers {exc.code} for /{probe_path}: are the corpus files readable by"
                " its worker user (nobody)? Use a --cache-dir under a world-readable path."
            ) from None
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("nginx did not answer within 10 s") from None
            time.sleep(0.05)
