"""The error classes of mediad: one root, and the error codes rows are failed with."""

from __future__ import annotations


class MediadError(Exception):
    """Root of every error mediad raises on purpose."""


class ConfigError(MediadError):
    """The configuration file or an environment override is wrong; the message names the key."""


class UsageError(MediadError):
    """The command line asks for something it cannot mean; the message says what to give."""


class DatabaseError(MediadError):
    """The database cannot be reached or is not in the state mediad expects."""


class StageError(MediadError):
    """Processing one row of a stage failed; `error_code` is what the row records."""

    error_code = "internal_error"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class TransientError(StageError):
    """A failure worth retrying later (timeouts, resets, 5xx, 429, a lease lost in flight)."""

    def __init__(
        self, message: str, *, error_code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, error_code=error_code)
        # Seconds the remote side asked us to wait (Retry-After); the backoff never undercuts it.
        self.retry_after = retry_after


class PermanentError(StageError):
    """A failure no retry can mend (404, 410, bad URL, not media, too large)."""

    error_code = "permanent_error"


class BadRowError(PermanentError):
    """The row itself is malformed: an empty, unparseable or non-http(s) URL, say."""

    error_code = "bad_url"


class StagePausedError(StageError):
    """The stage cannot work at all for now (disk full, S3 access denied): pause it, fail nothing.

    The row in hand is handed back untouched and the pool stops claiming for `pause_for` seconds.
    """

    def __init__(self, message: str, *, error_code: str, pause_for: float = 30.0) -> None:
        super().__init__(message, error_code=error_code)
        self.pause_for = pause_for


class DeferredError(StageError):
    """Not this row's fault and not worth an attempt (its host is backing off): try it later.

    The row is re-queued `delay` seconds ahead and the attempt is not counted.
    """

    def __init__(self, message: str, *, error_code: str, delay: float) -> None:
        super().__init__(message, error_code=error_code)
        self.delay = delay


class SkipRowError(StageError):
    """The stage has no work for this row (a kind of media it does not handle): `skipped`, with
    the message as the reason."""

    error_code = "skipped"


# Fetch errors: the taxonomy of issue 3 lives beside the fetcher, built on these roots.
class FetchError(StageError):
    """Root of the download stage's errors."""


class TransientFetchError(FetchError, TransientError):
    """A download failure that a later attempt may not meet."""


class PermanentFetchError(FetchError, PermanentError):
    """A download failure that no later attempt can mend."""


# Media errors: what the probe finds wrong with bytes that arrived whole. No retry changes the
# bytes, so each is permanent; none is a fetch error (the fetch worked).
class MediaError(PermanentError):
    """Root of the probe's refusals: the stored bytes are not media mediad keeps."""


class NotMediaError(MediaError):
    """The body is not media at all: HTML, JSON, text, an archive, empty, or unknown bytes."""

    error_code = "not_media"


class CorruptMediaError(MediaError):
    """The bytes look like a media format, but no decoder accepts them (truncated, damaged)."""

    error_code = "corrupt_media"


class UnsupportedMediaError(MediaError):
    """The bytes are a media format mediad does not decode (HEIC, AVIF, PSD, ICO, RAW, MIDI...)."""

    error_code = "unsupported_type"


class MediaTooLargeError(MediaError):
    """The picture's dimensions exceed the pixel bound: decoding it could exhaust memory."""

    error_code = "too_large"
