"""Chaos: the whole pipeline over simulated days while storage, endpoint and timer misbehave.

``python -m bench chaos [--quick] [--seed N] [--days D] [--tenants T]``; the engine
(:func:`run_chaos`) also backs ``tests/integration/test_chaos.py`` with a smaller world.

The real collector, work-item enqueuer, queue, reporter, ledger and reconciliation run
against an on-disk Azurite and the commerce emulator, one simulated hour at a time, with
one injected clock (the collector's ``now``, the reporter's ``clock``, the emulator's
``clock``). Every fault is drawn from one seeded ``random.Random``, so a seed replays the
same schedule (thread timing aside: the ledger works in a pool). Faults:

- **storage restarting**: Azurite stopped and started again on the same folder and ports,
  between hours, in the middle of a collection (from the source, with writes in flight)
  and in the middle of draining the queue; it stays down ``RESTART_DOWN_SECONDS`` (real
  time) while the pipeline keeps calling it. A *graceful* stop (SIGTERM), not SIGKILL:
  on-disk Azurite persists to disk on a timer, so SIGKILL drops writes it has already
  acknowledged, which no storage service does (Azure Storage acknowledges a write only
  once it is durable); a graceful stop models a storage node restarting without making
  the emulator lie;
- **the endpoint failing** for 24-30 hours (every request fails, each kind drawn from
  every retryable fault mode: 429, 500, slow answers, dropped connections, accepted then
  dropped, per-event Error), plus a background rate of faults every other hour. ``400``
  for a whole batch is left out: by contract it is a final refusal, recorded as
  ``rejected`` (tests/integration/test_report_ledger.py covers it), not a fault to ride out;
- **the timer not firing** for up to 30 hours (collection runs skipped; the next run
  catches up);
- **messages delivered twice** (a handled message is sent to the queue again);
- **the process killed mid-run**: ``Killed`` raised between a POST's answer and its ledger
  write (the reporter's ``after_post``) and in the middle of a collection (the source);
- **an accepted answer lost for 30 hours**: one hour's work item is posted without endpoint
  faults, accepted, the process killed before the ledger write, and the message held back
  for 30 simulated hours: its retry is ``Expired``, and only the endpoint's daily sums
  (``GET usageEvents``, the documented daily rows) can tell that it was billed;
- **rating killed mid-way**: the ``rate_usage`` run every third simulated hour (the example
  price sheets loaded, and halfway through a new default sheet that re-prices the open
  month, so a run also re-rates) dies after a committed transaction of the ledger
  (``Killed`` from its ``after_transaction`` hook; its writes are cut into transactions of
  at most three operations, so a kill lands between a day's charge lines and its month
  state too); the next run must finish the work, and at the end every subscription-month's
  ledger must equal what rating its rows once, cleanly, gives (``ledger_differences``);
- **a billing resource that goes quiet**: one tenant subscription bills to its own
  resource (``saas-quiet``) and stops reporting usage in the hour where the first timer gap
  (26-30 hours here) stops expiring hours: the expired hours before it are carried forward
  with no later usage of that resource to fold into (the carry index bills them anyway).

The queue is drained the way the Functions host does it: receive, call ``report_message``,
delete on success; on any exception the message is made visible again and redelivered
(one round every 5 simulated minutes), and after ``MAX_DEQUEUE`` failed deliveries it is
moved to ``<queue>-poison``. An operator runs ``ops requeue-poison`` a few hours after each
endpoint outage ends. After the chaotic days, calm hours let everything settle; then the
checks (see :class:`ChaosReport`). The endpoint is the commerce emulator answering the
documented protocol only; the checks' per-event view of what it accepted
(``accepted_events()``) is its test-only inspection, which the app never calls.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import random
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueMessage

from bench.common import finish
from devstack.azurite import Azurite
from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator, Fault
from devstack.example_prices import load_example_prices
from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.local_settings import local_values
from ops.requeue_poison import requeue_poison
from shared.billing.commerce import COMMERCE_POLICY, CommerceClient
from shared.billing.events import EventOutcome
from shared.billing.ledger import Ledger, LedgerEntry, LedgerState
from shared.billing.reconcile import Difference, Reconciliation, reconcile
from shared.billing.reporter import WAIT_HORIZON, WAIT_UNDECIDED, ReportResult, report_message
from shared.billing.tokens import static_token_provider
from shared.billing.work_items import WorkItem, work_item_enqueuer
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import HOUR, floor_day, floor_hour, hour_key, parse_hour_key
from shared.core.meters import ChargeableMeters, catalogue
from shared.core.usage import UsageRecord
from shared.rating.charges import MonthCharges
from shared.rating.cost_digest import CostDigests, digest_document
from shared.rating.engine import Level, Month, MonthRater, PriceBook
from shared.rating.ledger import ChargeLedger, LoadedMonth
from shared.rating.rater import Rater, rate_into
from shared.rating.sheet_files import read_json_sheet, sheet_json
from shared.rating.sheet_store import SheetStore
from shared.rating.sheets import Scope
from shared.status.observer import remember
from shared.status.reader import StatusReader
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_manifest
from shared.storage.queues import POISON_SUFFIX, ensure_queue, queue_client
from shared.storage.subscriptions import Subscription, SubscriptionStore
from shared.storage.usage_rows import hourly_partition, read_hourly_rows
from shared.storage.watermark import Watermark

T = TypeVar("T")
START = datetime(2026, 11, 16, tzinfo=UTC)  # a Monday midnight: the first reported hour
MAX_DEQUEUE = 5  # host.json maxDequeueCount
REDELIVERY = timedelta(minutes=5)  # host.json visibilityTimeout, in simulated time
RESTART_DOWN_SECONDS = 1.0  # real seconds Azurite stays down in a restart
# Every fault the reporter must ride out (400 for a whole batch is a final refusal).
ENDPOINT_FAULTS = tuple(kind for kind in Fault if kind is not Fault.BAD_REQUEST)
PLAN = "plan-chaos"
QUIET_RESOURCE = "saas-quiet"
CANCELLED_RESOURCE = "saas-cancelled"
UNAUTHORIZED_RESOURCE = "saas-0"  # refused ResourceNotAuthorized for a few hours
FOREIGN = "someone-elses-resource"  # a daily row no decision needs, and none can parse
LATE_BEFORE_CANCELLING = 3  # hours of the cancelled subscription's usage reported late
LOST_ANSWER_DELAY = 30  # simulated hours a message whose accepted answer was lost is held
# Simulated hours a message whose POSTs all failed is held: past the window and its grace
# (24 h 15 min), within the processing horizon after it (undocumented mode only).
UNANSWERED_DELAY = 26
Key = tuple[str, str]


class Killed(BaseException):
    """The process dying mid-run (BaseException: no ``except Exception`` swallows it)."""


@dataclass(frozen=True)
class ChaosOptions:
    seed: int = 1
    days: int = 2
    tenants: int = 3
    scale: float = 0.5
    late_share: float = 0.2
    # After the chaotic days: no faults, so everything settles: at least a day, the
    # processing horizon and a few hours, so that every event of the last chaotic day is
    # decided (its day can no longer change), the never-answered hour's retry (26 h) waits
    # for the horizon, and carried usage finds a later event.
    calm_hours: int = 34
    outages: int = 1  # endpoint outages of 24-30 hours
    timer_gaps: int = 1  # timer silent for 3-30 hours
    restarts: int = 3  # Azurite restarts (between hours, mid-collection, mid-drain)
    kill_rate: float = 0.08  # per POST answer and per collection run
    rating_kill_rate: float = 0.1  # per committed transaction of the ledger
    rating_every: int = 3  # simulated hours between rating runs (the timer: ten minutes)
    duplicate_rate: float = 0.2  # per handled message
    background_fault_rate: float = 0.1  # per endpoint request outside outages
    slow_seconds: float = 0.2  # a slow answer's delay (the client gives up after half)
    # The endpoint answering what its docs leave open the inconvenient way (the emulator's
    # modes, every one on): rows that lag up to the processing horizon, echoes in another
    # case, counts that include duplicates, whole-batch 400s (one dimension invalid for a
    # few hours), a resource cancelled and one unauthorized for a few hours, paged rows.
    undocumented: bool = True
    horizon_hours: int = 4  # COMMERCE_PROCESSING_HORIZON_HOURS; lags are drawn below it
    # Whether the day's counts include duplicates and expired sends (the docs do not say);
    # None: drawn from the seed. Where they do, a day with many duplicates (an outage that
    # accepts and drops) cannot be told: its lost answers end unresolved, named.
    count_submissions: bool | None = None
    page_size: int = 3  # daily rows per GET usageEvents page
    # Simulated hours between the status reads (the objectives as an operator sees them):
    # every hour here; the test reads every third (its faults breach for a day or more).
    observe_every: int = 1


@dataclass
class ChaosReport:
    """What ran, what was injected, and the verdict of every end check."""

    hours: int = 0
    rows: int = 0
    events: int = 0
    collection_runs: int = 0
    collection_failures: int = 0
    deliveries: int = 0
    delivery_failures: int = 0
    poisoned: int = 0
    requeued: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    # End checks (empty / True means in order).
    row_differences: list[str] = field(default_factory=list)
    billing_differences: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    left_in_queue: int = -1
    left_in_poison: int = -1
    carried_forward: int = 0
    reconciliation: Reconciliation | None = None
    watermark_at_end: bool = False
    rating_runs: int = 0
    rating_failures: int = 0
    ledger_months: int = 0  # subscription-months whose ledger was checked
    ledger_differences: list[str] = field(default_factory=list)
    rated_at_end: bool = False

    # The scenarios: the lost answer's hour and what decided its events; the quiet resource.
    lost_answer_hour: str | None = None
    lost_answer_states: Counter[str] = field(default_factory=Counter)
    lost_answer_posted: int = 0  # events in the POST whose answer was lost (accepted)
    lost_answer_by_daily_sums: int = 0  # of its events, settled from the day's sums
    # An hour whose POSTs all failed, retried after the window (undocumented mode only).
    unanswered_hour: str | None = None
    unanswered_states: Counter[str] = field(default_factory=Counter)
    decided_by_daily_sums: int = 0
    quiet_from: str | None = None
    quiet_carried: int = 0  # hours of the quiet resource carried forward
    quiet_billed_after: float = 0.0  # what was billed to it after it went quiet
    # The objectives (docs/operations.md), read by the app's status reader every
    # ``observe_every`` steps: the steps each was breached in (of those read) while faults
    # were on, and after; their final states.
    breached_steps: Counter[str] = field(default_factory=Counter)
    breached_calm_steps: Counter[str] = field(default_factory=Counter)
    objectives_final: dict[str, str] = field(default_factory=dict)
    observe_seconds: float = 0.0  # the run's time spent reading the status

    # The endpoint's undocumented latitude (ChaosOptions.undocumented): the modes drawn,
    # what the reporter did about each, and what it named instead of billing.
    modes: dict[str, Any] = field(default_factory=dict)
    waited: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    deferrals: int = 0
    split_batches: int = 0  # as the deliveries that returned counted them (at least)
    not_active: int = 0  # events refused ResourceNotActive (the ledger's)
    sent_with_usage_hours: int = 0  # their parts sent as events of their usage hours
    cancelled_billed: float = 0.0  # what those parts billed
    refused: dict[str, float] = field(default_factory=dict)  # rejected: key -> refused
    unresolved: dict[str, bool] = field(default_factory=dict)  # key -> accepted after all?
    # Carried (perhaps through other carries) into a refused or an unresolved event.
    carried_into_named: set[str] = field(default_factory=set)
    deferred_at_end: int = 0
    reconcile_named: int = 0  # reconciliation's differences that name the above

    @property
    def reconcile_differences(self) -> list[str]:
        """Reconciliation's differences but those naming a refused or unresolved event."""
        if self.reconciliation is None:
            return ["not run"]
        return [d.line() for d in self.reconciliation.differences if not self.names(d)]

    def names(self, difference: Difference) -> bool:
        """True when ``difference`` is one the run names: a refused or an unresolved event,
        or the endpoint's unreadable row of a resource that is not ours."""
        key = _name(difference.resource_id, difference.dimension, difference.hour)
        if difference.kind == "rejected":
            return key in self.refused
        if difference.kind == "unresolved":
            return key in self.unresolved
        if difference.kind in ("carried-unresolved", "carried-unbilled"):
            return key in self.carried_into_named
        if difference.kind == "endpoint-unverifiable":
            return self.modes.get("count_submissions") is True  # named in the figures
        return difference.kind == "endpoint-unreadable" and difference.resource_id == FOREIGN

    @property
    def ok(self) -> bool:
        return (
            not self.row_differences
            and not self.billing_differences
            and not self.duplicate_keys
            and self.left_in_queue == 0
            and self.left_in_poison == 0
            and self.deferred_at_end == 0
            and not self.reconcile_differences
            and self.watermark_at_end
            and self.objectives_in_order
            and not self.ledger_differences
            and self.rated_at_end
        )

    @property
    def objectives_in_order(self) -> bool:
        """Every objective stored state judges is met at the end, but correctness while the
        run names events a person must look at (refused, unresolved): its breach is how
        they are surfaced, so it must be breached then, and met otherwise."""
        final = dict(self.objectives_final)
        correctness = final.pop("correctness", None)
        expected = "breached" if self.reconcile_named else "met"
        return correctness == expected and "breached" not in final.values()

    def figures(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "hours": self.hours,
            "rows": self.rows,
            "events": self.events,
            "carried_forward": self.carried_forward,
            "collection_runs": self.collection_runs,
            "collection_failures": self.collection_failures,
            "deliveries": self.deliveries,
            "delivery_failures": self.delivery_failures,
            "poisoned": self.poisoned,
            "requeued": self.requeued,
            "faults": dict(sorted(self.faults.items())),
            "restarts": dict(sorted(self.restarts.items())),
            "lost_answer": {
                "hour": self.lost_answer_hour,
                "states": dict(sorted(self.lost_answer_states.items())),
                "posted": self.lost_answer_posted,
                "by_daily_sums": self.lost_answer_by_daily_sums,
            },
            "unanswered": {
                "hour": self.unanswered_hour,
                "states": dict(sorted(self.unanswered_states.items())),
            },
            "decided_by_daily_sums": self.decided_by_daily_sums,
            "quiet_resource": {
                "quiet_from": self.quiet_from,
                "hours_carried": self.quiet_carried,
                "billed_after": round(self.quiet_billed_after, 6),
            },
            "modes": self.modes,
            "per_mode": {
                "waited_for_horizon": len(self.waited[WAIT_HORIZON]),
                "waited_undecided": len(self.waited[WAIT_UNDECIDED]),
                "deferred_deliveries": self.deferrals,
                "split_batches": self.split_batches,
                "cancelled": {
                    "refused_events": self.not_active,
                    "sent_with_usage_hours": self.sent_with_usage_hours,
                    "billed_with_usage_hours": round(self.cancelled_billed, 6),
                },
            },
            "named": {
                "refused": {key: round(value, 6) for key, value in sorted(self.refused.items())},
                "unresolved": dict(sorted(self.unresolved.items())),
                "unverifiable_days": sorted(
                    f"{d.resource_id} {d.dimension} {d.hour:%Y%m%d}"
                    for d in (self.reconciliation.differences if self.reconciliation else [])
                    if d.kind == "endpoint-unverifiable"
                ),
            },
            "rating_runs": self.rating_runs,
            "rating_failures": self.rating_failures,
            "ledger_months": self.ledger_months,
            "ledger_differences": len(self.ledger_differences),
            "row_differences": len(self.row_differences),
            "billing_differences": len(self.billing_differences),
            "reconcile_differences": len(self.reconcile_differences),
            "reconcile_named": self.reconcile_named,
            "objectives": {
                "final": self.objectives_final,
                "breached_steps_with_faults": dict(sorted(self.breached_steps.items())),
                "breached_steps_calm": dict(sorted(self.breached_calm_steps.items())),
                "observe_seconds": round(self.observe_seconds, 1),
            },
            "seconds": round(self.seconds, 1),
        }


@dataclass
class Schedule:
    """Which simulated steps get which fault; all drawn from the seed."""

    outages: list[range]
    timer_gaps: list[range]
    restarts: dict[int, str]  # step -> between | mid-collection | mid-drain
    requeues: set[int]
    lost_answer: int  # from this step: lose an accepted answer, retry 30 hours later
    # The endpoint's undocumented latitude (ChaosOptions.undocumented).
    row_delay: timedelta = timedelta(0)
    processing_delay: timedelta = timedelta(0)
    invalid_dimension: range = range(0)  # steps a dimension is not in the plan
    unauthorized: range = range(0)  # steps UNAUTHORIZED_RESOURCE is not authorized
    cancelled_from: int = 0  # CANCELLED_RESOURCE's first step not Subscribed (0: never)
    # From this step (the second calm hour, so its day holds no other unknown event): an
    # item's POSTs all fail, and it is retried 26 hours later.
    unanswered: int = 0

    @classmethod
    def draw(cls, options: ChaosOptions, rng: random.Random) -> Schedule:
        steps = options.days * 24
        outages = []
        for _ in range(options.outages):
            length = rng.randint(24, 30)
            start = rng.randint(2, max(2, steps - length))
            outages.append(range(start, start + length))
        gaps = []
        for index in range(options.timer_gaps):
            # The first gap outlasts the endpoint's window: its oldest hours expire before
            # they are collected (the quiet resource's carried usage comes from there).
            length = rng.randint(26, 30) if index == 0 else rng.randint(3, 30)
            start = rng.randint(3, max(3, steps - length))  # step 1 sets the first watermark
            gaps.append(range(start, start + length))
        kinds = ("between", "mid-collection", "mid-drain")
        # Restarts land on hours the timer fires, so collection and drain have work.
        busy = [s for s in range(2, steps + 1) if not any(s in gap for gap in gaps)]
        chosen = rng.sample(busy, k=min(options.restarts, len(busy)))
        restarts = {step: kinds[n % len(kinds)] for n, step in enumerate(sorted(chosen))}
        requeues = {outage.stop + rng.randint(1, 4) for outage in outages}
        # An hour the timer collects outside outages, early enough for its retry to come
        # back within the chaotic days.
        quiet_steps = [
            s
            for s in range(3, steps - LOST_ANSWER_DELAY - 2)
            if not any(s in gap for gap in gaps)
            and not any(s in outage for outage in outages)
            and s not in restarts
        ]
        lost_answer = rng.choice(quiet_steps) if quiet_steps else 3
        schedule = cls(outages, gaps, restarts, requeues, lost_answer)
        if options.undocumented:
            horizon = options.horizon_hours
            schedule.row_delay = timedelta(hours=rng.uniform(0.5, horizon / 2))
            schedule.processing_delay = timedelta(
                hours=rng.uniform(schedule.row_delay / timedelta(hours=1), horizon - 0.5)
            )
            # Hours the timer fires and the endpoint answers, so their items meet the 400s.
            answering = [step for step in quiet_steps if step + 1 not in restarts]
            start = rng.choice(answering) if answering else 3
            schedule.invalid_dimension = range(start, start + 2)
            start = rng.randint(2, steps - 4)
            schedule.unauthorized = range(start, start + 2)
            # Cancelled where the timer fires and the endpoint answers, so its last hours
            # are collected and sent while their usage hours are still inside the window.
            calm = [
                step
                for step in range(10, steps - 2)
                if not any(s in gap for gap in gaps for s in range(step - 4, step + 2))
                and not any(s in out for out in outages for s in range(step - 4, step + 2))
            ]
            schedule.cancelled_from = rng.choice(calm) if calm else 10
            schedule.unanswered = steps + 2
        return schedule

    def in_outage(self, step: int) -> bool:
        return any(step in outage for outage in self.outages)

    def timer_silent(self, step: int) -> bool:
        return any(step in gap for gap in self.timer_gaps)


class ChaosSource:
    """The simulated fleet, with hooks that fire in the middle of an hour's records."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.name = fleet.name
        self.hook: Callable[[], None] | None = None  # called once, mid-stream
        # A subscription that reports nothing from a reported hour on (it went quiet).
        self.quiet: tuple[str, datetime] | None = None
        # A subscription whose billing resource is cancelled at an hour: its usage of the
        # LATE_BEFORE_CANCELLING hours before comes late, all in that hour, and it reports
        # nothing after (deprovisioned).
        self.cancelled: tuple[str, datetime] | None = None

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]:
        return self.fleet.subscriptions(reported_hour)

    def records(self, reported_hour: datetime) -> Iterator[UsageRecord]:
        """The fleet's records of the hour, without the quiet subscription's once quiet, and
        with the cancelled subscription's last hours reported late, at its cancellation."""
        quiet = self.quiet[0] if self.quiet and reported_hour >= self.quiet[1] else None
        cancelled, cancelled_at = self.cancelled or ("", datetime.max.replace(tzinfo=UTC))
        late_from = cancelled_at - LATE_BEFORE_CANCELLING * HOUR
        for record in self.fleet.usage(reported_hour):
            subscription = record.subscription_id.lower()
            if subscription == quiet:
                continue
            if subscription == cancelled and reported_hour >= late_from:
                continue  # reported at the cancellation (below), or deprovisioned
            yield record
        if reported_hour == cancelled_at:
            for hour in range(LATE_BEFORE_CANCELLING):
                for record in self.fleet.usage(late_from + hour * HOUR):
                    if record.subscription_id.lower() == cancelled:
                        yield record

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        for index, record in enumerate(self.records(reported_hour)):
            if index == 40 and self.hook is not None:
                hook, self.hook = self.hook, None
                hook()
            yield record


def patiently(operation: Callable[[], T], what: str, deadline_seconds: float = 60.0) -> T:
    """The driver's own storage calls (the host's, not the app's): poll through a restart."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return operation()
        except (ServiceRequestError, ServiceResponseError, ConnectionError):
            if time.monotonic() > deadline:
                raise AssertionError(f"storage did not come back for {what}") from None
            threading.Event().wait(0.1)


class Chaos:
    """One run: the stack, the schedule, the simulated hours, the checks."""

    def __init__(self, options: ChaosOptions, folder: Path) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.schedule = Schedule.draw(options, self.rng)
        self.report = ChaosReport()
        self.azurite = Azurite(location=folder / "azurite")
        self.clock = SettableClock(START)
        self.emulator = CommerceEmulator(clock=self.clock)
        self.fleet = SimulatedFleet(
            FleetOptions(
                seed=options.seed,
                tenants=options.tenants,
                late_share=options.late_share,
                scale=options.scale,
            )
        )
        self.source = ChaosSource(self.fleet)
        self._restarting: threading.Thread | None = None
        self.invalid_dimension = ""  # chosen with the subscriptions' mapping
        if options.undocumented:
            self._undocumented()
        self._chaotic = True
        self._first = True
        self._step = 0
        self._settings: Settings | None = None
        # Messages held back after their accepted answer was lost: (due step, text).
        self._held: list[tuple[int, str]] = []
        self._answer_lost = False
        self._unanswered = False

    @property
    def settings(self) -> Settings:
        assert self._settings is not None
        return self._settings

    def _undocumented(self) -> None:
        """Switch on every mode of the emulator's undocumented latitude (those bound to
        hours are switched as the run passes them: ``_endpoint_for``)."""
        schedule, emulator = self.schedule, self.emulator
        emulator.row_delay = schedule.row_delay
        emulator.processing_delay = schedule.processing_delay
        emulator.echo_other_case = True
        counting = self.options.count_submissions
        emulator.count_submissions = self.rng.random() < 0.5 if counting is None else counting
        emulator.refuse_whole_batch = True
        emulator.page_size = self.options.page_size
        emulator.cancelled = {CANCELLED_RESOURCE: START + (schedule.cancelled_from - 1) * HOUR}
        emulator.add_raw_row(
            {
                "usageDate": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "usageResourceId": FOREIGN,
                "dimension": "d",
                "submittedQuantity": "twelve",
                "reconStatus": "Accepted",
            }
        )
        self.report.modes = {
            "horizon_hours": self.options.horizon_hours,
            "row_delay_hours": round(schedule.row_delay / HOUR, 2),
            "processing_delay_hours": round(schedule.processing_delay / HOUR, 2),
            "echo_other_case": True,
            "count_submissions": emulator.count_submissions,
            "refuse_whole_batch": True,
            "invalid_dimension_steps": _span(schedule.invalid_dimension),
            "unauthorized_steps": _span(schedule.unauthorized),
            "cancelled_from": hour_key(START + (schedule.cancelled_from - 1) * HOUR),
            "page_size": self.options.page_size,
            "foreign_unreadable_row": True,
        }

    # -- the stack -------------------------------------------------------------------------

    def __enter__(self) -> Chaos:
        self.azurite.start()
        self.emulator.start()
        self._settings = Settings.from_environ(
            local_values(
                self.azurite.connection_string,
                USAGE_TABLE_PREFIX="c" + uuid.uuid4().hex[:10],
                USAGE_QUEUE_NAME="c" + uuid.uuid4().hex[:10],
                COMMERCE_BASE_URL=self.emulator.base_url,
                COLLECT_LOOKBACK_HOURS="1",
                FLEET_SEED=str(self.options.seed),
                FLEET_TENANTS=str(self.options.tenants),
                COMMERCE_PROCESSING_HORIZON_HOURS=str(self.options.horizon_hours),
            )
        )
        StorageAccount(self.settings).ensure_tables()
        self.status = StatusReader(self.settings, StorageAccount(self.settings), clock=self.clock)
        for name in (self.settings.usage_queue_name, self.poison_name):
            ensure_queue(queue_client(self.settings, name))
        self.mapping = self._map_subscriptions()
        load_example_prices(self.settings)
        return self

    def __exit__(self, *exc: object) -> None:
        self._join_restart()
        self.emulator.stop()
        self.azurite.stop()

    @property
    def poison_name(self) -> str:
        return self.settings.usage_queue_name + POISON_SUFFIX

    def client(self, **options: Any) -> CommerceClient:
        """The reporter's endpoint client; waits are skipped (simulated time)."""
        return CommerceClient(
            self.emulator.base_url,
            static_token_provider(self.emulator.token),
            retry=replace(COMMERCE_POLICY, max_attempts=3, sleep=lambda _: None),
            **options,
        )

    def _map_subscriptions(self) -> dict[str, str]:
        """Bill two of every three active tenant subscriptions to two SaaS resources, and the
        busiest one (most chargeable records) to the resource that goes quiet."""
        store = SubscriptionStore(StorageAccount(self.settings))
        listed = self.fleet.subscriptions(START)
        store.sync(listed, store.all())
        mapping: dict[str, str] = {}
        tenants = sorted(
            s.subscription_id.lower()
            for s in listed
            if not s.is_provider and s.state.value == "active"
        )
        for index, subscription in enumerate(tenants):
            if index % 3 != 2:
                resource = f"saas-{index % 2}"
                store.set_billing(subscription, resource, PLAN)
                mapping[subscription] = resource
        meters = ChargeableMeters(self.settings)
        busy: Counter[str] = Counter()
        dimensions: Counter[str] = Counter()
        for hour in range(6):
            for record in self.fleet.usage(START + hour * HOUR):
                dimension = meters.dimension_of(record.meter_id)
                if dimension is not None:
                    busy[record.subscription_id.lower()] += 1
                    dimensions[dimension] += 1
        # The dimension the plan lacks for two hours: the most common, so every item of those
        # hours holds some, and its batches are refused whole (the whole-batch 400 mode).
        self.invalid_dimension = max(dimensions, key=lambda d: (dimensions[d], d))
        if self.options.undocumented:
            self.report.modes["invalid_dimension"] = self.invalid_dimension
        quiet = max(tenants, key=lambda subscription: (busy[subscription], subscription))
        store.set_billing(quiet, QUIET_RESOURCE, PLAN)
        mapping[quiet] = QUIET_RESOURCE
        if self.options.undocumented:
            # The next busiest bills to the resource that is cancelled (Schedule).
            others = [subscription for subscription in tenants if subscription != quiet]
            cancelled = max(others, key=lambda subscription: (busy[subscription], subscription))
            store.set_billing(cancelled, CANCELLED_RESOURCE, PLAN)
            mapping[cancelled] = CANCELLED_RESOURCE
            cancelled_at = START + (self.schedule.cancelled_from - 1) * HOUR
            self.source.cancelled = (cancelled, cancelled_at)
        # Quiet from the first hour still sendable when the first timer gap ends: the hours
        # before it expire uncollected, and none after it bills to the resource.
        gap = self.schedule.timer_gaps[0]
        quiet_from = START + (gap.stop - 23) * HOUR
        self.source.quiet = (quiet, quiet_from)
        self.report.quiet_from = hour_key(quiet_from)
        return mapping

    # -- faults ----------------------------------------------------------------------------

    def restart_storage(self, kind: str, *, wait: bool) -> None:
        """Stop Azurite gracefully, keep it down a moment, start it on the same folder."""
        self.report.restarts[kind] += 1

        def cycle() -> None:
            self.azurite.stop()
            threading.Event().wait(RESTART_DOWN_SECONDS)
            self.azurite.start()

        self._join_restart()
        self._restarting = threading.Thread(target=cycle, name=f"restart-{kind}")
        self._restarting.start()
        if wait:
            self._join_restart()

    def _join_restart(self) -> None:
        if self._restarting is not None:
            self._restarting.join()
            self._restarting = None

    def _endpoint_for(self, step: int) -> None:
        if self.options.undocumented:
            schedule, emulator = self.schedule, self.emulator
            invalid = step in schedule.invalid_dimension and self._chaotic
            emulator.invalid_dimensions = {self.invalid_dimension} if invalid else set()
            unauthorized = step in schedule.unauthorized and self._chaotic
            emulator.unauthorized_resources = {UNAUTHORIZED_RESOURCE} if unauthorized else set()
        if self.schedule.in_outage(step):
            rate = 1.0
        elif step <= self.options.days * 24:
            rate = self.options.background_fault_rate
        else:
            rate = 0.0
        self.emulator.set_fault_rate(
            rate, ENDPOINT_FAULTS, seed=self.rng.randrange(2**32), delay=self.options.slow_seconds
        )

    def _maybe_kill(self, outcomes: Sequence[EventOutcome]) -> None:
        if self._chaotic and self.rng.random() < self.options.kill_rate:
            self.report.faults["kill-after-post"] += 1
            raise Killed

    # -- one simulated hour ----------------------------------------------------------------

    def step(self, step: int) -> None:
        """Simulated hour ``step``: the timer at :10, then the queue, then the operator."""
        self._chaotic = step <= self.options.days * 24
        self._step = step
        # The first run sets the first watermark: if it failed, the next run's look-back
        # would start an hour later (a first run has nothing to catch up from), so the
        # faults begin with the second run.
        self._first = step == 1
        now = START + step * HOUR + timedelta(minutes=10)
        self.clock.set(now)
        self._endpoint_for(step)
        self._release_held(step)
        restart = self.schedule.restarts.get(step) if self._chaotic else None
        if restart == "between":
            self.restart_storage("between", wait=True)
        if self._chaotic and self.schedule.timer_silent(step):
            self.report.faults["timer-skipped"] += 1
        else:
            self._collect(now, mid_restart=restart == "mid-collection")
        self._drain(now, mid_restart=restart == "mid-drain")
        self._join_restart()
        if step == self.options.days * 12:
            self._reprice(now)
        if step % self.options.rating_every == 0 or step == self.options.days * 12:
            self._rate()
        if step in self.schedule.requeues or step == self.options.days * 24 + 1:
            self.report.requeued += requeue_poison(self.settings)
            self._drain(now + timedelta(minutes=30), mid_restart=False)
        if step % self.options.observe_every == 0:
            self._observe(now + timedelta(minutes=45))

    def _observe(self, now: datetime) -> None:
        """The objectives as an operator would see them at ``now`` (the app's reader)."""
        started = time.monotonic()
        status = patiently(lambda: self.status.read(now), "read the status")
        self.report.observe_seconds += time.monotonic() - started
        breaches = self.report.breached_steps if self._chaotic else self.report.breached_calm_steps
        breaches.update(objective.value for objective in status.breached)

    def _kill_rating(self) -> None:
        if self._chaotic and self.rng.random() < self.options.rating_kill_rate:
            self.report.faults["kill-mid-rating"] += 1
            raise Killed

    def _rate(self) -> None:
        """The rate_usage timer's run, killed after some committed transaction."""
        self.report.rating_runs += 1
        account = StorageAccount(self.settings)
        ledger = ChargeLedger(account, max_operations=3, after_transaction=self._kill_rating)
        rater = Rater(account, self.settings.source_names(), ledger=ledger, parallelism=2)
        try:
            rater.rate_due(600)
        except (Exception, Killed):
            self.report.rating_failures += 1  # the rated mark stays; the next run finishes

    def _reprice(self, now: datetime) -> None:
        """A new default sheet from today, 10% dearer: the next run re-rates the month."""
        account = StorageAccount(self.settings)
        book = PriceBook(SheetStore(account).all())
        current = book.version_at(Scope.default(), now)
        assert current is not None  # load_example_prices stored it
        document = json.loads(sheet_json(current, catalogue()))
        document["effectiveFrom"] = f"{floor_day(now):%Y-%m-%d}"
        for meter in document["meters"]:
            for key in ("unitPrice",):
                if key in meter:
                    meter[key] = str(Decimal(str(meter[key])) * Decimal("1.1"))
            if "tiers" in meter:
                meter["tiers"] = {
                    start: str(Decimal(str(price)) * Decimal("1.1"))
                    for start, price in meter["tiers"].items()
                }
        sheet = read_json_sheet(json.dumps(document), catalogue())
        SheetStore(account).put(sheet, SubscriptionStore(account))
        self.report.faults["reprice"] += 1

    def _collect(self, now: datetime, *, mid_restart: bool) -> None:
        self.report.collection_runs += 1
        kill = self._chaotic and not self._first and self.rng.random() < self.options.kill_rate
        if mid_restart:
            self.source.hook = lambda: self.restart_storage("mid-collection", wait=False)
        elif kill:

            def die() -> None:
                self.report.faults["kill-mid-collection"] += 1
                raise Killed

            self.source.hook = die
        collector = Collector(
            self.settings,
            StorageAccount(self.settings),
            self.source,
            after_hour_written=work_item_enqueuer(self.settings),
        )
        try:
            collector.collect_due_hours(now)
        except (Exception, Killed):
            self.report.collection_failures += 1  # the watermark stays; the next run redoes
        finally:
            self.source.hook = None
            self._join_restart()

    def _drain(self, now: datetime, *, mid_restart: bool) -> None:
        """Deliver until nothing is visible: failures come back one round later."""
        queue = queue_client(self.settings, self.settings.usage_queue_name)
        poison = queue_client(self.settings, self.poison_name)
        with self.client(read_timeout=self.options.slow_seconds / 2) as client:
            for round_number in range(4 * MAX_DEQUEUE):
                self.clock.set(now + round_number * REDELIVERY)
                batch = patiently(lambda: _receive(queue), "receive")
                if not batch and mid_restart:  # nothing to deliver: restart while polling
                    mid_restart = False
                    self.restart_storage("mid-drain", wait=True)
                    continue
                if not batch:
                    return
                for message in batch:
                    if mid_restart:
                        mid_restart = False
                        self.restart_storage("mid-drain", wait=False)
                    if self._loses_answer(message, now):
                        self._deliver_losing_answer(message, queue, poison, client)
                    elif self._goes_unanswered(message, now):
                        self._deliver_unanswered(message, queue, client)
                    else:
                        self._deliver(message, queue, poison, client)
                self._join_restart()
        raise AssertionError("the queue did not drain within 20 rounds")

    def _deliver(
        self, message: QueueMessage, queue: QueueClient, poison: QueueClient, client: Any
    ) -> None:
        body = base64.b64decode(message.content)
        self.report.deliveries += 1
        try:
            result = report_message(
                body,
                self.settings,
                clock=self.clock,
                client=client,
                after_post=self._maybe_kill,
                defer=self._defer,
            )
        except (Exception, Killed):
            self.report.delivery_failures += 1
            self._failed(message, queue, poison)
            return
        self._count(result)
        _forget(queue, message)
        if self._chaotic and self.rng.random() < self.options.duplicate_rate:
            self.report.faults["duplicate-delivery"] += 1
            patiently(lambda: queue.send_message(message.content), "duplicate")

    def _defer(self, item: WorkItem, delay: timedelta) -> None:
        """The app's deferral, in simulated time: the item is held back and sent again at
        the first step whose clock has passed the delay (the queue's own visibility runs in
        real seconds)."""
        due = self.clock() + delay - START - timedelta(minutes=10)
        self._held.append((math.ceil(due / HOUR), item.to_message_text()))
        self.report.deferrals += 1

    def _count(self, result: ReportResult) -> None:
        """What one delivery did about the endpoint's undocumented latitude."""
        report = self.report
        for waiting in result.waiting:
            report.waited[waiting.reason].add(_name(*waiting.key))
        report.split_batches += result.split

    def _loses_answer(self, message: QueueMessage, now: datetime) -> bool:
        """True for the scenario's message: the hour just collected, from its step on."""
        if self._answer_lost or not self._chaotic or self._step < self.schedule.lost_answer:
            return False
        hour = WorkItem.from_body(base64.b64decode(message.content)).hour
        return hour == floor_hour(now) - HOUR

    def _deliver_losing_answer(
        self, message: QueueMessage, queue: QueueClient, poison: QueueClient, client: Any
    ) -> None:
        """Post the item with no endpoint fault, die after the answer, hold the message back.

        Its events are accepted and the ledger never hears: they stay pending until the
        message comes back ``LOST_ANSWER_DELAY`` hours later, past the endpoint's window.
        If nothing was posted (the item's events were already settled), it is delivered
        normally and the scenario waits for the next hour.
        """
        posted: list[int] = []

        def die(outcomes: Sequence[EventOutcome]) -> None:
            posted.append(len(outcomes))
            raise Killed

        self.emulator.clear_faults()
        try:
            self.report.deliveries += 1
            body = base64.b64decode(message.content)
            report_message(body, self.settings, clock=self.clock, client=client, after_post=die)
        except (Exception, Killed):
            if not posted:
                self.report.delivery_failures += 1
                self._failed(message, queue, poison)
                return
            self.report.delivery_failures += 1
            self.report.faults["answer-lost-30h"] += 1
            self.report.lost_answer_hour = hour_key(WorkItem.from_body(body).hour)
            self.report.lost_answer_posted = sum(posted)  # later batches never went out
            self._answer_lost = True
            self._held.append((self._step + LOST_ANSWER_DELAY, message.content))
            _forget(queue, message)
            return
        finally:
            self._endpoint_for(self._step)
        _forget(queue, message)

    def _goes_unanswered(self, message: QueueMessage, now: datetime) -> bool:
        """True for the message of the never-answered scenario (as ``_loses_answer``)."""
        schedule = self.schedule
        if self._unanswered or not schedule.unanswered:
            return False
        if self._step < schedule.unanswered:
            return False
        hour = WorkItem.from_body(base64.b64decode(message.content)).hour
        return hour == floor_hour(now) - HOUR

    def _deliver_unanswered(self, message: QueueMessage, queue: QueueClient, client: Any) -> None:
        """Deliver the item while the endpoint fails every request (500: nothing processed),
        then hold the message back ``UNANSWERED_DELAY`` hours: past the window, its events
        were posted and never accepted, and only the day's rows can tell; before the
        processing horizon they prove nothing, so the decision waits for it."""
        self.emulator.set_fault_rate(1.0, [Fault.SERVER_ERROR], seed=self.rng.randrange(2**32))
        body = base64.b64decode(message.content)
        try:
            self.report.deliveries += 1
            report_message(body, self.settings, clock=self.clock, client=client)
        except Exception:  # the endpoint failed every request, as intended
            self.report.delivery_failures += 1
        finally:
            self._endpoint_for(self._step)
        self.report.faults["unanswered-26h"] += 1
        self.report.unanswered_hour = hour_key(WorkItem.from_body(body).hour)
        self._unanswered = True
        self._held.append((self._step + UNANSWERED_DELAY, message.content))
        _forget(queue, message)

    def _release_held(self, step: int | None) -> None:
        """Send held-back messages that are due (all of them when ``step`` is None)."""
        queue = queue_client(self.settings, self.settings.usage_queue_name)
        for due, content in list(self._held):
            if step is None or due <= step:
                self._held.remove((due, content))
                patiently(lambda content=content: queue.send_message(content), "release")

    def _failed(self, message: QueueMessage, queue: QueueClient, poison: QueueClient) -> None:
        """What the host does with a failed delivery: visible again, or poison at the cap."""
        if message.dequeue_count is not None and message.dequeue_count >= MAX_DEQUEUE:
            self.report.poisoned += 1
            patiently(lambda: poison.send_message(message.content), "poison")
            _forget(queue, message)
        else:
            with contextlib.suppress(HttpResponseError):  # lost to a restart: back in 30 s
                patiently(
                    lambda: queue.update_message(
                        message, pop_receipt=message.pop_receipt, visibility_timeout=0
                    ),
                    "make visible",
                )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        started = time.monotonic()
        last_step = self.options.days * 24 + self.options.calm_hours
        for step in range(1, last_step + 1):
            self.step(step)
        self._release_held(None)  # a run too short for the full delay still sends it back
        for kind, count in self.emulator.injected.items():
            self.report.faults[f"endpoint-{kind.value}"] += count
        self.check(START, START + (last_step - 1) * HOUR)
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- the checks ------------------------------------------------------------------------

    def check(self, first: datetime, last: datetime) -> None:
        report = self.report
        report.hours = int((last - first) / HOUR) + 1
        account = StorageAccount(self.settings)
        watermark = Watermark(account, self.source.name).read()
        report.watermark_at_end = watermark == last
        stored = stored_rows(account)
        report.rows = sum(len(rows) for rows in stored.values())
        report.row_differences = compare_rows(self.source.records, stored, first, last)
        self.emulator.clear_faults()
        queue = queue_client(self.settings, self.settings.usage_queue_name)
        poison = queue_client(self.settings, self.poison_name)
        report.left_in_queue = self._settle_queue(queue, last + 2 * HOUR)
        report.requeued += requeue_poison(self.settings)  # the operator, once more
        report.left_in_queue += self._settle_queue(queue, last + 3 * HOUR)
        report.left_in_poison = poison.get_queue_properties().approximate_message_count
        report.deferred_at_end = len(self._held)  # items whose events still wait
        accepted = self.emulator.accepted_events()
        report.events = len(accepted)
        keys = Counter(
            (e["resourceId"].casefold(), e["dimension"], e["effectiveStartTime"]) for e in accepted
        )
        report.duplicate_keys = [str(key) for key, n in keys.items() if n > 1]
        report.billing_differences = self.compare_billing(stored, accepted, first, last)
        # Every row the endpoint will show is shown and processed (lags below the horizon),
        # and every ledger record is older than the horizon: the strictest reconciliation.
        self.clock.set(last + 4 * HOUR + self.options.horizon_hours * HOUR)
        with self.client() as client:
            report.reconciliation = reconcile(account, client, first, last, now=self.clock())
        report.reconcile_named = sum(map(report.names, report.reconciliation.differences))
        rated = Rater(account, self.settings.source_names()).rate_due(3600)  # a clean run
        report.rated_at_end = rated.rated_through == last
        report.ledger_months, report.ledger_differences = ledger_differences(
            account, self.settings.source_names(), first, last
        )
        remember(account, report.reconciliation, last + 3 * HOUR)
        final = self.status.read(last + HOUR + timedelta(minutes=10))  # the last step's time
        report.objectives_final = {
            obs.objective.value: obs.state.value for obs in final.observations
        }

    def _settle_queue(self, queue: QueueClient, at: datetime) -> int:
        """Drain until the queue is empty (a message hidden by a lost visibility update
        comes back within 30 s); returns what is still there at the deadline."""
        deadline = time.monotonic() + 60
        while True:
            self._drain(at, mid_restart=False)
            left = queue.get_queue_properties().approximate_message_count or 0
            if not left or time.monotonic() > deadline:
                return left
            threading.Event().wait(0.5)

    def compare_billing(
        self,
        stored: dict[datetime, dict[tuple[str, str, datetime], float]],
        accepted: list[dict[str, Any]],
        first: datetime,
        last: datetime,
    ) -> list[str]:
        """Per (resource, dimension): collected chargeable total == billed total + what the
        run names instead of billing (the refused part of rejected events; unresolved
        events the endpoint did not accept, as its test-only inspection tells); every
        accepted event has its ledger record (same usage event id, or billed from the day's
        sums, or named unresolved)."""
        meters = ChargeableMeters(self.settings)
        owed: dict[Key, list[float]] = defaultdict(list)
        for rows in stored.values():
            for (subscription, meter, _), quantity in rows.items():
                dimension = meters.dimension_of(meter)
                if dimension is not None:
                    resource = self.mapping.get(
                        subscription, self.settings.billing_default_resource_id
                    )
                    owed[(resource, dimension)].append(quantity)
        billed: dict[Key, list[float]] = defaultdict(list)
        by_key: dict[str, dict[str, Any]] = {}
        for event in accepted:
            billed[(event["resourceId"], event["dimension"])].append(event["quantity"])
            hour = datetime.fromisoformat(event["effectiveStartTime"].replace("Z", "+00:00"))
            by_key[_name(event["resourceId"], event["dimension"], hour)] = event
        account = StorageAccount(self.settings)
        report = self.report
        lost_hour = (
            None if report.lost_answer_hour is None else parse_hour_key(report.lost_answer_hour)
        )
        named: dict[Key, list[float]] = defaultdict(list)
        entries: dict[tuple[str, str, datetime], LedgerEntry] = {}
        refused_or_unresolved: list[LedgerEntry] = []
        for resource in {key[0] for key in owed} | {key[0] for key in billed}:
            for entry in Ledger(account, resource).entries(first, last + HOUR):
                name = _name(*entry.key)
                if entry.state is LedgerState.CARRIED_FORWARD:
                    report.carried_forward += 1
                    if resource == QUIET_RESOURCE:
                        report.quiet_carried += 1
                if entry.reason == "DailySums":
                    report.decided_by_daily_sums += 1
                if entry.hour == lost_hour:
                    report.lost_answer_states[entry.state.value] += 1
                    report.lost_answer_by_daily_sums += entry.reason == "DailySums"
                if report.unanswered_hour == hour_key(entry.hour):
                    report.unanswered_states[entry.state.value] += 1
                if entry.state is LedgerState.REJECTED:
                    refused = entry.quantity if entry.refused is None else entry.refused
                    if refused > 0:
                        report.refused[name] = refused
                        named[(resource, entry.dimension)].append(refused)
                        refused_or_unresolved.append(entry)
                if entry.state is LedgerState.UNRESOLVED:
                    report.unresolved[name] = name in by_key
                    if name not in by_key:
                        named[(resource, entry.dimension)].append(entry.quantity)
                    refused_or_unresolved.append(entry)
                entries[entry.key] = entry
                if entry.reason == "ResourceNotActive":
                    report.not_active += 1
                if any(parse_hour_key(h) > entry.hour for h in entry.carried_from):
                    report.sent_with_usage_hours += 1  # a refused event's part, its own hour
                    if entry.state.billed:
                        report.cancelled_billed += entry.quantity
        # What was carried (perhaps through other carries) into a named event.
        folded = list(refused_or_unresolved)
        while folded:
            into = folded.pop()
            for hour in into.carried_from:
                carried = entries.get((into.resource_id, into.dimension, parse_hour_key(hour)))
                if carried is not None and carried.state is LedgerState.CARRIED_FORWARD:
                    report.carried_into_named.add(_name(*carried.key))
                    folded.append(carried)
        differences = []
        for key in sorted(set(owed) | set(billed) | set(named)):
            want = math.fsum(owed.get(key, []))
            got = math.fsum([*billed.get(key, []), *named.get(key, [])])
            if not math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9):
                differences.append(
                    f"{key}: collected {want!r}, billed {math.fsum(billed.get(key, []))!r}, "
                    f"named {math.fsum(named.get(key, []))!r}"
                )
        quiet_from = parse_hour_key(report.quiet_from or "2000010100")
        for name, event in sorted(by_key.items()):
            hour = datetime.fromisoformat(event["effectiveStartTime"].replace("Z", "+00:00"))
            if event["resourceId"] == QUIET_RESOURCE and hour >= quiet_from:
                report.quiet_billed_after += event["quantity"]
            entry = Ledger(account, event["resourceId"]).get(hour, event["dimension"])
            # Decided from the day's sums, an event's ledger record cannot know its id (the
            # daily rows name none); it must still be billed there, or named unresolved.
            matches = entry is not None and (
                entry.usage_event_id == event["usageEventId"]
                or (entry.reason == "DailySums" and entry.state.billed)
                or (entry.state is LedgerState.UNRESOLVED and name in report.unresolved)
            )
            if not matches:
                differences.append(f"accepted {event['usageEventId']} has no matching ledger")
        return differences


def _span(steps: range) -> list[int]:
    return [steps.start, steps.stop]


def _name(resource_id: str, dimension: str, hour: datetime) -> str:
    """An event key as the report names it: ``resource dimension YYYYMMDDHH``."""
    return f"{resource_id} {dimension} {hour_key(hour)}"


def _receive(queue: QueueClient) -> list[QueueMessage]:
    # Hidden for 30 real seconds: long enough for one delivery, short enough that a
    # message whose visibility update was lost to a restart comes back before the end.
    return list(queue.receive_messages(messages_per_page=32, max_messages=32,
                                       visibility_timeout=30))  # fmt: skip


def _forget(queue: QueueClient, message: QueueMessage) -> None:
    with contextlib.suppress(HttpResponseError):  # gone, or its receipt lost to a restart
        patiently(lambda: queue.delete_message(message), "delete")


def stored_rows(account: StorageAccount) -> dict[datetime, dict[tuple[str, str, datetime], float]]:
    """Every stored hourly row, summed per reported hour, (subscription, meter, usage hour)."""
    prefix = account.settings.table_prefix + "u"
    service = TableServiceClient.from_connection_string(
        account.settings.storage_connection_string.get_secret_value()  # type: ignore[union-attr]
    )
    found: dict[datetime, dict[tuple[str, str, datetime], float]] = defaultdict(dict)
    for table in service.list_tables():
        if not table.name.startswith(prefix):
            continue
        for entity in service.get_table_client(table.name).list_entities():
            if not entity["PartitionKey"].startswith("H"):
                continue
            hour = parse_hour_key(entity["PartitionKey"][1:])
            key = (
                str(entity["SubscriptionId"]).lower(),
                str(entity["MeterId"]).lower(),
                entity["UsageStartTime"].astimezone(UTC),
            )
            rows = found[hour]
            rows[key] = rows.get(key, 0.0) + float(entity["Quantity"])
    return found


def compare_rows(
    records: Callable[[datetime], Iterator[UsageRecord]],
    stored: dict[datetime, dict[tuple[str, str, datetime], float]],
    first: datetime,
    last: datetime,
) -> list[str]:
    """Each reported hour's rows against the source's own records, summed the same way."""
    differences = []
    hour = first
    while hour <= last:
        expected: dict[tuple[str, str, datetime], list[float]] = defaultdict(list)
        for record in records(hour):
            key = (record.subscription_id.lower(), record.meter_id.lower(), record.usage_start)
            expected[key].append(record.quantity)
        got = stored.get(hour, {})
        if set(expected) != set(got):
            differences.append(
                f"{hour_key(hour)}: {len(set(expected) - set(got))} missing, "
                f"{len(set(got) - set(expected))} unexpected"
            )
        else:
            for key, parts in expected.items():
                if not math.isclose(math.fsum(parts), got[key], rel_tol=1e-9, abs_tol=1e-12):
                    differences.append(f"{hour_key(hour)} {key}: {got[key]!r}")
        hour += HOUR
    assert hourly_partition(first).startswith("H")  # the layout compare relies on
    return differences


def ledger_differences(
    account: StorageAccount, source_names: Sequence[str], first: datetime, last: datetime
) -> tuple[int, list[str]]:
    """Every subscription-month with rows reported ``first``..``last``: its stored ledger
        (month state and day charge lines, each level) against rating its rows once, cleanly,
        in memory with the same prices (``rate_into``), and its cost digest against that clean
    month's. (months checked, differences)."""
    ledger = ChargeLedger(account)
    digests = CostDigests(account)
    prices = Rater(account, source_names).prices()
    differences: list[str] = []
    checked = 0
    month = Month.of(first)
    while month <= Month.of(last):
        low, high = max(first, month.first_hour), min(last, month.last_hour)
        with_rows = sorted({e.subscription_id for _, e in read_manifest(account, low, high)})
        indexed = {s for subs in ledger.indexed(month).values() for s in subs}
        differences += [f"{s} {month}: not in the charges index" for s in with_rows
                        if s not in indexed]  # fmt: skip
        for subscription_id in with_rows:
            checked += 1
            expected = LoadedMonth(subscription_id, month)
            raters = {}
            for level, pricing in prices.levels(subscription_id):
                expected.months[level] = MonthCharges(
                    subscription_id, level, month, pricing.buyer, prices.book.currency,
                    prices.fingerprint(pricing, month),
                )  # fmt: skip
                raters[level] = MonthRater(pricing, expected.months[level].used)
            rows = read_hourly_rows(account, subscription_id, month.first_hour, high)
            rate_into(expected, rows, raters)
            stored = ledger.load(subscription_id, month, None)
            differences += _compare(subscription_id, month, stored, expected)
            digest = digests.get(month, prices.provider(subscription_id), subscription_id)
            if digest is None or digest.body != json.loads(digest_document(expected)):
                differences.append(f"{subscription_id} {month}: cost digest differs")
        month = month.next
    return checked, differences


def _compare(
    subscription_id: str, month: Month, stored: LoadedMonth, expected: LoadedMonth
) -> list[str]:
    where = f"{subscription_id} {month}"
    found = []
    if set(stored.months) != set(expected.months):
        return [f"{where}: levels {sorted(stored.months)} != {sorted(expected.months)}"]
    for level, want in expected.months.items():
        got = stored.months[level]
        if (got.rows, got.fingerprint, got.document()) != (
            want.rows,
            want.fingerprint,
            want.document(),
        ):
            found.append(f"{where} {level}: month state differs (rows {got.rows}/{want.rows})")

    def days(loaded: LoadedMonth) -> dict[tuple[Level, datetime], list[str]]:
        return {
            key: day.charges.shards(10**9) for key, day in loaded.days.items() if day.charges.lines
        }

    got_days, want_days = days(stored), days(expected)
    for key in sorted(set(got_days) | set(want_days), key=lambda k: (k[0].value, k[1])):
        if got_days.get(key) != want_days.get(key):
            found.append(f"{where} {key[0]} {key[1]:%Y-%m-%d}: charge lines differ")
    return found


def run_chaos(options: ChaosOptions, folder: Path) -> ChaosReport:
    with Chaos(options, folder) as chaos:
        return chaos.run()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos")
    parser.add_argument("--quick", action="store_true", help="3 days, 4 tenants")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--tenants", type=int, default=None)
    parser.add_argument(
        "--count-duplicates",
        choices=("yes", "no"),
        default=None,
        help="whether the endpoint's daily counts include duplicates (default: by the seed)",
    )
    parser.add_argument(
        "--documented-only",
        action="store_true",
        help="the endpoint answers only as documented (none of its undocumented latitude)",
    )
    args = parser.parse_args(argv)
    days = args.days or (3 if args.quick else 7)
    options = ChaosOptions(
        seed=args.seed,
        days=days,
        tenants=args.tenants or (4 if args.quick else 8),
        scale=0.6 if args.quick else 1.0,
        outages=max(1, days // 3),
        timer_gaps=max(1, days // 3),
        restarts=2 * days,
        undocumented=not args.documented_only,
        count_submissions=None if args.count_duplicates is None else args.count_duplicates == "yes",
    )
    with tempfile.TemporaryDirectory(prefix="chaos-") as folder:
        report = run_chaos(options, Path(folder))
    print(f"chaos: seed {options.seed}, {options.days} days, {options.tenants} tenants")
    if report.reconciliation is not None:
        print("  " + report.reconciliation.summary_line())
    differences = report.row_differences + report.billing_differences + report.ledger_differences
    for difference in (differences + report.reconcile_differences)[:10]:
        print("  difference: " + difference)
    for name, refused in sorted(report.refused.items()):
        print(f"  named, refused: {name}: {refused!r}")
    for name, accepted in sorted(report.unresolved.items()):
        print(f"  named, unresolved: {name} ({'accepted' if accepted else 'not accepted'})")
    finish(report.figures())
    return 0 if report.ok else 1
