"""The systemd notify protocol (READY=1, WATCHDOG=1, STATUS=...), without libsystemd."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notification; False when not running under systemd (no NOTIFY_SOCKET), or when
    its queue is full: the event loop calls this, and must never block on a listener that
    stopped reading."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.setblocking(False)
        try:
            sock.send(message.encode())
        except BlockingIOError:
            return False
    return True


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (half the configured WatchdogSec), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
