"""AWS Signature Version 4 for one S3 request, written out: the archive's small-object PUT signs
its own request instead of paying botocore's request pipeline (benchmarks/s3_requests.py).

https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html. The payload hash
is the body's SHA-256, which the caller already knows (a row's `sha256_sum`), so the request is
signed over its bytes at no cost. The signing key is derived once a day per region.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

ALGORITHM = "AWS4-HMAC-SHA256"
# What S3 leaves unescaped in a path: RFC 3986's unreserved characters, and "/" between segments.
_PATH_SAFE = "-_.~/"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


def quote_path(path: str) -> str:
    """A path as S3 signs and sends it: every byte but the unreserved ones percent-encoded."""
    return urllib.parse.quote(path, safe=_PATH_SAFE)


class Signer:
    """Signs requests to one region's S3 with one set of credentials."""

    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._key_date = ""
        self._key = b""

    def _signing_key(self, date: str) -> bytes:
        if date != self._key_date:
            key = ("AWS4" + self.credentials.secret_key).encode()
            for part in (date, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key, self._key_date = key, date
        return self._key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, str],
        payload_sha256: str,
        now: datetime,
    ) -> dict[str, str]:
        """The headers to send: `headers` (names in lower case) with the date, the payload hash,
        the session token if any, and the Authorization signing them all and `host`. `path` is
        already percent-encoded (quote_path) and carries no query."""
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        signed = dict(headers)
        signed["x-amz-date"] = stamp
        signed["x-amz-content-sha256"] = payload_sha256
        if self.credentials.token:
            signed["x-amz-security-token"] = self.credentials.token
        canonical = {"host": host} | {name: " ".join(v.split()) for name, v in signed.items()}
        names = sorted(canonical)
        signed_names = ";".join(names)
        request = "\n".join(
            [
                method,
                path,
                "",  # no query string
                "".join(f"{name}:{canonical[name]}\n" for name in names),
                signed_names,
                payload_sha256,
            ]
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = (
            f"{ALGORITHM} Credential={self.credentials.access_key}/{scope},"
            f" SignedHeaders={signed_names}, Signature={signature}"
        )
        return signed
