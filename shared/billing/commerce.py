"""The commerce (Marketplace Metering API) client: post usage events, read the daily rows.

Why it looks like this (spec/commerce-api.md, design invariant 4, "billed exactly once in
effect"):

- **Idempotency comes from the endpoint, not from us.** The service keeps at most one
  accepted event per (resource, dimension, UTC hour) and answers a re-send with
  ``Duplicate`` plus the originally accepted event. So after a timeout, a dropped connection
  or an answer lost after the events were accepted, re-posting the same events is safe, and
  the ``Duplicate`` tells us what was billed. :meth:`CommerceClient.post_batch` makes that
  decision itself: a ``Duplicate`` whose accepted quantity equals ours (relative tolerance
  1e-9) becomes :attr:`EventStatus.DUPLICATE_CONFIRMED` (billed, by an earlier attempt or
  run), one that differs becomes :attr:`EventStatus.MISMATCH` (never silently accepted), and
  one without an ``acceptedMessage`` stays :attr:`EventStatus.DUPLICATE`. The accepted
  quantity and usage event id are always exposed on the outcome. For the same reason a
  batch may not hold two events with the same key: sum them into one event first.
- **We own the retries.** urllib3's retries are off (``Retry(total=0)``): they cannot tell a
  safe re-post from an unsafe one, and they would hide attempts from our caps. Retried:
  ``429`` (sleeping exactly its ``Retry-After`` seconds), ``5xx``, timeouts, connection
  errors, an unreadable ``200`` body, and per-event ``Error`` statuses (only those events are
  re-posted). Everything else is final. Backoff is full jitter, ``uniform(0, min(cap,
  base * 2**(attempt - 1)))``. One budget per call caps both the attempts (HTTP requests)
  and the total seconds; a wait that would cross the time cap is not started.
- **Errors** (shared.core.errors): budget exhausted -> :class:`CommerceUnavailableError` (a
  ``TransientError``; it carries the outcomes already settled so they can be recorded);
  ``400`` on a POST -> ``FinalRejectionError``: the OpenAPI file answers a whole batch
  ``400`` for "missing or invalid data provided or expired", which one event of 25 is
  enough for, so the caller splits the batch to find it (``Reporter``); ``401``/``403`` ->
  one fresh token and one more try, then ``NotAllowedError``. Any other ``4xx`` (``404``
  from a mistyped ``COMMERCE_BASE_URL``, ``405``, ``413``, a ``400`` on the read) says
  nothing about the events: a configuration or transport fault, retried like a ``5xx``
  and then surfaced as ``CommerceUnavailableError`` naming it, never a refusal of the
  events. Messages name the route, the attempts and the last failure, never the token (it
  is also scrubbed from any text we did not write, e.g. a peer's error body).
- ``sleep`` (and ``monotonic``) are parameters so tests replace waiting by a recorder.

One pooled ``requests.Session`` per client, which several threads may post through at once
(the function app keeps one for the work items a worker runs together): a call changes
nothing on the client but its cached token and its jitter generator (one assignment, and a
``Random`` whose draws are atomic), each call keeps its attempts in its own budget,
urllib3's pool hands each request its own connection under a lock, and the only state a
request changes in the session, its cookie jar, locks too. Only ``close`` must not overlap
a call.
"""

from __future__ import annotations

import logging
import math
import random as random_module
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.billing.daily_sums import DailyRead, read_rows
from shared.billing.events import (
    MAX_BATCH,
    QUANTITY_REL_TOLERANCE,
    WIRE_STATUSES,
    EventOutcome,
    EventStatus,
    UsageEvent,
    endpoint_key,
)
from shared.billing.tokens import RefreshableTokenProvider, TokenProvider
from shared.core.errors import (
    CommerceUnavailableError,
    FinalRejectionError,
    NotAllowedError,
)
from shared.core.hours import DAY, floor_day, floor_hour
from shared.core.retry import RetryPolicy, retry_after_seconds

logger = logging.getLogger(__name__)

API_VERSION = "2018-08-31"
# Pages of GET usageEvents one read follows at most (a link that never ends is a fault).
MAX_DAILY_PAGES = 1000
# One POST or GET: up to 6 attempts in 2 minutes, backing off from 0.5 s to 30 s.
COMMERCE_POLICY = RetryPolicy(
    max_total_seconds=120.0, backoff_base_seconds=0.5, backoff_cap_seconds=30.0
)


@dataclass
class _Budget:
    """Attempts and seconds one public call may spend, shared by all its HTTP requests."""

    started: float
    route: str = "call"
    attempts: int = 0
    refreshed_token: bool = False
    last_failure: str = "nothing tried"
    last_retry_after: float | None = None


class CommerceClient:
    """Talks to the metering endpoint (production or the local emulator) with our retries."""

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 30,
        retry: RetryPolicy = COMMERCE_POLICY,
        random: random_module.Random | None = None,
        pool_size: int = 10,
        proxies: Mapping[str, str] | None = None,
        verify: str | bool = True,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._token_provider = token_provider
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._retry = retry
        self._random = random or random_module.Random()
        self._token: str | None = None
        self._session = requests.Session()
        # Proxies and CA bundle as given (``commerce_client`` passes the settings'), never
        # re-read from the environment on every request.
        self._session.trust_env = False
        self._session.proxies.update(proxies or {})
        self._session.verify = verify
        # One host: one pool, a connection for each thread that may post at once.
        adapter = HTTPAdapter(
            pool_connections=1,
            pool_maxsize=pool_size,
            max_retries=Retry(total=0, connect=0, read=False, redirect=False, status=0),
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CommerceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CommerceClient({self._base_url!r})"

    # -- public calls ----------------------------------------------------------------------

    def post_batch(self, events: Sequence[UsageEvent]) -> list[EventOutcome]:
        """Post 1..25 events; one outcome per event, in the order given.

        Per-event ``Error`` statuses are re-posted (only those events) within the same
        budget. Raises ``ValueError`` for an empty, oversized or key-colliding batch,
        ``CommerceUnavailableError`` (TransientError) when the budget runs out,
        ``FinalRejectionError`` when the whole batch is refused (``400``: one of its events
        may be invalid; the others are not refused by it), ``NotAllowedError`` when a fresh
        token is refused too.
        """
        if not 1 <= len(events) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} events, not {len(events)}")
        if len({event.key for event in events}) != len(events):
            raise ValueError("two events share (resource, dimension, hour): sum them first")
        budget = _Budget(started=self._retry.monotonic())
        correlation_id = str(uuid.uuid4())
        settled: dict[int, EventOutcome] = {}
        pending = list(range(len(events)))
        sends = [0] * len(events)
        while pending:
            body = {"request": [events[i].to_wire() for i in pending]}
            attempts = budget.attempts
            try:
                response = self._request(
                    budget,
                    "POST",
                    "/api/batchUsageEvent",
                    json_body=body,
                    correlation_id=correlation_id,
                    settled=lambda: _in_order(settled),
                )
            finally:
                for index in pending:  # every attempt of the request carried the events
                    sends[index] += budget.attempts - attempts
            results = _batch_results(response)
            if results is None:
                budget.last_failure = "unreadable 200 batch answer"
                self._pause(budget, None, _in_order(settled))
                continue
            answered = match_results([events[i] for i in pending], results)
            still_failing = []
            for position, index in enumerate(pending):
                result = answered.get(position)
                if result is None or result.get("status") == "Error":
                    still_failing.append(index)
                else:
                    settled[index] = replace(_outcome(events[index], result), sends=sends[index])
            if still_failing:
                budget.last_failure = f"{len(still_failing)} event(s) answered Error (or nothing)"
                self._pause(budget, None, _in_order(settled))
            pending = still_failing
        return [settled[i] for i in range(len(events))]

    def daily_usage(
        self,
        first_day: datetime,
        last_day: datetime,
        *,
        needed: Collection[tuple[str, str]] | None = None,
    ) -> DailyRead:
        """What the endpoint accepted on UTC days ``first_day``..``last_day`` (GET usageEvents).

        The documented daily rows (``shared.billing.daily_sums``); nothing per hour or per
        event exists to read. ``needed``: the (resource, dimension) pairs the caller decides
        (None: all): other rows are skipped unparsed, and a needed row that cannot be
        parsed is named in the answer (``DailyRead.unreadable``) rather than failing the
        read. Whether ``usageEndDate`` includes its own day is not documented, so the
        request runs a day further and rows outside the days asked are dropped. Whether the
        rows page is not documented either: an answer ``{"value": [...], "nextLink": ...}``
        is followed link by link (each page its own budget), on this client's own scheme,
        host and port only (the bearer token goes nowhere else). An answer that is neither
        a list nor such a page counts as a failed attempt (retried, then
        ``CommerceUnavailableError``), as does a link elsewhere or a loop.
        """
        first, last = floor_day(first_day), floor_day(last_day)
        params = {
            "usageStartDate": first.strftime("%Y-%m-%d"),
            "usageEndDate": (last + DAY).strftime("%Y-%m-%d"),
        }
        raw_rows: list[object] = []
        link: str | None = None
        followed: set[str] = set()
        while True:
            rows, link = self._daily_page(params, link)
            raw_rows += rows
            if link is None:
                return read_rows(raw_rows, first, last, needed)
            if link in followed or len(followed) >= MAX_DAILY_PAGES:
                raise CommerceUnavailableError(
                    f"commerce GET /api/usageEvents: nextLink loops or exceeds "
                    f"{MAX_DAILY_PAGES} pages",
                    retry_after_seconds=self._retry.backoff_cap_seconds,
                )
            followed.add(link)

    def _daily_page(
        self, params: Mapping[str, str], link: str | None
    ) -> tuple[list[object], str | None]:
        """One page of GET usageEvents (the first, or ``link``): its rows and next link."""
        budget = _Budget(started=self._retry.monotonic())
        if link is not None and not self._same_origin(link):
            raise CommerceUnavailableError(
                "commerce GET /api/usageEvents: nextLink leads to another host; not followed",
                retry_after_seconds=self._retry.backoff_cap_seconds,
            )
        while True:
            response = self._request(
                budget,
                "GET",
                "/api/usageEvents",
                params=params if link is None else None,
                url=link,
                correlation_id=str(uuid.uuid4()),
            )
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if isinstance(payload, list):
                return payload, None
            if isinstance(payload, dict) and isinstance(payload.get("value"), list):
                following = payload.get("nextLink")
                if following is None or isinstance(following, str):
                    return payload["value"], following or None
            budget.last_failure = "unreadable 200 usageEvents answer"
            self._pause(budget, None, ())

    def _same_origin(self, link: str) -> bool:
        ours, theirs = urlsplit(self._base_url), urlsplit(link)
        return (ours.scheme, ours.netloc.lower()) == (theirs.scheme, theirs.netloc.lower())

    # -- the retry loop --------------------------------------------------------------------

    def _request(
        self,
        budget: _Budget,
        method: str,
        path: str,
        *,
        correlation_id: str,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        url: str | None = None,
        settled: Callable[[], Sequence[EventOutcome]] | None = None,
    ) -> requests.Response:
        """One successful (2xx) answer, after as many retries as the budget allows.

        ``url``: an absolute link the endpoint gave (a next page) instead of ``path``; it
        keeps its own arguments, ``api-version`` added only if it has none.
        """
        route = f"{method} {path}"
        if url is None:
            target = f"{self._base_url}{path}"
            arguments: dict[str, str] = {"api-version": API_VERSION, **(params or {})}
        else:
            target = url
            has_version = "api-version" in parse_qs(urlsplit(url).query)
            arguments = {} if has_version else {"api-version": API_VERSION}
        budget.route = route
        while True:
            remaining = self._retry.max_total_seconds - (self._retry.monotonic() - budget.started)
            if budget.attempts >= self._retry.max_attempts or remaining <= 0:
                raise self._exhausted(budget, settled() if settled else ())
            budget.attempts += 1
            token = self._current_token()
            headers = {
                "Authorization": f"Bearer {token}",
                "x-ms-requestid": str(uuid.uuid4()),
                "x-ms-correlationid": correlation_id,
            }
            retry_after: float | None = None
            try:
                response = self._session.request(
                    method,
                    target,
                    params=arguments,
                    json=json_body,
                    headers=headers,
                    timeout=(self._connect_timeout, min(self._read_timeout, remaining)),
                )
            except requests.Timeout as exc:
                budget.last_failure = f"timeout ({type(exc).__name__})"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                budget.last_failure = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status in (401, 403):
                    if budget.refreshed_token:
                        raise NotAllowedError(
                            f"commerce {route} refused a freshly fetched token ({status})",
                            code="AuthorizationFailed",
                            target="commerce",
                        )
                    budget.refreshed_token = True
                    budget.last_failure = f"HTTP {status}"
                    self._forget_token()
                    logger.warning(
                        "commerce %s answered %s; retrying with a fresh token", route, status
                    )
                    continue
                if status == 429:
                    retry_after = retry_after_seconds(response)
                    budget.last_failure = "HTTP 429 (throttled)"
                elif status >= 500:
                    budget.last_failure = f"HTTP {status}"
                elif status == 400 and method == "POST":
                    code, text = _error_of(response)
                    raise FinalRejectionError(
                        _redact(
                            f"commerce {route} refused the request: HTTP {status} {code}: {text}",
                            token,
                        ),
                        code=code or f"HTTP{status}",
                        target="commerce",
                    )
                else:
                    code, text = _error_of(response)
                    budget.last_failure = _redact(
                        f"HTTP {status} {code or ''}: {text[:120]} (not an answer about the "
                        "events: check COMMERCE_BASE_URL and the network path)",
                        token,
                    )
            self._pause(budget, retry_after, settled() if settled else ())

    def _pause(
        self, budget: _Budget, retry_after: float | None, settled: Sequence[EventOutcome]
    ) -> None:
        """Wait before the next attempt, or raise if no attempt or time is left for one."""
        route_failure = budget.last_failure
        if budget.attempts >= self._retry.max_attempts:
            raise self._exhausted(budget, settled)
        if retry_after is not None:
            delay = retry_after
            budget.last_retry_after = retry_after
        else:
            delay = self._retry.backoff(budget.attempts, self._random)
        elapsed = self._retry.monotonic() - budget.started
        if elapsed + delay >= self._retry.max_total_seconds:
            raise self._exhausted(budget, settled, would_wait=delay)
        logger.warning(
            "commerce attempt %d failed (%s); retrying in %.2fs",
            budget.attempts,
            route_failure,
            delay,
        )
        self._retry.sleep(delay)

    def _exhausted(
        self, budget: _Budget, settled: Sequence[EventOutcome], *, would_wait: float | None = None
    ) -> CommerceUnavailableError:
        elapsed = self._retry.monotonic() - budget.started
        why = (
            f"; the next wait ({would_wait:.1f}s) would pass the "
            f"{self._retry.max_total_seconds}s cap"
            if would_wait is not None
            else ""
        )
        message = (
            f"commerce {budget.route} gave up after {budget.attempts} attempt(s) "
            f"in {elapsed:.1f}s{why}; last failure: {budget.last_failure}"
        )
        retry_after = budget.last_retry_after or self._retry.backoff_cap_seconds
        return CommerceUnavailableError(
            _redact(message, self._token), retry_after_seconds=retry_after, settled=settled
        )

    def _current_token(self) -> str:
        token = self._token_provider()
        self._token = token
        return token

    def _forget_token(self) -> None:
        provider = self._token_provider
        if isinstance(provider, RefreshableTokenProvider):
            provider.invalidate()


def _in_order(settled: Mapping[int, EventOutcome]) -> list[EventOutcome]:
    return [settled[i] for i in sorted(settled)]


def _batch_results(response: requests.Response) -> list[dict[str, Any]] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    results = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    return results


def match_results(
    events: Sequence[UsageEvent], results: Sequence[Mapping[str, Any]]
) -> dict[int, Mapping[str, Any]]:
    """Which answer element is about which event: event position -> element.

    By the key the element echoes, compared as the endpoint compares it (resource id and
    dimension without case: the resource is a GUID or an ARM URI, and the docs do not
    promise the case of an echo); an element is used once. An event no echo names takes
    the element at its own position when the answer has one element per event and that
    element names no other event of the request (the documented batch example echoes
    values that differ from the request). Anything else is left unanswered (re-posted).
    """
    wanted: dict[tuple[str, str, datetime], int] = {}
    for position, event in enumerate(events):
        wanted.setdefault(endpoint_key(event.key), position)
    answered: dict[int, Mapping[str, Any]] = {}
    unclaimed: set[int] = set()
    for index, result in enumerate(results):
        key = _result_key(result)
        named = wanted.get(key) if key is not None else None
        if named is None:
            unclaimed.add(index)
        elif named not in answered:
            answered[named] = result
    if len(results) == len(events):
        for position in range(len(events)):
            if position not in answered and position in unclaimed:
                answered[position] = results[position]
    return answered


def _result_key(result: Mapping[str, Any]) -> tuple[str, str, datetime] | None:
    """The (resource, dimension, hour) a batch answer element is about, compared as the
    endpoint compares it; None when the echo cannot be read."""
    try:
        resource = result.get("resourceId") or result.get("resourceUri")
        dimension = result["dimension"]
        if not isinstance(resource, str) or not isinstance(dimension, str):
            return None
        moment = datetime.fromisoformat(str(result["effectiveStartTime"]).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return endpoint_key((resource, dimension, floor_hour(moment)))
    except (KeyError, ValueError):
        return None


def _outcome(event: UsageEvent, result: Mapping[str, Any]) -> EventOutcome:
    wire_status = str(result.get("status"))
    raw_error = result.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    reason = error.get("code")
    message = error.get("message")
    status = WIRE_STATUSES.get(wire_status, EventStatus.UNKNOWN)
    if status is EventStatus.ACCEPTED:
        return EventOutcome(
            event,
            status,
            usage_event_id=_str_or_none(result.get("usageEventId")),
            accepted_quantity=_float_or_none(result.get("quantity")),
        )
    if status is EventStatus.DUPLICATE:
        info = error.get("additionalInfo")
        raw_accepted = info.get("acceptedMessage") if isinstance(info, dict) else None
        accepted: Mapping[str, Any] = raw_accepted if isinstance(raw_accepted, dict) else {}
        quantity = _float_or_none(accepted.get("quantity"))
        event_id = _str_or_none(accepted.get("usageEventId"))
        if quantity is not None:
            same = math.isclose(quantity, event.quantity, rel_tol=QUANTITY_REL_TOLERANCE)
            status = EventStatus.DUPLICATE_CONFIRMED if same else EventStatus.MISMATCH
        return EventOutcome(
            event,
            status,
            usage_event_id=event_id,
            accepted_quantity=quantity,
            reason=_str_or_none(reason),
            message=_str_or_none(message),
        )
    if status is EventStatus.UNKNOWN:
        message = f"unknown status {wire_status!r}: {message}"
    return EventOutcome(event, status, reason=_str_or_none(reason), message=_str_or_none(message))


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _float_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """The peer's error code and message, short; the body is not trusted to be JSON."""
    try:
        payload = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(payload, dict):
        nested = payload.get("error")
        error: Mapping[str, Any] = nested if isinstance(nested, dict) else payload
        return _str_or_none(error.get("code")), str(error.get("message", ""))[:200]
    return None, str(payload)[:200]


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "<redacted>") if token else text
