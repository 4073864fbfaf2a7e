"""Who may reach the HTTP endpoint: anyone on a loopback address, else only with the token.

Apart from the server (server.py): the daemon checks it before anything starts, and with several
worker processes that is the parent, which serves nothing and has no use for aiohttp's server.
"""

from __future__ import annotations

import ipaddress
import os

from mediad import errors
from mediad.config import HttpConfig

TOKEN_ENV = "MEDIAD_HTTP_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine: a loopback address, or `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or a wildcard: reachable from elsewhere, so it needs the token


def check_access(http: HttpConfig, env: dict[str, str] | None = None) -> str | None:
    """The bearer token every request must carry (None on loopback, or with http off); a
    ConfigError when a non-loopback address has none."""
    if http.listen is None:
        return None
    host, port = http.listen
    if is_loopback(host):
        return None
    token = (os.environ if env is None else env).get(TOKEN_ENV, "")
    if not token.strip():
        raise errors.ConfigError(
            f"http.listen: {host}:{port} is not a loopback address, so the endpoint needs a"
            f" bearer token: set {TOKEN_ENV} (or listen on 127.0.0.1)"
        )
    return token
