"""Retries for storage calls: what is retried, how often, how long.

Only faults that may clear by themselves are retried: connection failures, timeouts, and the
HTTP statuses storage uses for "busy" (408, 429, 500, 502, 503, 504). Everything else (a 404,
a 409, a 412 ETag conflict, a malformed entity) is the caller's business and raises at once.

Attempts and total time are both capped; waits grow exponentially with full jitter so that
many writers recovering from the same outage do not retry in lock step. When the budget is
spent the last fault is raised as ``TransientError``: the caller decides whether that means
"leave the watermark and let the next run finish" or "503 with Retry-After".

The SDK's own retry policy is switched off (``retry_total=0``) where clients are built, so a
call is retried here and only here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from shared.core.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(error: BaseException) -> bool:
    """True for storage faults worth retrying (connection, timeout, busy statuses)."""
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(error, HttpResponseError):
        return error.status_code in RETRYABLE_STATUSES
    return isinstance(error, ConnectionError | TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_total_seconds: float = 60.0
    backoff_base_seconds: float = 0.2
    backoff_cap_seconds: float = 8.0
    # Tests pass a recorder here so they never wait.
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def wait_before(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter wait before ``attempt`` (2, 3, ...)."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 2))
        return rng.uniform(0, ceiling)


DEFAULT_POLICY = RetryPolicy()


def call_with_retry(
    operation: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    rng: random.Random | None = None,
) -> T:
    """Run ``operation``, retrying transient storage faults within ``policy``'s caps.

    ``what`` names the operation in logs and in the final ``TransientError``.
    """
    rng = rng or random.Random()  # jitter, not security
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as error:
            if not is_transient(error):
                raise
            elapsed = time.monotonic() - started
            wait = policy.wait_before(attempt + 1, rng)
            if attempt >= policy.max_attempts or elapsed + wait > policy.max_total_seconds:
                raise TransientError(
                    f"{what} failed after {attempt} attempts: {type(error).__name__}"
                ) from error
            log.warning(
                "%s: transient %s on attempt %d, retrying in %.2fs",
                what,
                type(error).__name__,
                attempt,
                wait,
            )
            policy.sleep(wait)
            attempt += 1
