"""The archive's data path for a small file: one PUT, signed here (sigv4.py) and sent by aiohttp.

botocore turns each request into model-driven serialising, signing, event hooks and parsing:
1.26 ms of CPU per PUT of 50-300 kB with every shortcut of s3shortcuts.py taken, against 0.48 ms
for this request written out, and 0.56 ms for obstore (the Rust object_store), which also hides
the answer's checksum header this proof needs (benchmarks/s3_requests.py measures the three side
by side; medians of 5 rounds on 2 cores). HEAD, multipart uploads, GET and presigning stay on
the aiobotocore client, whose configuration this path copies: the URL (endpoint, addressing style)
and the signing region are read off a request botocore prepared and never sent, the credentials
come from the same chain, and an https endpoint is verified against the same CA bundle.

The request carries Content-MD5 and x-amz-checksum-sha256 (S3 refuses bytes that do not match
them), If-None-Match when asked, our SHA-256 as user metadata, and the storage class and
encryption of the config; its payload hash is the file's SHA-256, known already.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import yarl
from botocore.httpsession import get_cert_path

from mediad import __version__
from mediad.config import ArchiveConfig
from mediad.storage import buffers, s3errors, sigv4

# Attempts of one PUT that met a connection failure, a 5xx or a throttle (botocore's standard
# retry mode makes 3), with full-jitter exponential backoff from BACKOFF seconds.
ATTEMPTS = 3
BACKOFF = 0.1
_PROBE_KEY = "mediad-probe"
_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


class DirectPut:
    """PUTs of whole objects into one bucket, over the client's own connection pool."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        signer: sigv4.Signer,
        config: ArchiveConfig,
        metadata_key: str,
        *,
        proxy: str | None = None,
    ) -> None:
        self._session = session
        self._proxy = proxy
        split = urllib.parse.urlsplit(base)
        # The object URL is `base` + the quoted key: the bucket's path or host, as botocore chose.
        self._origin = f"{split.scheme}://{split.netloc}"
        self._host = split.netloc
        self._path = split.path
        self._signer = signer
        self._metadata_key = metadata_key
        # The headers of S3._write_options' settings, as the multipart upload sends them.
        fixed: dict[str, str] = {}
        if config.storage_class:
            fixed["x-amz-storage-class"] = config.storage_class
        if config.sse:
            fixed["x-amz-server-side-encryption"] = config.sse
        if config.sse_kms_key_id:
            fixed["x-amz-server-side-encryption-aws-kms-key-id"] = config.sse_kms_key_id
        self._fixed = fixed

    @classmethod
    async def configured_like(
        cls,
        client: Any,
        credentials: Any,
        config: ArchiveConfig,
        metadata_key: str,
        ca_bundle: str | None = None,
    ) -> DirectPut:
        """A DirectPut sending where `client` (aiobotocore's) would, signed with `credentials`
        (botocore's, from the same chain) and trusting what it trusts (`ca_bundle`: the one
        botocore was told of, if any); it owns its aiohttp session (close())."""
        base, region = await where_botocore_sends(client, config.bucket)
        frozen = await credentials.get_frozen_credentials()
        signer = sigv4.Signer(
            sigv4.Credentials(frozen.access_key, frozen.secret_key, frozen.token), region
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=config.concurrency * config.upload_concurrency + 8,
                ttl_dns_cache=300,
                ssl=tls_like_botocore(base, ca_bundle),
            ),
            timeout=aiohttp.ClientTimeout(
                sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
            headers={"User-Agent": f"mediad/{__version__}"},
            skip_auto_headers=("Content-Type",),
        )
        return cls(session, base, signer, config, metadata_key, proxy=env_proxy(base))

    async def close(self) -> None:
        await self._session.close()

    async def put(
        self,
        key: str,
        data: bytes | bytearray,
        *,
        md5: str,
        sha256: str,
        if_none_match: bool,
    ) -> tuple[str, str | None] | None:
        """PUT `data` at `key`: the answer's ETag (unquoted) and x-amz-checksum-sha256 (None when
        the server echoed none); None when `if_none_match` and an object is there (412)."""
        path = self._path + sigv4.quote_path(key)
        headers = {
            "content-md5": base64.b64encode(bytes.fromhex(md5)).decode(),
            "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256)).decode(),
            f"x-amz-meta-{self._metadata_key}": sha256,
            **self._fixed,
        }
        if if_none_match:
            headers["if-none-match"] = "*"
        url = yarl.URL(self._origin + path, encoded=True)
        for attempt in range(1, ATTEMPTS + 1):
            signed = self._signer.sign("PUT", self._host, path, headers, sha256, datetime.now(UTC))
            signed["content-length"] = str(len(data))
            try:
                async with self._session.put(
                    url, data=_body(data), headers=signed, proxy=self._proxy
                ) as answer:
                    if answer.status == 200:
                        await answer.read()
                        return (
                            answer.headers.get("ETag", "").strip('"'),
                            answer.headers.get("x-amz-checksum-sha256"),
                        )
                    body = await answer.read()
                    if answer.status == 412 and if_none_match:
                        return None
                    error = _error(f"PUT {key}", answer.status, body, answer.headers)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = s3errors.translate(exc, f"PUT {key}")
            if not isinstance(error, s3errors.S3UnavailableError) or attempt == ATTEMPTS:
                raise error
            await asyncio.sleep(random.uniform(0, BACKOFF * 2**attempt))
        raise AssertionError("unreachable")


def tls_like_botocore(base: str, ca_bundle: str | None) -> ssl.SSLContext | bool:
    """How to verify `base` as botocore's client does: against `ca_bundle` ($AWS_CA_BUNDLE or
    the config file's ca_bundle) when one is named, else botocore's own bundle, so that a PUT
    trusts exactly what the HEAD beside it trusts (a private CA included). Plain http: aiohttp's
    default, which it never uses there. A bundle that cannot be read is S3AccessError: the stage
    pauses until an operator fixes it, as for any archive misconfiguration."""
    if urllib.parse.urlsplit(base).scheme.lower() != "https":
        return True
    cafile = get_cert_path(ca_bundle or True)
    try:
        return ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # ssl.SSLError is one: a file holding no certificate
        raise s3errors.S3AccessError(
            f"CA bundle {cafile} cannot be used: {exc}", error_code="s3_ca_bundle_unusable"
        ) from exc


def env_proxy(base: str) -> str | None:
    """The proxy $HTTPS_PROXY or $HTTP_PROXY names for `base`, unless $NO_PROXY exempts its host,
    as botocore honours them. Read once: aiohttp's trust_env reads the environment again for
    every request, about 0.45 ms of CPU each (most of what this PUT costs)."""
    split = urllib.parse.urlsplit(base)
    if urllib.request.proxy_bypass(split.hostname or ""):
        return None
    return urllib.request.getproxies().get(split.scheme)


def _body(data: bytes | bytearray) -> Any:
    # Over 1 MiB, a slice at a time (buffers.SlicedBody): a socket that cannot take it all at
    # once then holds a slice, not a second copy of the file. The Content-Length is ours.
    return buffers.SlicedBody(data) if len(data) > buffers.SEND_CHUNK else data


def _error(what: str, status: int, body: bytes, headers: Mapping[str, str]) -> s3errors.S3Error:
    """An S3 error answer (status, XML body) as one of our S3 errors."""
    text = body.decode("utf-8", "replace")
    code = _CODE.search(text)
    message = _MESSAGE.search(text)
    return s3errors.classify(
        what,
        code.group(1) if code else str(status),
        status,
        message.group(1) if message else "",
        retry_after=headers.get("Retry-After"),
    )


class _Prepared(Exception):
    """Stops botocore's probe request before it is sent, carrying what it would have sent."""

    def __init__(self, url: str, authorization: str) -> None:
        super().__init__(url)
        self.url = url
        self.authorization = authorization


async def where_botocore_sends(client: Any, bucket: str) -> tuple[str, str]:
    """Where `client` sends an object's requests: the URL before the key, and the region it signs
    for. botocore prepares and signs a HEAD of a probe key, and it is taken at `before-send`,
    never sent: its URL and credential scope are botocore's own choice of endpoint, addressing
    style and region, with no request."""
    event, name = "before-send.s3.HeadObject", f"mediad-probe-{id(client)}"

    def take(request: Any, **_: Any) -> None:
        if urllib.parse.urlsplit(request.url).path.endswith("/" + _PROBE_KEY):
            authorization = request.headers.get("Authorization", "")
            if isinstance(authorization, bytes):
                authorization = authorization.decode()
            raise _Prepared(request.url, authorization)

    client.meta.events.register_first(event, take, unique_id=name)
    try:
        await client.head_object(Bucket=bucket, Key=_PROBE_KEY)
    except _Prepared as prepared:
        return _base_and_region(prepared.url, prepared.authorization)
    except Exception as exc:
        raise s3errors.translate(exc, f"prepare a request to {bucket}") from exc
    finally:
        client.meta.events.unregister(event, unique_id=name)
    raise s3errors.S3AccessError(
        "botocore sent its probe request instead of showing it", error_code="s3_misconfigured"
    )


def _base_and_region(url: str, authorization: str) -> tuple[str, str]:
    """The URL before the probe key, and the region of the Authorization's credential scope."""
    split = urllib.parse.urlsplit(url)
    if not split.path.endswith("/" + _PROBE_KEY):
        raise s3errors.S3AccessError(
            f"cannot tell where objects go from the URL {url!r}", error_code="s3_misconfigured"
        )
    scope = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request", authorization)
    if scope is None:
        raise s3errors.S3AccessError(
            f"a request signed without a SigV4 credential scope: {authorization[:40]!r}",
            error_code="s3_misconfigured",
        )
    path = split.path[: -len(_PROBE_KEY)]
    return urllib.parse.urlunsplit((split.scheme, split.netloc, path, "", "")), scope.group(1)
