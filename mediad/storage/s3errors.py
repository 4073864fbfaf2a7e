"""S3's errors as mediad's: the S3Error family, and `translate()` from botocore and the network.

The family tells apart what an operator must mend (S3AccessError: credentials, permissions,
bucket, region), what may work later (S3UnavailableError: 5xx, throttling, connection
failures), what S3 refused for good (S3RejectedError) and bytes S3 found not to match the
checksums sent with them (S3BadDigestError).
"""

from __future__ import annotations

import aiohttp
from botocore import exceptions as boto_errors

from mediad import errors


class S3Error(errors.MediadError):
    """An S3 request failed; `error_code` is what a row or a report records."""

    error_code = "s3_error"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class S3AccessError(S3Error):
    """The bucket cannot be used as configured: nothing works until an operator acts."""


class S3UnavailableError(S3Error):
    """The endpoint is unreachable, failing (5xx) or throttling: the same request may work later."""

    def __init__(
        self, message: str, *, error_code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.retry_after = retry_after


class S3RejectedError(S3Error):
    """S3 refused this request (a 4xx other than access): sending it again will not help."""

    error_code = "s3_rejected"


class S3BadDigestError(S3Error):
    """S3 received bytes that do not match the checksums we sent with them."""

    error_code = "s3_bad_digest"


# The codes S3 (and SeaweedFS) answer for an object that is not there, on HEAD and GET.
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})

# S3 error codes (HEAD answers carry only the status, hence "403", "301").
_ACCESS = {
    "AccessDenied": "s3_access_denied",
    "AllAccessDisabled": "s3_access_denied",
    "AccountProblem": "s3_access_denied",
    "403": "s3_access_denied",
    "InvalidAccessKeyId": "s3_bad_credentials",
    "SignatureDoesNotMatch": "s3_bad_credentials",
    "InvalidToken": "s3_bad_credentials",
    "ExpiredToken": "s3_bad_credentials",
    "TokenRefreshRequired": "s3_bad_credentials",
    "InvalidSecurity": "s3_bad_credentials",
    "NoSuchBucket": "s3_no_such_bucket",
    "PermanentRedirect": "s3_wrong_region",
    "301": "s3_wrong_region",
    "AuthorizationHeaderMalformed": "s3_wrong_region",
    "IllegalLocationConstraintException": "s3_wrong_region",
    "InvalidStorageClass": "s3_misconfigured",
    "InvalidEncryptionAlgorithmError": "s3_misconfigured",
    "KMS.NotFoundException": "s3_misconfigured",
    "KMS.DisabledException": "s3_misconfigured",
    "KMS.KMSInvalidStateException": "s3_misconfigured",
}
_THROTTLED = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
     "RequestThrottled", "429"}
)  # fmt: skip
_CREDENTIAL_ERRORS = (
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.CredentialRetrievalError,
    boto_errors.ProfileNotFound,
)
_CONNECTION_ERRORS = (
    boto_errors.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError
    boto_errors.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def code_of(exc: boto_errors.ClientError) -> str:
    """The S3 error code of an answer (`NoSuchKey`, or only the status, `404`, for a HEAD)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: BaseException, what: str) -> S3Error:
    """An exception from botocore or the network as one of our S3 errors.

    Anything else (a bug) is re-raised as it is; call this inside the `except` block.
    """
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return S3AccessError(
            f"{what}: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
            " or a credentials file)",
            error_code="s3_bad_credentials",
        )
    if isinstance(exc, boto_errors.ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        return classify(
            what,
            code_of(exc),
            int(meta.get("HTTPStatusCode") or 0),
            exc.response.get("Error", {}).get("Message") or "",
            retry_after=(meta.get("HTTPHeaders") or {}).get("retry-after"),
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return S3UnavailableError(
            f"{what}: {type(exc).__name__}: {exc}", error_code="s3_unavailable"
        )
    raise exc


def classify(
    what: str, code: str, status: int, message: str, *, retry_after: str | None = None
) -> S3Error:
    """An S3 error answer (its error code, HTTP status, message and Retry-After header, from
    botocore or read off the wire) as one of our S3 errors."""
    text = f"{what}: {code or status} {message}".strip()
    if code in _ACCESS or code.startswith("KMS."):
        return S3AccessError(text, error_code=_ACCESS.get(code, "s3_misconfigured"))
    if code in _THROTTLED or status == 429:
        return S3UnavailableError(
            text, error_code="s3_throttled", retry_after=_seconds(retry_after)
        )
    if status >= 500 or code in ("InternalError", "ServiceUnavailable", "RequestTimeout"):
        return S3UnavailableError(text, error_code="s3_unavailable")
    if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
        return S3BadDigestError(text)
    return S3RejectedError(text)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
