"""A local, real-HTTP emulator of the Marketplace Metering API (spec/commerce-api.md).

Why it exists: the commerce client and ``report_to_azure`` must prove that nothing is lost
or billed twice when the endpoint throttles, fails, answers late, drops the connection or
accepts events and then loses the answer. Those faults cannot be produced on demand against
the real service, so this server implements the same rules and lets tests switch them on.

Routes (all need ``api-version=2018-08-31``, else ``400 BadArgument``, and
``Authorization: Bearer <token>`` equal to the configured token, else ``403``):

- ``POST /api/usageEvent``: one event. ``200`` with the accepted event, ``409 Conflict``
  with ``additionalInfo.acceptedMessage`` for a duplicate, ``400`` with ``code`` = the
  event's status (``Expired``, ``InvalidQuantity``, ...) for any other refusal.
- ``POST /api/batchUsageEvent``: body ``{"request": [1..25 events]}``; a bare array, an
  empty or longer list is ``400 BadArgument``. ``200 {"count": n, "result": [...]}``, one
  element per event in request order, each with its own ``status``; refused elements carry
  ``error: {code, message, target}``, a ``Duplicate`` also
  ``error.additionalInfo.acceptedMessage`` (the accepted event with its ``usageEventId``
  and ``quantity``).
- ``GET /api/usageEvents?usageStartDate=..``: what was accepted, as the documented service
  answers it ("Retrieving what was accepted" in the fact sheet): **daily** rows, one per
  (UTC usage day, resource, dimension, plan), each exactly the documented fields
  (:data:`DAILY_ROW_FIELDS`): ``usageDate`` (the day's UTC midnight), ``usageResourceId``,
  ``dimension``, ``planId``, ``planName``, ``offerId``, ``offerName``, ``offerType``,
  ``azureSubscriptionId``, ``submittedQuantity`` (the sum of the day's accepted events),
  ``processedQuantity`` (what processing made of them), ``submittedCount`` (how many) and
  ``reconStatus``: ``Submitted`` while an event of the day is younger than
  ``processing_delay`` (not processed yet), else ``Accepted`` when processed equals
  submitted, ``Rejected`` when processing kept nothing, ``Mismatch`` otherwise. Arguments:
  ``usageStartDate`` (required; a date or date-time, its UTC day) and ``usageEndDate``
  (default: the clock's now; days up to and including its day), then the exact-match
  filters ``offerId``, ``planId``, ``dimension``, ``azureSubscriptionId``, ``reconStatus``.
  There is no per-hour or per-event read, as there is none at the real endpoint.
  ``TestHeaders`` and ``DryRun`` are never produced: nothing sends test headers here.

Test-only inspection, which production code never reaches (it holds no emulator object):
:meth:`CommerceEmulator.accepted_events` lists every accepted event (as ``acceptedMessage``
spells it), :meth:`CommerceEmulator.set_processed` makes processing disagree with what was
accepted (``Mismatch`` / ``Rejected``), :meth:`CommerceEmulator.add_raw_row` adds a row as
something else wrote it, and ``processing_delay`` keeps young days ``Submitted``.

Per-event rules, in this order: an object with exactly one of ``resourceId`` /
``resourceUri`` and string ``dimension`` / ``planId`` (``BadArgument``); a finite number
``quantity`` > 0 (``InvalidQuantity``; a non-number is ``BadArgument``); a parseable
``effectiveStartTime`` (naive means UTC; else ``BadArgument``) not after the clock's now
(``BadArgument``) nor older than 24 hours before it (``Expired``); the resource not in
``unknown_resources`` (``ResourceNotFound``), not in ``unauthorized_resources``
(``ResourceNotAuthorized``), and not cancelled at or before the event's hour (``cancelled``:
resource -> the first hour it is no longer ``Subscribed``; ``ResourceNotActive``, while
earlier hours are still accepted, as the FAQ allows); the dimension not in
``invalid_dimensions`` (``InvalidDimension``); then duplicate detection by (resource,
dimension, UTC clock hour of ``effectiveStartTime``), the resource compared without case (a
GUID, or an ARM URI). The clock is injectable and may be swapped at run time
(``emulator.clock = ...``) so tests can move time.

Modes: what the docs leave open (spec/commerce-api.md, "What the docs do not promise"),
answered the least convenient way the docs allow. Each is off by default (the default is
the documented shapes and nothing more), is an attribute that may be switched at run time,
and is used by the chaos run (bench/chaos.py):

- ``row_delay``: an accepted event joins its day's row only this long after it was accepted
  (until then the row is absent or smaller, and may well say ``Accepted``);
  ``processing_delay`` keeps the row ``Submitted`` this long after its newest event;
- ``echo_other_case``: answers echo the resource in another case (``resourceId``,
  ``acceptedMessage``, ``usageResourceId``) and ``effectiveStartTime`` with seven fractional
  digits, as an echo that is not the request's text may;
- ``count_submissions``: ``submittedCount``, ``submittedQuantity`` (and
  ``processedQuantity``, so the row stays ``Accepted``) also count duplicates and expired
  sends of the day, not only accepted events;
- ``refuse_whole_batch``: a batch holding one event with invalid data (``BadArgument``,
  ``InvalidQuantity``, ``InvalidDimension``) or an expired one is refused whole, ``400
  BadArgument``, nothing kept (the OpenAPI file allows it);
- ``cancelled`` and ``unauthorized_resources`` (above);
- ``page_size``: GET usageEvents answers pages of that many rows, ``{"value": [...],
  "nextLink": ...}``, the link absolute on this host; the last page has none.

Faults (thread-safe; see :class:`Fault`): queue them with :meth:`CommerceEmulator.fail_next`
(consumed first-in first-out by the next requests they apply to) or draw them from a seeded
random plan with :meth:`CommerceEmulator.set_fault_rate`. Queued faults win over the plan.
``calls`` counts requests per route, ``injected`` faults per kind, ``call_log()`` lists
(route, events in body, answer status or None when dropped) in arrival order.

Run standalone: ``python -m devstack.commerce_emulator --port 7071`` prints the base URL;
Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import socket
import sys
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

API_VERSION = "2018-08-31"
MAX_BATCH = 25
EXPIRY_WINDOW = timedelta(hours=24)
DEFAULT_TOKEN = "local-emulator-token"  # noqa: S105 - the emulator's public local token

ROUTE_SINGLE = "usageEvent"
ROUTE_BATCH = "batchUsageEvent"
ROUTE_RECON = "usageEvents"
# The documented fields of one GET usageEvents row (spec/commerce-api.md), and no others.
DAILY_ROW_FIELDS = (
    "usageDate",
    "usageResourceId",
    "dimension",
    "planId",
    "planName",
    "offerId",
    "offerName",
    "offerType",
    "azureSubscriptionId",
    "submittedQuantity",
    "processedQuantity",
    "submittedCount",
    "reconStatus",
)
# The exact-match filters GET usageEvents takes besides its dates.
_DAILY_FILTERS = {
    "offerId": "offerId",
    "planId": "planId",
    "dimension": "dimension",
    "azureSubscriptionId": "azureSubscriptionId",
    "reconStatus": "reconStatus",
}
_ROUTES = {
    ("POST", "/api/usageEvent"): ROUTE_SINGLE,
    ("POST", "/api/batchUsageEvent"): ROUTE_BATCH,
    ("GET", "/api/usageEvents"): ROUTE_RECON,
}

Json = dict[str, Any]
Clock = Callable[[], datetime]


class Fault(StrEnum):
    """What the emulator can do wrong on purpose, and what the client must survive."""

    THROTTLE = "429"  # 429 with Retry-After (seconds)
    SERVER_ERROR = "500"  # 500 InternalServerError, nothing processed
    BAD_REQUEST = "400"  # 400 BadArgument for the whole request, nothing processed
    SLOW = "slow"  # wait ``delay`` seconds, then process and answer (often too late)
    DROP = "drop"  # close the connection without processing or answering
    ACCEPT_THEN_DROP = "accept_then_drop"  # process and KEEP the events, then close silently
    EVENT_ERROR = "event_error"  # batch: 200 with status Error for some events (not kept)


# Faults that only make sense where events are posted.
_POST_ONLY = frozenset({Fault.EVENT_ERROR})


@dataclass
class _QueuedFault:
    kind: Fault
    remaining: int
    retry_after: int
    delay: float
    event_indices: frozenset[int] | None
    route: str | None

    def applies_to(self, route: str) -> bool:
        if self.route is not None and self.route != route:
            return False
        return not (self.kind in _POST_ONLY and route != ROUTE_BATCH and route != ROUTE_SINGLE)


@dataclass
class _FaultPlan:
    rate: float
    kinds: tuple[Fault, ...]
    rng: random.Random
    retry_after: int
    delay: float


@dataclass(frozen=True)
class _Decision:
    """The fault chosen for one request (``kind`` None: behave)."""

    kind: Fault | None = None
    retry_after: int = 1
    delay: float = 1.0
    error_indices: frozenset[int] | None = None  # EVENT_ERROR: None means every event


@dataclass(frozen=True)
class CallRecord:
    route: str
    events: int
    status: int | None  # None when the connection was dropped without an answer


@dataclass
class _Outcome:
    """One event's verdict: the element of a batch answer, and whether it is kept."""

    element: Json
    status: str
    accepted: Json | None = None  # for Duplicate: the originally accepted event
    target: str | None = None


@dataclass(frozen=True)
class _Submission:
    """A send that was not accepted (a duplicate, an expired event), kept for
    ``count_submissions``: the hour it was for and when it arrived."""

    resource: str
    dimension: str
    hour: datetime
    plan: str
    quantity: float
    at: datetime


@dataclass(frozen=True)
class _Counted:
    """One thing a daily row counts: an accepted event, or a counted submission."""

    resource: str
    quantity: float
    processed: float
    at: datetime | None  # when it arrived; None: loaded from the state file, long processed


# Per-event statuses that mean "missing or invalid data provided or expired" (the OpenAPI
# file's 400): what ``refuse_whole_batch`` answers for the whole batch.
_INVALID_DATA = frozenset({"BadArgument", "InvalidQuantity", "InvalidDimension", "Expired"})


@dataclass
class _Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _EmulatorError(Exception):
    """A whole request is refused (400 BadArgument, 403 ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; naive means UTC, as the service treats it."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class CommerceEmulator:
    """The metering endpoint on a free loopback port, with switchable faults."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        clock: Clock | None = None,
        *,
        port: int = 0,
        invalid_dimensions: Iterable[str] = (),
        unknown_resources: Iterable[str] = (),
        latency: float = 0.0,
        state_file: Path | None = None,
        processing_delay: timedelta = timedelta(0),
        row_delay: timedelta = timedelta(0),
        echo_other_case: bool = False,
        count_submissions: bool = False,
        refuse_whole_batch: bool = False,
        cancelled: dict[str, datetime] | None = None,
        unauthorized_resources: Iterable[str] = (),
        page_size: int = 0,
        offer_id: str = "usage-reporter",
        offer_name: str = "Usage reporter (emulated offer)",
    ) -> None:
        self.token = token
        # How long (emulator clock) an accepted event stays unprocessed: its day's row is
        # ``Submitted`` meanwhile. 0: processed at once.
        self.processing_delay = processing_delay
        # What the docs leave open, answered the inconvenient way (module docstring,
        # "Modes"); each may be switched at run time. All off: the documented shapes only.
        self.row_delay = row_delay
        self.echo_other_case = echo_other_case
        self.count_submissions = count_submissions
        self.refuse_whole_batch = refuse_whole_batch
        self.cancelled: dict[str, datetime] = {
            resource.casefold(): hour.astimezone(UTC)
            for resource, hour in (cancelled or {}).items()
        }
        self.unauthorized_resources: set[str] = {r.casefold() for r in unauthorized_resources}
        self.page_size = page_size
        self.offer_id = offer_id
        self.offer_name = offer_name
        # Where accepted events are kept between runs (the run command's), as the real
        # endpoint keeps them; None keeps them in memory only (tests).
        self._state_file = state_file
        # Seconds added before every answer: the round trip to a remote endpoint, which
        # loopback does not have (benchmarks set it; tests leave it 0).
        self.latency = latency
        self.clock: Clock = clock or _utc_now
        self.invalid_dimensions: set[str] = set(invalid_dimensions)
        self.unknown_resources: set[str] = set(unknown_resources)
        self._port = port
        self._state_lock = threading.Lock()  # accepted events
        self._fault_lock = threading.Lock()  # fault queue, plan, counters
        self._accepted: dict[tuple[str, str, datetime], Json] = {}
        # Per accepted key: when it was accepted (emulator clock; None: loaded from the
        # state file, long processed) and a processed quantity set by set_processed().
        self._accepted_at: dict[tuple[str, str, datetime], datetime | None] = {}
        self._processed: dict[tuple[str, str, datetime], float] = {}
        # Submissions that were not accepted but that ``count_submissions`` counts in their
        # day's row: duplicates and expired sends, when they arrived.
        self._submissions: list[_Submission] = []
        self._raw_rows: list[Json] = []  # add_raw_row(): rows as something else wrote them
        self._queued: list[_QueuedFault] = []
        self._plan: _FaultPlan | None = None
        self._calls: Counter[str] = Counter()
        self._connections = 0
        self._injected: Counter[Fault] = Counter()
        self._log: list[CallRecord] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> CommerceEmulator:
        """Bind and serve in a background thread; connections are accepted on return."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._load_state()
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.emulator = self
        self._server = server
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="commerce-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow answers still waiting are abandoned (their socket closes)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> CommerceEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the commerce emulator is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- inspection ------------------------------------------------------------------------

    def accepted_events(self) -> list[Json]:
        """Every accepted event (as ``acceptedMessage`` spells it), oldest hour first.

        Test-only inspection: the real endpoint has no such read (its only view is the
        daily rows of GET usageEvents), so production code must never depend on it.
        """
        with self._state_lock:
            rows = [dict(event) for event in self._accepted.values()]
        rows.sort(key=lambda e: (e["effectiveStartTime"], _resource_of(e), e["dimension"]))
        return rows

    @property
    def calls(self) -> dict[str, int]:
        """Requests received per route (``usageEvent``, ``batchUsageEvent``, ``usageEvents``)."""
        with self._fault_lock:
            return dict(self._calls)

    @property
    def connections(self) -> int:
        """Connections accepted so far (tests check that clients keep theirs alive)."""
        with self._fault_lock:
            return self._connections

    @property
    def injected(self) -> dict[Fault, int]:
        """Faults injected so far, per kind (queued and random ones alike)."""
        with self._fault_lock:
            return dict(self._injected)

    @property
    def total_calls(self) -> int:
        with self._fault_lock:
            return sum(self._calls.values())

    def call_log(self) -> list[CallRecord]:
        """Every routed request in arrival order: route, events in its body, answer status."""
        with self._fault_lock:
            return list(self._log)

    def set_processed(self, resource: str, dimension: str, hour: datetime, quantity: float) -> None:
        """Test-only: processing made ``quantity`` of the accepted event of this key.

        Its day's row then reports the changed ``processedQuantity`` (``Mismatch``, or
        ``Rejected`` when nothing of the day was processed). KeyError if nothing was
        accepted for the key.
        """
        key = (resource.casefold(), dimension, hour.astimezone(UTC))
        with self._state_lock:
            if key not in self._accepted:
                raise KeyError(f"nothing accepted for {key}")
            self._processed[key] = quantity

    def add_raw_row(self, row: Json) -> None:
        """Test-only: GET usageEvents also answers ``row`` as it is, whatever the days
        asked (a row this client may not be able to parse, about another resource)."""
        with self._state_lock:
            self._raw_rows.append(dict(row))

    def reset(self) -> None:
        """Forget accepted events, faults and counters (the clock and sets stay)."""
        with self._state_lock:
            self._accepted.clear()
            self._accepted_at.clear()
            self._processed.clear()
            self._submissions.clear()
            self._raw_rows.clear()
            self._save_state()
        with self._fault_lock:
            self._queued.clear()
            self._plan = None
            self._calls.clear()
            self._injected.clear()
            self._log.clear()

    # -- faults ----------------------------------------------------------------------------

    def fail_next(
        self,
        kind: Fault | str,
        times: int = 1,
        *,
        retry_after: int = 1,
        delay: float = 1.0,
        event_indices: Collection[int] | None = None,
        route: str | None = None,
    ) -> None:
        """Make the next ``times`` requests (to ``route``, or any it applies to) fail as ``kind``.

        ``retry_after``: the 429's ``Retry-After`` seconds. ``delay``: how long a slow answer
        waits. ``event_indices``: for ``event_error``, the positions in the batch that get
        status ``Error`` (default: all). ``event_error`` never applies to ``usageEvents``.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        fault = _QueuedFault(
            kind=Fault(kind),
            remaining=times,
            retry_after=retry_after,
            delay=delay,
            event_indices=None if event_indices is None else frozenset(event_indices),
            route=route,
        )
        with self._fault_lock:
            self._queued.append(fault)

    def set_fault_rate(
        self,
        rate: float,
        kinds: Iterable[Fault | str] | None = None,
        seed: int | None = None,
        *,
        retry_after: int = 1,
        delay: float = 1.0,
    ) -> None:
        """Fail each request with probability ``rate``, as a kind drawn from ``kinds``.

        Seeded, so a single-threaded client sees the same plan every run. ``event_error``
        marks each event of the batch ``Error`` with probability 1/2 (at least one).
        ``rate=0`` switches the plan off.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        chosen = tuple(Fault(k) for k in (kinds if kinds is not None else Fault))
        if rate > 0 and not chosen:
            raise ValueError("kinds must not be empty")
        with self._fault_lock:
            self._plan = (
                None
                if rate == 0
                else _FaultPlan(rate, chosen, random.Random(seed), retry_after, delay)
            )

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._queued.clear()
            self._plan = None

    def _count(self, route: str) -> None:
        with self._fault_lock:
            self._calls[route] += 1

    def _decide(self, route: str, events: int) -> _Decision:
        """Count the call and choose its fault (queued first, then the random plan)."""
        with self._fault_lock:
            self._calls[route] += 1
            for queued in self._queued:
                if queued.applies_to(route):
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._queued.remove(queued)
                    self._injected[queued.kind] += 1
                    return _Decision(
                        queued.kind, queued.retry_after, queued.delay, queued.event_indices
                    )
            plan = self._plan
            if plan is None or plan.rng.random() >= plan.rate:
                return _Decision()
            kinds = [
                k for k in plan.kinds if route in (ROUTE_BATCH, ROUTE_SINGLE) or k not in _POST_ONLY
            ]
            if not kinds:
                return _Decision()
            kind = plan.rng.choice(kinds)
            indices: frozenset[int] | None = None
            if kind is Fault.EVENT_ERROR and events > 0:
                picked = {i for i in range(events) if plan.rng.random() < 0.5}
                indices = frozenset(picked or {plan.rng.randrange(events)})
            self._injected[kind] += 1
            return _Decision(kind, plan.retry_after, plan.delay, indices)

    def _record(self, route: str, events: int, status: int | None) -> None:
        with self._fault_lock:
            self._log.append(CallRecord(route, events, status))

    def _wait(self, seconds: float) -> bool:
        """Sleep for a slow answer; False when the emulator is stopping meanwhile."""
        return not self._stopping.wait(seconds)

    # -- the rules -------------------------------------------------------------------------

    def _judge(self, raw: Any, now: datetime, *, keep: bool = True) -> _Outcome:
        """Validate one event and, if it passes, accept it (caller holds the state lock).

        ``keep=False`` only says what the answer would be: nothing is accepted or counted.
        """
        if not isinstance(raw, dict):
            return _refusal({}, "BadArgument", "an event must be a JSON object", None, now)
        echo = {
            key: raw[key]
            for key in (
                "resourceId",
                "resourceUri",
                "quantity",
                "dimension",
                "effectiveStartTime",
                "planId",
            )
            if key in raw
        }
        has_id, has_uri = "resourceId" in raw, "resourceUri" in raw
        if has_id == has_uri:
            return _refusal(
                echo,
                "BadArgument",
                "give exactly one of resourceId and resourceUri",
                "resourceId",
                now,
            )
        resource = raw["resourceId"] if has_id else raw["resourceUri"]
        for name, value in (
            ("resource", resource),
            ("dimension", raw.get("dimension")),
            ("planId", raw.get("planId")),
        ):
            if not isinstance(value, str) or not value:
                return _refusal(
                    echo, "BadArgument", f"{name} must be a non-empty string", name, now
                )
        quantity = raw.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float):
            return _refusal(echo, "BadArgument", "quantity must be a number", "quantity", now)
        if not math.isfinite(quantity) or quantity <= 0:
            return _refusal(
                echo, "InvalidQuantity", "quantity must be greater than 0", "quantity", now
            )
        try:
            effective = _parse_time(str(raw["effectiveStartTime"]))
        except (KeyError, ValueError):
            return _refusal(
                echo,
                "BadArgument",
                "effectiveStartTime is not a date-time",
                "effectiveStartTime",
                now,
            )
        if effective > now:
            return _refusal(
                echo,
                "BadArgument",
                "effectiveStartTime is in the future",
                "effectiveStartTime",
                now,
            )
        dimension: str = raw["dimension"]
        hour = effective.replace(minute=0, second=0, microsecond=0)
        if effective < now - EXPIRY_WINDOW:
            if keep:
                self._count_submission(resource, dimension, hour, raw["planId"], quantity, now)
            return _refusal(
                echo,
                "Expired",
                "effectiveStartTime is older than 24 hours",
                "effectiveStartTime",
                now,
            )
        target = "resourceUri" if has_uri else "resourceId"
        folded = resource.casefold()
        if resource in self.unknown_resources:
            return _refusal(echo, "ResourceNotFound", "the resource is not known", target, now)
        if folded in self.unauthorized_resources:
            return _refusal(
                echo,
                "ResourceNotAuthorized",
                "the caller may not report usage for this resource",
                target,
                now,
            )
        cancelled = self.cancelled.get(folded)
        if cancelled is not None and hour >= cancelled:
            return _refusal(
                echo,
                "ResourceNotActive",
                "the resource is not Subscribed: usage is accepted only for hours before "
                f"its cancellation ({_iso_z(cancelled)})",
                target,
                now,
            )
        if dimension in self.invalid_dimensions:
            return _refusal(
                echo, "InvalidDimension", "the plan has no such dimension", "dimension", now
            )
        # Resource ids are GUIDs (or ARM URIs): one resource whatever the case it is sent in.
        key = (folded, dimension, hour)
        original = self._accepted.get(key)
        if original is not None:
            if keep:
                self._count_submission(resource, dimension, hour, raw["planId"], quantity, now)
            element = {
                **echo,
                "status": "Duplicate",
                "messageTime": _iso_z(now),
                "error": {
                    "code": "Conflict",
                    "message": "This usage event already exist.",
                    "additionalInfo": {"acceptedMessage": dict(original)},
                },
            }
            return _Outcome(element, "Duplicate", accepted=dict(original))
        accepted: Json = {
            "usageEventId": str(uuid.uuid4()),
            "status": "Accepted",
            "messageTime": _iso_z(now),
            target: resource,
            "quantity": quantity,
            "dimension": dimension,
            "effectiveStartTime": _iso_z(effective),
            "planId": raw["planId"],
        }
        if keep:
            self._accepted[key] = accepted
            self._accepted_at[key] = now
        return _Outcome(dict(accepted), "Accepted")

    def _count_submission(
        self,
        resource: str,
        dimension: str,
        hour: datetime,
        plan: str,
        quantity: float,
        now: datetime,
    ) -> None:
        """Remember a send that was not accepted (``count_submissions`` counts it)."""
        self._submissions.append(_Submission(resource, dimension, hour, plan, quantity, now))

    def _judge_all(
        self,
        events: list[Any],
        error_indices: frozenset[int] | None,
        inject_errors: bool,
        *,
        batch: bool,
    ) -> list[_Outcome]:
        """Judge a request's events in order; ``refuse_whole_batch``: on the batch route, one
        event whose data is invalid (or expired) refuses the whole request with ``400``,
        nothing kept (the OpenAPI file's "missing or invalid data provided or expired")."""
        now = self.clock().astimezone(UTC)
        outcomes = []
        with self._state_lock:
            if batch and self.refuse_whole_batch and not inject_errors:
                for raw in events:
                    verdict = self._judge(raw, now, keep=False)
                    if verdict.status in _INVALID_DATA:
                        error = verdict.element["error"]
                        raise _EmulatorError(
                            400,
                            "BadArgument",
                            f"missing or invalid data provided or expired: {verdict.status}: "
                            f"{error['message']}",
                        )
            for index, raw in enumerate(events):
                if inject_errors and (error_indices is None or index in error_indices):
                    echo = dict(raw) if isinstance(raw, dict) else {}
                    outcomes.append(_refusal(echo, "Error", "transient internal error", None, now))
                else:
                    outcomes.append(self._judge(raw, now))
            if any(outcome.status == "Accepted" for outcome in outcomes):
                self._save_state()
        if self.echo_other_case:
            for outcome in outcomes:
                _echo_differently(outcome.element)
                info = outcome.element.get("error", {}).get("additionalInfo", {})
                for accepted in (info.get("acceptedMessage"), outcome.accepted):
                    if accepted is not None:
                        _echo_differently(accepted)
        return outcomes

    def _load_state(self) -> None:
        if self._state_file is None or not self._state_file.exists():
            return
        events = json.loads(self._state_file.read_text(encoding="utf-8"))
        with self._state_lock:
            for event in events:
                key = (_resource_of(event).casefold(), event["dimension"],
                       _parse_time(event["effectiveStartTime"]))  # fmt: skip
                self._accepted[key] = event
                self._accepted_at[key] = None

    def _save_state(self) -> None:
        """Write every accepted event (caller holds the state lock); atomic replace."""
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self._state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(list(self._accepted.values())), encoding="utf-8")
        partial.replace(self._state_file)

    def _daily_rows(self, query: dict[str, list[str]]) -> list[Json]:
        """GET usageEvents: the documented daily rows of the days asked, filtered.

        What a row counts: the accepted events of its (day, resource, dimension, plan) that
        are ``row_delay`` old (younger ones are not in it yet), and with
        ``count_submissions`` also the duplicates and expired sends of that age.
        """
        now = self.clock().astimezone(UTC)
        try:
            first = _day_of(_parse_time(query["usageStartDate"][0]))
            last = (
                _day_of(_parse_time(query["usageEndDate"][0]))
                if "usageEndDate" in query
                else (_day_of(now))
            )
        except (KeyError, ValueError):
            raise _EmulatorError(
                400, "BadArgument", "usageStartDate (and usageEndDate) must be ISO dates"
            ) from None
        groups: dict[tuple[datetime, str, str, str], list[_Counted]] = defaultdict(list)

        def shown(at: datetime | None) -> bool:
            return at is None or now - at >= self.row_delay

        with self._state_lock:
            for key, event in self._accepted.items():
                day = _day_of(key[2])
                at = self._accepted_at.get(key)
                if first <= day <= last and shown(at):
                    quantity = float(event["quantity"])
                    processed = self._processed.get(key, quantity)
                    groups[(day, key[0], key[1], event["planId"])].append(
                        _Counted(_resource_of(event), quantity, processed, at)
                    )
            if self.count_submissions:
                for sent in self._submissions:
                    day = _day_of(sent.hour)
                    if first <= day <= last and shown(sent.at):
                        groups[(day, sent.resource.casefold(), sent.dimension, sent.plan)].append(
                            _Counted(sent.resource, sent.quantity, sent.quantity, sent.at)
                        )
        rows = [
            self._day_row(day, dimension, plan, counted, now)
            for (day, _, dimension, plan), counted in sorted(groups.items())
        ]
        for name, field_name in _DAILY_FILTERS.items():
            if name in query:
                wanted = query[name][0]
                rows = [row for row in rows if row[field_name] == wanted]
        with self._state_lock:
            return rows + [dict(row) for row in self._raw_rows]

    def _daily_page(self, query: dict[str, list[str]]) -> _Reply:
        """The rows as the docs show them (one array), or with ``page_size`` one page of
        ``{"value": [...], "nextLink": ...}``: an absolute link on this host that carries the
        request's arguments and where the next page starts; the last page has no link."""
        rows = self._daily_rows(query)
        if not self.page_size:
            return _Reply(200, rows)
        try:
            start = int(query.get("continuationToken", ["0"])[0])
        except ValueError:
            raise _EmulatorError(400, "BadArgument", "continuationToken is not ours") from None
        page: Json = {"value": rows[start : start + self.page_size]}
        if start + self.page_size < len(rows):
            kept = [
                (name, value)
                for name, values in query.items()
                if name != "continuationToken"
                for value in values
            ]
            arguments = urlencode([*kept, ("continuationToken", str(start + self.page_size))])
            page["nextLink"] = f"{self.base_url}/api/usageEvents?{arguments}"
        return _Reply(200, page)

    def _day_row(
        self,
        day: datetime,
        dimension: str,
        plan: str,
        counted: list[_Counted],
        now: datetime,
    ) -> Json:
        submitted = math.fsum(item.quantity for item in counted)
        processed = math.fsum(item.processed for item in counted)
        waiting = any(
            item.at is not None and now - item.at < self.processing_delay for item in counted
        )
        if waiting:
            status = "Submitted"
        elif processed == submitted:
            status = "Accepted"
        elif processed == 0:
            status = "Rejected"
        else:
            status = "Mismatch"
        resource = min(item.resource for item in counted)  # as first sent (one resource)
        row: Json = {
            "usageDate": _iso_z(day),
            "usageResourceId": _other_case(resource) if self.echo_other_case else resource,
            "dimension": dimension,
            "planId": plan,
            "planName": plan,
            "offerId": self.offer_id,
            "offerName": self.offer_name,
            "offerType": "SaaS",
            "azureSubscriptionId": str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"azure-sub:{resource.casefold()}")
            ),
            "submittedQuantity": submitted,
            "processedQuantity": processed,
            "submittedCount": len(counted),
            "reconStatus": status,
        }
        assert tuple(row) == DAILY_ROW_FIELDS  # the documented fields, no more, no fewer
        return row


def _day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _resource_of(event: Json) -> str:
    return str(event.get("resourceId") or event.get("resourceUri") or "")


def _other_case(text: str) -> str:
    """``text`` in another case (a GUID echoed upper-case, as the docs do not forbid)."""
    upper = text.upper()
    return upper if upper != text else text.lower()


def _echo_differently(element: Json) -> None:
    """``echo_other_case``: the resource in another case and the time as .NET writes it
    (seven fractional digits), as an echo that is not the request's text may be."""
    for name in ("resourceId", "resourceUri"):
        if isinstance(element.get(name), str):
            element[name] = _other_case(element[name])
    when = element.get("effectiveStartTime")
    if isinstance(when, str):
        with contextlib.suppress(ValueError):
            element["effectiveStartTime"] = _parse_time(when).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _refusal(echo: Json, status: str, message: str, target: str | None, now: datetime) -> _Outcome:
    error: Json = {"code": status, "message": message}
    if target is not None:
        error["target"] = target
    return _Outcome(
        {**echo, "status": status, "messageTime": _iso_z(now), "error": error},
        status,
        target=target,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    emulator: CommerceEmulator

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.emulator._fault_lock:
            self.emulator._connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, tests) are normal here; anything else is loud."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    # Headers and body leave in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms on Linux), a stall no real endpoint adds.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks read ``calls`` and ``call_log()`` instead."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        emulator = self.server.emulator
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._read_body()
        route = _ROUTES.get((method, url.path))
        if route is None:
            self._send(_Reply(404, {"code": "NotFound", "message": "no such route"}))
            return
        try:
            self._check_access(query, emulator)
            events = self._events(route, body)
        except _EmulatorError as refused:
            emulator._count(route)  # counted like any call; no fault is consumed
            emulator._record(route, 0, refused.status)
            self._send(_error_reply(refused))
            return
        decision = emulator._decide(route, len(events))
        if decision.kind is Fault.DROP:
            emulator._record(route, len(events), None)
            self._drop()
            return
        if decision.kind is Fault.THROTTLE:
            self._answer(
                route,
                len(events),
                _Reply(
                    429,
                    {"code": "TooManyRequests", "message": "slow down"},
                    {"Retry-After": str(decision.retry_after)},
                ),
            )
            return
        if decision.kind is Fault.SERVER_ERROR:
            self._answer(
                route,
                len(events),
                _Reply(500, {"code": "InternalServerError", "message": "injected"}),
            )
            return
        if decision.kind is Fault.BAD_REQUEST:
            self._answer(
                route, len(events), _Reply(400, {"code": "BadArgument", "message": "injected"})
            )
            return
        if emulator.latency and not emulator._wait(emulator.latency):
            self._drop()
            return
        if decision.kind is Fault.SLOW and not emulator._wait(decision.delay):
            self._drop()  # stopping: abandon the late answer without processing
            return
        try:
            reply = self._process(route, events, query, decision)
        except _EmulatorError as refused:
            reply = _error_reply(refused)
        if decision.kind is Fault.ACCEPT_THEN_DROP:
            emulator._record(route, len(events), None)
            self._drop()
            return
        self._answer(route, len(events), reply)

    def _process(
        self, route: str, events: list[Any], query: dict[str, list[str]], decision: _Decision
    ) -> _Reply:
        emulator = self.server.emulator
        if route == ROUTE_RECON:
            return emulator._daily_page(query)
        inject = decision.kind is Fault.EVENT_ERROR
        outcomes = emulator._judge_all(
            events, decision.error_indices, inject, batch=route == ROUTE_BATCH
        )
        if route == ROUTE_BATCH:
            return _Reply(200, {"count": len(outcomes), "result": [o.element for o in outcomes]})
        (outcome,) = outcomes
        if outcome.status == "Accepted":
            return _Reply(200, outcome.element)
        if outcome.status == "Duplicate":
            return _Reply(
                409,
                {
                    "code": "Conflict",
                    "message": "This usage event already exist.",
                    "additionalInfo": {"acceptedMessage": outcome.accepted},
                },
            )
        if outcome.status == "Error":
            return _Reply(500, {"code": "InternalServerError", "message": "injected"})
        error = outcome.element["error"]
        return _Reply(
            400,
            {
                "code": outcome.status,
                "message": error["message"],
                "target": outcome.target,
                "details": [
                    {"code": outcome.status, "message": error["message"], "target": outcome.target}
                ],
            },
        )

    def _check_access(self, query: dict[str, list[str]], emulator: CommerceEmulator) -> None:
        expected = f"Bearer {emulator.token}"
        if self.headers.get("Authorization") != expected:
            raise _EmulatorError(403, "Forbidden", "missing, expired or wrong token")
        if query.get("api-version") != [API_VERSION]:
            raise _EmulatorError(400, "BadArgument", f"api-version must be {API_VERSION}")

    def _events(self, route: str, body: bytes) -> list[Any]:
        """The events of a POST body (validated as a whole), none for a GET."""
        if route == ROUTE_RECON:
            return []
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            raise _EmulatorError(400, "BadArgument", "the body is not JSON") from None
        if route == ROUTE_SINGLE:
            if not isinstance(payload, dict):
                raise _EmulatorError(400, "BadArgument", "the body must be one event object")
            return [payload]
        if not isinstance(payload, dict) or not isinstance(payload.get("request"), list):
            raise _EmulatorError(
                400, "BadArgument", 'the body must be {"request": [events]}, not a bare array'
            )
        events: list[Any] = payload["request"]
        if not 1 <= len(events) <= MAX_BATCH:
            raise _EmulatorError(
                400, "BadArgument", f"a batch holds 1 to {MAX_BATCH} events, not {len(events)}"
            )
        return events

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self, route: str, events: int, reply: _Reply) -> None:
        self.server.emulator._record(route, events, reply.status)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status, HTTPStatus(reply.status).phrase)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header(
                "x-ms-requestid", self.headers.get("x-ms-requestid") or str(uuid.uuid4())
            )
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client hung up (e.g. its read timed out)

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # already gone is as good as dropped
            self.connection.shutdown(socket.SHUT_RDWR)


def _error_reply(refused: _EmulatorError) -> _Reply:
    return _Reply(refused.status, {"code": refused.code, "message": refused.message})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the commerce (metering API) emulator.")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token to require")
    args = parser.parse_args(argv)
    emulator = CommerceEmulator(token=args.token, port=args.port).start()
    print(emulator.base_url, flush=True)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    # A parent that started us in the background may have left SIGINT ignored; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    forever = threading.Event()
    try:
        while not forever.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
