"""The one retry vocabulary: a policy (attempts, total time, jittered backoff) that storage
calls, the Azure Stack Hub ARM reads and the commerce client all spend the same way, and
the ``Retry-After`` reading they share.

Storage calls (``call_with_retry``): what is retried, how often, how long.

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

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import requests
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
    """Caps of one call (attempts and total seconds, across all its requests) and the
    full-jitter backoff between attempts: ``uniform(0, min(cap, base * 2**(attempt - 1)))``.

    A wait that would carry the call past ``max_total_seconds`` is not started: the call
    gives up instead. ``sleep`` and ``monotonic`` are fields so tests never wait.
    """

    max_attempts: int = 6
    max_total_seconds: float = 60.0
    backoff_base_seconds: float = 0.2
    backoff_cap_seconds: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    monotonic: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_total_seconds <= 0:
            raise ValueError("a retry policy needs at least one attempt and some time")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter wait after failed attempt number ``attempt`` (1, 2, ...)."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)

    def gives_up(self, attempts: int, elapsed: float, wait: float) -> bool:
        """True when no attempt is left, or waiting ``wait`` would pass the time cap."""
        return attempts >= self.max_attempts or elapsed + wait >= self.max_total_seconds


DEFAULT_POLICY = RetryPolicy()
# Jitter, not security; one generator (seeding one per call cost more than the call).
_JITTER = random.Random()


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
    rng = rng or _JITTER
    started = policy.monotonic()
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as error:
            if not is_transient(error):
                raise
            elapsed = policy.monotonic() - started
            wait = policy.backoff(attempt, rng)
            if policy.gives_up(attempt, elapsed, wait):
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


def retry_after_seconds(response: requests.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None if absent or bad."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
