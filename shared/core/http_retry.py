"""Retries for JSON GETs to an ARM-style HTTP API: what is retried, how often, how long.

The ARM reads of the Azure Stack Hub usage source, spending a ``shared.core.retry``
``RetryPolicy`` like every other retried call. What it retries:

- ``429`` (throttled), waiting what ``Retry-After`` says (seconds or an HTTP date), never
  longer than the time left;
- ``500``, ``502``, ``503``, ``504``, connection failures, timeouts, and a ``200`` whose
  body is not JSON (a proxy's error page, a body cut short);

with full-jitter exponential backoff between attempts. Both the attempts and the total
seconds of one call are capped; a wait that would pass the time cap is not started. When
the budget is spent the call raises ``TransientError`` (``UpstreamUnavailableError``),
naming what it was reading and the last failure, so a collector run ends with the
watermark unmoved and the next run tries again.

Gateway timeouts are special: ARM answers ``504`` (or the client's read timeout fires)
when a query is too big to finish in the gateway's time, and retrying the same big query
rarely helps. ``gateway_timeout_limit`` lets a caller stop after that many such answers
with ``GatewayTimeoutError`` and ask smaller questions instead (what Microsoft's
AzureStack-Tools usage scripts do: one subscriber at a time).

Not retried (raised at once): ``401``/``403`` -> ``NotAllowedError``; any other ``4xx``
-> ``BadInputError`` carrying the peer's ARM error code (``x-ms-error-code`` or the body's
``error.code``). The bearer token is never part of a message.

"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from shared.core.errors import (
    BadInputError,
    GatewayTimeoutError,
    NotAllowedError,
    UpstreamUnavailableError,
)
from shared.core.retry import RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpTimeouts:
    """Seconds to connect, and to wait for an answer; a slower read counts as a gateway
    timeout (the query is too big for the peer's gateway)."""

    connect_seconds: float = 10.0
    read_seconds: float = 120.0


# ARM reads: a page may be slow, and throttling waits can be long.
ARM_POLICY = RetryPolicy(
    max_total_seconds=600.0, backoff_base_seconds=1.0, backoff_cap_seconds=30.0
)


def get_json(
    session: requests.Session,
    url: str,
    *,
    what: str,
    policy: RetryPolicy,
    headers: Callable[[], Mapping[str, str]],
    timeouts: HttpTimeouts = HttpTimeouts(),
    params: Mapping[str, str] | None = None,
    gateway_timeout_limit: int | None = None,
    rng: random.Random | None = None,
) -> Any:
    """GET ``url`` and return its JSON body, retrying transient faults within ``policy``.

    ``what`` names the read in logs and errors (never the URL's query, which may carry a
    continuation token). ``headers`` is called before every attempt, so a token provider
    can hand out a fresh token. See the module docstring for what is retried.
    """
    rng = rng or random.Random()  # jitter, not security
    started = policy.monotonic()
    attempts = 0
    gateway_timeouts = 0
    while True:
        remaining = policy.max_total_seconds - (policy.monotonic() - started)
        attempts += 1
        retry_after: float | None = None
        try:
            response = session.get(
                url,
                params=params,
                headers=dict(headers()),
                timeout=(
                    timeouts.connect_seconds,
                    max(0.001, min(timeouts.read_seconds, remaining)),
                ),
            )
        except requests.Timeout as error:
            failure = f"timeout ({type(error).__name__})"
            # A read timeout is the client's view of a gateway timeout: the query is slow.
            if not isinstance(error, requests.ConnectTimeout):
                gateway_timeouts += 1
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            failure = f"connection failed ({type(error).__name__})"
        else:
            status = response.status_code
            if 200 <= status < 300:
                try:
                    return response.json()
                except ValueError:
                    failure = f"HTTP {status} with a body that is not JSON"
            elif status in RETRYABLE_STATUSES:
                failure = f"HTTP {status} {_error_code(response) or ''}".rstrip()
                retry_after = retry_after_seconds(response)
                if status == 504:
                    gateway_timeouts += 1
            else:
                raise _final_error(what, response)
        if gateway_timeout_limit is not None and gateway_timeouts >= gateway_timeout_limit:
            raise GatewayTimeoutError(
                f"{what}: gateway timed out {gateway_timeouts} time(s); last failure: {failure}"
            )
        wait = retry_after if retry_after is not None else policy.backoff(attempts, rng)
        elapsed = policy.monotonic() - started
        if policy.gives_up(attempts, elapsed, wait):
            raise UpstreamUnavailableError(
                f"{what} gave up after {attempts} attempt(s) in {elapsed:.1f}s; "
                f"last failure: {failure}",
                retry_after_seconds=max(wait, 1.0),
            )
        log.warning("%s: %s on attempt %d, retrying in %.2fs", what, failure, attempts, wait)
        policy.sleep(wait)


def _final_error(what: str, response: requests.Response) -> Exception:
    status = response.status_code
    code = _error_code(response)
    message = _error_message(response)
    text = f"{what} was refused: HTTP {status} {code or ''}: {message}".replace("  ", " ")
    if status in (401, 403):
        return NotAllowedError(text, code=code or "AuthorizationFailed", target=what)
    return BadInputError(text, code=code or f"HTTP{status}", target=what)


def _error_body(response: requests.Response) -> Mapping[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(response: requests.Response) -> str | None:
    code = response.headers.get("x-ms-error-code") or _error_body(response).get("code")
    return str(code)[:100] if code else None


def _error_message(response: requests.Response) -> str:
    message = _error_body(response).get("message")
    return str(message)[:300] if message else response.text[:300]
