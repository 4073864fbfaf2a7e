"""A decoder worker's side of the pool (decoders.py): the wire format, and a worker's life.

Apart from the pool because the forkserver imports this module, and every worker shares what
it imported: the pool's side needs asyncio, structlog and the configuration (about 6 MB a
forkserver), which no worker ever runs. Only the standard library and `mediad.errors` here.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON. A worker says hello
(`{"ready": pid}`), then answers each request (`{"id", "task", "payload", "alarm"}`) with
`{"id", "ok": result}` or `{"id", "error": record}`, until its socket closes.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import socket
import struct
import traceback
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

from mediad import errors

Task = Callable[[dict[str, Any]], dict[str, Any]]

# A worker runs one task at a time: the pool is the parallelism. Left to themselves, the numeric
# libraries a task loads (numpy's and OpenCV's OpenBLAS, OpenMP) start a thread per core, and
# OpenBLAS reserves a buffer of 32-128 MiB of address space for each: four OCRs of a 1024-pixel
# picture in one process then peaked at 1.05-1.11 GiB of address space (VmPeak), past a decoder
# worker's default 1 GiB (analysis workers get 2), against 0.89-0.94 GiB with one thread. They
# read these when they load, so they are set at the forkserver's first import (decoders.py
# preloads this module first).
# The variables those libraries read their thread count from.
THREAD_COUNTS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_COUNTS:
    os.environ.setdefault(_name, "1")

HEADER = struct.Struct(">I")
# What a worker's text may take in a record; the pool bounds it again, never trusting it.
MAX_MESSAGE = 2000
MAX_WARNINGS = 10


def main(sock: socket.socket, tasks: dict[str, str], memory: int, ready: Collection[str]) -> None:
    """A worker's life: limit its memory, import the `ready` tasks, then serve requests until
    EOF. Another task's module is imported by its first request, in this worker only: the
    forkserver holds the modules of the tasks its daemon's stages run, not all of them."""
    _limit_memory(memory)
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Imported before the hello, so a module that cannot be imported fails the start.
    registry = {name: resolve(tasks[name]) for name in ready}
    _send(sock, encode({"ready": os.getpid()}))
    while True:
        request = _receive(sock)
        if request is None:
            return
        reply, retire = _serve_one(tasks, registry, request, memory)
        _send(sock, reply)
        if retire:
            return


def _limit_memory(limit: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def resolve(path: str) -> Task:
    """The function a registry's "module:function" names."""
    module, _, name = path.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{path} is not a function")
    return function  # type: ignore[no-any-return]


def _serve_one(
    tasks: Mapping[str, str], registry: dict[str, Task], request: dict[str, Any], memory: int
) -> tuple[bytes, bool]:
    """Run one request: the encoded reply, and whether this worker must leave after it."""
    ident, name = request["id"], request["task"]
    if name not in tasks:
        record = _record("unknown_task", f"no task {name!r}", "KeyError")
        return encode({"id": ident, "error": record}), False
    # A backstop for a worker whose parent is gone: the kernel ends a hung decode.
    signal.alarm(int(request["alarm"]))
    caught: list[str] = []

    def keep(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        if len(caught) < MAX_WARNINGS:
            caught.append(f"{category.__name__}: {message}"[:MAX_MESSAGE])

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = keep
            task = registry.get(name)
            if task is None:
                task = registry[name] = resolve(tasks[name])
            result = task(request["payload"])
            if not isinstance(result, dict):
                raise TypeError(f"{name} returned a {type(result).__name__}, not a dict")
            reply: dict[str, Any] = {"id": ident, "ok": result}
            if caught:
                reply["warnings"] = caught
            try:
                return encode(reply), False
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} returned a value JSON cannot carry: {exc}") from None
    except MemoryError:
        # Whatever the failed allocation left half-built stays in this process: it leaves.
        message = f"the file needs more than {_human_size(memory)} to decode (media.worker_memory)"
        record = _record("too_large", message, "MemoryError")
        return encode({"id": ident, "error": record, "retire": True}), True
    except errors.StageError as exc:
        record = _record(exc.error_code, str(exc), type(exc).__name__)
        record["transient"] = isinstance(exc, errors.TransientError)
        return encode({"id": ident, "error": record}), False
    except Exception as exc:
        record = _record(errors.StageError.error_code, f"{type(exc).__name__}: {exc}", exc)
        record["traceback"] = "".join(traceback.format_exc(limit=8))[-4000:]
        return encode({"id": ident, "error": record}), False
    finally:
        signal.alarm(0)


def _record(code: str, message: str, cls: str | BaseException) -> dict[str, Any]:
    name = cls if isinstance(cls, str) else type(cls).__name__
    return {"error_code": code, "message": message[:MAX_MESSAGE], "class": name}


def encode(message: dict[str, Any]) -> bytes:
    """A message as a frame's JSON body."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def _send(sock: socket.socket, body: bytes) -> None:
    sock.sendall(HEADER.pack(len(body)) + body)


def _receive(sock: socket.socket) -> dict[str, Any] | None:
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    body = _recv_exactly(sock, size)
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _human_size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"
