"""The archive's S3 client and TLS: an https endpoint's certificate is always verified, by
botocore's requests and the small files' own PUTs alike, against the CA bundle botocore is told
of ($AWS_CA_BUNDLE) or its own; a plain http endpoint (a SeaweedFS beside the host) is spared the
TLS context, which no request uses."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mediad.storage import s3, s3errors, s3put
from tests import media
from tests.archive_support import archive_config, upload_stored
from tests.s3proxy import lying_s3
from tests.s3server import SeaweedFS
from tests.support import clear_proxy_environment


def _self_signed(directory: Path) -> ssl.SSLContext:
    """A server context for 127.0.0.1 with a certificate no CA signed (kept in
    `directory`/cert.pem, for a client told to trust it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def test_an_https_endpoint_with_an_untrusted_certificate_is_refused(
    s3_server: SeaweedFS, tmp_path: Path
) -> None:
    async with lying_s3(s3_server, tls=_self_signed(tmp_path)) as proxy:
        cfg = archive_config(proxy, tmp_path / "store")
        async with s3.open_client(cfg.archive) as client:
            with pytest.raises(s3errors.S3Error, match=r"(?i)certificate"):
                await client.check_bucket()
    # Refused in the handshake: no request went over the unverified connection.
    assert proxy.requests == []


async def test_a_private_ca_given_as_aws_ca_bundle_is_trusted(
    s3_server: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https endpoint signed by the operator's own CA, named the way botocore reads it."""
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "cert.pem"))
    async with lying_s3(s3_server, tls=_self_signed(tmp_path)) as proxy:
        cfg = archive_config(proxy, tmp_path / "store")
        async with s3.open_client(cfg.archive) as client:
            await client.check_bucket()
    assert proxy.methods == [("HEAD", f"/{proxy.bucket}")]


async def test_a_small_files_put_trusts_the_same_private_ca(
    s3_server: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file's PUT is our own aiohttp request, not botocore's: it trusts the CA bundle
    botocore was told of, so over https to a server signed by a private CA the file is uploaded
    and proven by the PUT's answer, as over http."""
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "cert.pem"))
    async with lying_s3(s3_server, tls=_self_signed(tmp_path)) as proxy:
        assert proxy.endpoint.startswith("https://")
        uploads = await upload_stored(archive_config(proxy, tmp_path / "store"), media.jpeg(seed=3))
    [done] = uploads.outcomes
    assert (done.outcome, done.verified_by) == ("uploaded", "put_response")
    assert [r.method for r in proxy.requests] == ["PUT"]


async def test_a_plain_http_endpoint_works_without_a_tls_context(
    s3_server: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_environment(monkeypatch)
    cfg = archive_config(s3_server, tmp_path / "store")
    assert cfg.archive.endpoint_url.startswith("http://")
    assert not s3.needs_tls_context(cfg.archive.endpoint_url)
    async with s3.open_client(cfg.archive) as client:
        await client.check_bucket()


@pytest.mark.parametrize(
    ("endpoint", "proxy", "needed"),
    [
        ("", None, True),  # AWS itself
        ("https://s3.example", None, True),
        ("HTTPS://s3.example", None, True),
        ("http://127.0.0.1:8333", None, False),
        ("HTTP://seaweed.internal:8333", None, False),
        # The proxy's own URL may be https: its certificate is verified as ever.
        ("http://seaweed.internal:8333", "https://proxy.internal:3128", True),
    ],
)
def test_only_a_plain_http_endpoint_without_a_proxy_needs_no_tls_context(
    endpoint: str, proxy: str | None, needed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_environment(monkeypatch)
    if proxy is not None:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    assert s3.needs_tls_context(endpoint) is needed


def test_a_ca_bundle_that_cannot_be_used_is_an_access_error(tmp_path: Path) -> None:
    """A missing or empty bundle stops the PUTs as a misconfiguration, naming the file; plain
    http never reads one."""
    missing, empty = tmp_path / "missing.pem", tmp_path / "empty.pem"
    empty.write_text("")
    for bundle in (missing, empty):
        with pytest.raises(s3errors.S3AccessError, match=str(bundle)) as raised:
            s3put.tls_like_botocore("https://s3.example/media/", str(bundle))
        assert raised.value.error_code == "s3_ca_bundle_unusable"
    assert s3put.tls_like_botocore("http://127.0.0.1:8333/media/", str(missing)) is True
    assert isinstance(s3put.tls_like_botocore("https://s3.example/media/", None), ssl.SSLContext)
