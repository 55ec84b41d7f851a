"""The error tree every layer shares; callers catch the base they mean.

::

    UsageReporterError
    ├── BadInputError              -> 400: the caller's request or a source record is malformed
    │   ├── UnknownResourceError   -> 404: the path names no resource of the API
    │   └── SheetRejectedError     a price sheet with problems: refused whole, one line each
    ├── NotAllowedError            -> 401/403: the caller may not see what it asked for
    ├── TransientError             -> retry with backoff, or 503 + Retry-After at the HTTP edge
    │   ├── UpstreamUnavailableError   a peer (Azure Stack Hub ARM) kept failing
    │   │   └── GatewayTimeoutError    its gateway timed out: ask a smaller question
    │   └── CommerceUnavailableError   the commerce endpoint kept failing (carries what settled)
    ├── FinalRejectionError        -> recorded in the ledger; retrying cannot help
    └── ConfigurationError         -> the app settings are missing or malformed; fail at load

Each error carries a stable ``code`` (ARM-style, e.g. ``InvalidProperty``) so the HTTP
boundary and the logs never depend on message text.
"""

from __future__ import annotations

from collections.abc import Sequence


class UsageReporterError(Exception):
    """Base of every error this project raises on purpose."""

    code = "InternalError"

    def __init__(self, message: str, *, code: str | None = None, target: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.target = target


class BadInputError(UsageReporterError):
    """Malformed input: an HTTP argument, a CLI argument or a usage record."""

    code = "InvalidProperty"


class NotAllowedError(UsageReporterError):
    """The caller is unauthenticated (401) or may not read the resource (403)."""

    code = "AuthorizationFailed"


class TransientError(UsageReporterError):
    """A fault that may clear by itself: storage throttling, timeouts, a restarting peer."""

    code = "ServiceUnavailable"

    def __init__(self, message: str, *, retry_after_seconds: float = 5.0, **kwargs: str | None):
        super().__init__(message, **kwargs)
        self.retry_after_seconds = retry_after_seconds


class FinalRejectionError(UsageReporterError):
    """The peer refused for good (e.g. ``InvalidDimension``); record it, do not retry."""

    code = "Rejected"


class ConfigurationError(UsageReporterError):
    """App settings are missing or malformed; raised once, at load."""

    code = "InvalidConfiguration"


class UnknownResourceError(BadInputError):
    """The path names no resource of this API (answered 404, not 400)."""

    code = "NotFound"


class UpstreamUnavailableError(TransientError):
    """The peer kept failing (busy, throttled, unreachable) until the retry budget ran out."""

    code = "UpstreamUnavailable"


class GatewayTimeoutError(UpstreamUnavailableError):
    """The peer's gateway timed out ``gateway_timeout_limit`` times: ask a smaller question."""

    code = "GatewayTimeout"


class CommerceUnavailableError(TransientError):
    """Attempts or time ran out; ``settled`` holds the event outcomes that were final by then
    (``shared.billing.events.EventOutcome``), so the caller can record them before retrying."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float = 5.0,
        settled: Sequence[object] = (),
    ) -> None:
        super().__init__(
            message,
            retry_after_seconds=retry_after_seconds,
            code="CommerceUnavailable",
            target="commerce",
        )
        self.settled = tuple(settled)


class SheetRejectedError(BadInputError):
    """A price sheet with problems; ``problems`` holds one line per problem, and nothing of
    the sheet was stored (a sheet is imported whole or not at all)."""

    code = "InvalidPriceSheet"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            f"price sheet refused ({len(self.problems)} problems):\n" + "\n".join(self.problems)
        )
