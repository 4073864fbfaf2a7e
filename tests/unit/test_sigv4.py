"""The small-object PUT's own request signing and addressing: the signature botocore would make for
the same request, and the URL botocore would send it to."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import aiobotocore.session
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

from mediad.storage import s3errors, s3put, sigv4
from tests.support import clear_proxy_environment

NOW = datetime(2026, 12, 2, 6, 30, 1, tzinfo=UTC)
SHA256 = hashlib.sha256(b"bytes").hexdigest()
HEADERS = {
    "content-md5": "x9H6Fk6G0XTOOvSu+1aT9w==",
    "x-amz-checksum-sha256": "3iXAZCmQEEK2Ssjxfo9i7Mw6ZpPaiEVjHeibRyOK/hs=",
    "x-amz-meta-mediad-sha256": SHA256,
    "if-none-match": "*",
    "x-amz-storage-class": "STANDARD_IA",
}


def botocore_signature(
    host: str, path: str, headers: dict[str, str], token: str | None
) -> tuple[str, str]:
    """The Authorization header botocore's S3 SigV4 signer makes for the request, and the
    names of the headers it signed."""
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    request = AWSRequest(method="PUT", url=f"https://{host}{path}", data=b"bytes")
    for name, value in headers.items():
        request.headers[name] = value
    request.headers["X-Amz-Content-SHA256"] = SHA256
    auth = S3SigV4Auth(credentials, "s3", "eu-west-2")
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    if token:
        request.headers["X-Amz-Security-Token"] = token
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    signed = auth.signed_headers(auth.headers_to_sign(request))
    return signature, signed


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEBYaD+session/token=="])
@pytest.mark.parametrize(
    "path", ["/media/ab/abcdef.jpg", "/bucket/a%20b%2Bc/%C3%BC~x_y-z.jpg", "/o/%25percent"]
)
def test_signature_is_botocores(token: str | None, path: str) -> None:
    """For the same PUT (our headers, a session token or none, keys that need escaping), the
    signature and the signed headers are the ones botocore computes."""
    signer = sigv4.Signer(
        sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
        "eu-west-2",
    )
    host = "s3.eu-west-2.amazonaws.com"
    signed = signer.sign("PUT", host, path, HEADERS, SHA256, NOW)
    signature, names = botocore_signature(host, path, HEADERS, token)
    authorization = signed["authorization"]
    assert authorization.startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/eu-west-2/s3/aws4_request,"
    )
    assert authorization.endswith(f"SignedHeaders={names}, Signature={signature}")
    assert signed["x-amz-date"] == "20261202T063001Z"
    assert signed["x-amz-content-sha256"] == SHA256
    assert signed.get("x-amz-security-token") == token


def test_keys_are_escaped_as_s3_signs_them() -> None:
    """Every byte but RFC 3986's unreserved ones and "/" is percent-encoded, UTF-8 first."""
    assert sigv4.quote_path("/a b+c/ü~x_y-z.jpg") == "/a%20b%2Bc/%C3%BC~x_y-z.jpg"
    assert sigv4.quote_path("/%25/?#&=") == "/%2525/%3F%23%26%3D"


@pytest.mark.parametrize(
    ("endpoint", "style", "region", "base"),
    [
        ("http://127.0.0.1:8333", "auto", "us-east-1", "http://127.0.0.1:8333/media/"),
        ("https://minio.example", "path", "eu-west-2", "https://minio.example/media/"),
        ("https://minio.example", "virtual", "eu-west-2", "https://media.minio.example/"),
        (None, "auto", "eu-west-2", "https://media.s3.eu-west-2.amazonaws.com/"),
    ],
)
def test_objects_go_where_botocore_sends_them(
    endpoint: str | None, style: str, region: str, base: str
) -> None:
    """The PUT's URL prefix and signing region are read off a request botocore prepares for
    the bucket, so the endpoint, addressing style and region are botocore's: and that request
    is never sent (there is no server here)."""

    async def where() -> tuple[str, str]:
        session = aiobotocore.session.AioSession()
        config = BotoConfig(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": style},
        )
        async with session.create_client(
            "s3", endpoint_url=endpoint, config=config,
            aws_access_key_id="AKID", aws_secret_access_key="secret",
        ) as client:  # fmt: skip
            where = await s3put.where_botocore_sends(client, "media")
            # The hook that stopped the probe is gone again.
            handlers = client.meta.events._emitter._unique_id_handlers
            assert not [name for name in handlers if str(name).startswith("mediad-probe")]
            return where

    assert asyncio.run(where()) == (base, region)


def test_an_unexpected_request_is_a_configuration_error() -> None:
    scope = "AWS4-HMAC-SHA256 Credential=AKID/20261202/eu-west-2/s3/aws4_request, Sig..."
    with pytest.raises(s3errors.S3AccessError, match="cannot tell where objects go"):
        s3put._base_and_region("https://s3.example/media/other", scope)
    with pytest.raises(s3errors.S3AccessError, match="SigV4 credential scope"):
        s3put._base_and_region(f"https://s3.example/media/{s3put._PROBE_KEY}", "AWS AKID:sig")
    assert s3put._base_and_region(f"https://s3.example/m/{s3put._PROBE_KEY}", scope) == (
        "https://s3.example/m/", "eu-west-2",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", s3errors.S3AccessError,
         "s3_bad_credentials"),
        (400, b"<Error><Code>BadDigest</Code><Message>no</Message></Error>",
         s3errors.S3BadDigestError, "s3_bad_digest"),
        (503, b"<Error><Code>SlowDown</Code></Error>", s3errors.S3UnavailableError,
         "s3_throttled"),
        (502, b"<html>bad gateway</html>", s3errors.S3UnavailableError, "s3_unavailable"),
        (400, b"<Error><Code>InvalidArgument</Code></Error>", s3errors.S3RejectedError,
         "s3_rejected"),
    ],
)  # fmt: skip
def test_error_answers_are_read_like_botocores(
    status: int, body: bytes, expected: type[s3errors.S3Error], code: str
) -> None:
    """An error answer's XML code and status classify it as botocore's ClientError would be."""
    error = s3put._error("PUT k", status, body, {"Retry-After": "2"})
    assert type(error) is expected
    assert error.error_code == code
    if isinstance(error, s3errors.S3UnavailableError) and code == "s3_throttled":
        assert error.retry_after == 2.0


def test_the_proxy_is_the_environments_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """$HTTPS_PROXY (or $HTTP_PROXY for http) is used unless $NO_PROXY exempts the host."""
    clear_proxy_environment(monkeypatch)
    assert s3put.env_proxy("https://s3.example/media/") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain-proxy.internal:3128")
    assert s3put.env_proxy("https://s3.example/media/") == "http://proxy.internal:3128"
    assert s3put.env_proxy("http://s3.example/media/") == "http://plain-proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "s3.example,localhost")
    assert s3put.env_proxy("https://s3.example/media/") is None
    assert s3put.env_proxy("https://other.example/media/") == "http://proxy.internal:3128"
