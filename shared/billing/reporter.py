"""Reporting one work item: owed quantities -> ledger -> commerce endpoint -> ledger.

For the item's reported hour and billing resources (``shared.billing.work_items``):

1. sum what is owed per (resource, dimension) from the stored rows (``shared.billing.charges``);
2. open the events in the ledger (``shared.billing.ledger``): new keys become ``pending`` with the
   quantity to send (plus expired usage carried forward), or ``expired`` when the hour has
   left the endpoint's 24-hour window; keys already final are skipped, so a replayed or
   redelivered item posts nothing twice;
3. post the pending events in batches of at most 25, filled across the item's resources;
4. record every outcome under the event's ETag: accepted (``SentOnce`` when answered on its
   only send), duplicate-confirmed, mismatch, rejected (final statuses, with the peer's
   reason); an event refused ``ResourceNotActive`` (its resource was cancelled) is sent
   again as parts of its usage's own hours where the endpoint still takes them
   (``_send_with_usage_hours``), the rest refused;
5. decide the events no POST answer settled (``Expired``: a re-send after the window may
   follow an accept whose answer was lost, and carrying it forward then would bill it
   twice; a ``Duplicate`` without the accepted event; a pending event whose hour left the
   window before this delivery) from their day's sums, the only read the endpoint offers
   (``shared.billing.daily_sums``), by what holds whichever way the endpoint counts
   duplicates: proved accepted -> ``duplicate-confirmed`` (Reason ``DailySums``); proved
   not accepted -> ``expired`` (carried into a later event), but only once the processing
   horizon (``COMMERCE_PROCESSING_HORIZON_HOURS``) has passed since it could last have
   been accepted, since the docs promise no latency for the rows; neither -> it waits, and
   once its day can no longer change -> ``unresolved``, never carried forward (it may have
   been billed), which reconciliation shows. An item whose events wait goes back to the
   queue until they can be decided (``defer``), or raises to be retried without one;
6. for resources that carried usage in, or had none of their own (listed only for their
   carry markers), unlist them from the carry index once no marker is left.

Errors (shared.core.errors): a transient failure (endpoint budget spent, storage faults,
events left pending, an endpoint answering a 4xx that is not about the events, such as a
404 from a mistyped base URL) RAISES, after recording what did settle, so the Functions host
redelivers the message and poisons it after ``maxDequeueCount``; a whole-batch refusal
(``FinalRejectionError``, a 400: one invalid event refuses all of them) is posted again in
halves, down to single events, and only an event refused alone is recorded ``rejected``;
``NotAllowedError`` (the endpoint refuses a fresh token) raises too: credentials are fixed
by an operator, who then re-enqueues the poison messages.

``after_post`` is a test seam called between a POST's answer and its ledger write: raising
there is a process killed at the worst moment.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from shared.billing.charges import hour_charges, usage_hour_parts
from shared.billing.commerce import CommerceClient
from shared.billing.daily_sums import (
    DayTotal,
    Known,
    Verdict,
    day_totals,
    decide,
    same_quantity,
)
from shared.billing.events import (
    MAX_BATCH,
    EventOutcome,
    EventStatus,
    endpoint_key,
)
from shared.billing.ledger import (
    DUPLICATE_REASON,
    CarryIndex,
    Ledger,
    LedgerEntry,
    LedgerState,
    Settlement,
)
from shared.billing.tokens import TokenProvider, token_provider_for
from shared.billing.work_items import WorkItem
from shared.core.config import Settings
from shared.core.errors import CommerceUnavailableError, FinalRejectionError, TransientError
from shared.core.hours import DAY, HOUR, floor_day, hour_key, parse_hour_key, utc_now
from shared.core.http_environment import ca_bundle, proxies_for
from shared.core.meters import ChargeableMeters
from shared.storage.account import StorageAccount

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)  # the endpoint refuses older hours as Expired
# Hours this close to the window's edge are not posted any more (they would arrive late).
SEND_MARGIN = timedelta(minutes=5)
# An event that may have been posted is only declared unsent once it is this far past the
# edge: longer than any request's time budget, so no concurrent delivery can still get it
# accepted after the daily sums said it was absent.
SETTLE_GRACE = timedelta(minutes=15)
# An event whose decision waits is looked at again after this long, or a quarter of the
# processing horizon if longer (or at its horizon, or when its day is final, if sooner):
# its work item is deferred on the queue until then (``Reporter.defer``).
RECHECK = timedelta(hours=1)
LEDGER_PARALLELISM = 8
# Billing resources an item opens ahead of the one it is posting: enough that the next
# batch's events are pending when the POST before it is answered (an open takes about as
# long as a POST), few enough that the items running at once share the ledger pool fairly.
OPENS_AHEAD = 2
# Work items one worker runs at once (host.json: batchSize 8, and the next batch is fetched
# when 4 are left), so the connections a shared commerce client keeps.
COMMERCE_CONNECTIONS = 12

AfterPost = Callable[[Sequence[EventOutcome]], None]
# Sends a work item back to the queue, to be delivered again after the delay.
Defer = Callable[[WorkItem, timedelta], None]
Found = TypeVar("Found")


def can_send(hour: datetime, now: datetime) -> bool:
    """True while ``hour`` is safely inside the endpoint's 24-hour window."""
    return hour >= now - WINDOW + SEND_MARGIN


# Why a decision waits: proved absent from its day's row, but the row may lag until the
# processing horizon has passed; or the row cannot tell yet (Submitted, recent events, ...).
WAIT_HORIZON = "horizon"
WAIT_UNDECIDED = "undecided"


@dataclass(frozen=True)
class Waiting:
    """An event whose decision waits: its key, why, and when to look again."""

    key: tuple[str, str, datetime]
    reason: str
    until: datetime
    why: str


@dataclass
class ReportResult:
    """What one work item did; counts are events unless named otherwise."""

    hour: datetime
    resources: int = 0
    posted: int = 0
    calls: int = 0
    states: Counter[str] = field(default_factory=Counter)
    carried_in: int = 0
    split: int = 0  # batches the endpoint refused whole (400), posted again in halves
    not_active: int = 0  # events refused ResourceNotActive (a cancelled resource)
    sent_with_usage_hours: int = 0  # parts of them sent as events of their usage hours
    # Events whose decision waits, and for what (``WAIT_HORIZON``, ``WAIT_UNDECIDED``).
    waiting: list[Waiting] = field(default_factory=list)
    deferred_until: datetime | None = None  # when the item comes back for them

    def summary_line(self) -> str:
        states = ", ".join(f"{count} {state}" for state, count in sorted(self.states.items()))
        waits = Counter(wait.reason for wait in self.waiting)
        waiting = ", ".join(f"{n} waiting ({reason})" for reason, n in sorted(waits.items()))
        return (
            f"report_to_azure: hour {self.hour:%Y-%m-%dT%H}Z, {self.resources} billing "
            f"resources, {self.posted} events posted in {self.calls} calls"
            f"{', ' + states if states else ''}{', ' + waiting if waiting else ''}"
        )


# An event waiting for its day's sums, and whether a Duplicate told us it is billed.
Undecided = tuple[LedgerEntry, bool]
# Ledger states whose event the endpoint may hold (unknown unless the first ledger read of a
# decision saw it billed); the others were never accepted (rejected, expired, carried).
_MAYBE_HELD = frozenset(
    {
        LedgerState.PENDING,
        LedgerState.UNRESOLVED,
        LedgerState.ACCEPTED,
        LedgerState.DUPLICATE_CONFIRMED,
        LedgerState.MISMATCH,
    }
)


def surely_shown(entry: LedgerEntry, now: datetime, horizon: timedelta) -> bool:
    """True when every send of a billed ``entry`` is older than the processing horizon, so
    its day's row shows it (and the duplicates of it a Duplicate answer proved): settled
    that long ago, or its hour left the window that long ago (nothing of it was accepted
    after that)."""
    if entry.hour + WINDOW + SETTLE_GRACE + horizon <= now:
        return True
    return entry.settled_at is not None and entry.settled_at + horizon <= now


def known_of(entry: LedgerEntry) -> Known:
    """A billed ledger entry as the day's arithmetic sees it (``daily_sums.Known``)."""
    return Known(entry.held, entry.quantity, duplicated=entry.duplicated, once=entry.sent_once)


def day_verdict(
    entry: LedgerEntry,
    known_billed: bool,
    before: Sequence[LedgerEntry],
    after: Sequence[LedgerEntry],
    total: DayTotal | None,
    *,
    now: datetime,
    horizon: timedelta,
) -> tuple[Verdict, str]:
    """What ``entry``'s day proves about it: ``before`` / ``after`` are the resource's ledger
    entries of that day read before and after the endpoint's ``total`` (see daily_sums);
    a billed entry settled within the processing ``horizon`` may not be in the row yet."""
    shown: list[Known] = []
    maybe_shown: list[Known] = []
    held: set[datetime] = set()
    for other in before:
        if other.dimension == entry.dimension and other.state.billed:
            known = known_of(other)
            (shown if surely_shown(other, now, horizon) else maybe_shown).append(known)
            held.add(other.hour)
    unknown = {
        other.hour: other.quantity
        for other in after
        if other.dimension == entry.dimension
        and other.hour not in held
        and other.state in _MAYBE_HELD
    }
    unknown.setdefault(entry.hour, entry.quantity)
    verdicts, why = decide(
        total,
        shown,
        unknown,
        maybe_shown=maybe_shown,
        known_billed=[entry.hour] if known_billed else [],
    )
    return verdicts[entry.hour], why


def decided_not_accepted_from(hour: datetime, horizon: timedelta) -> datetime:
    """When an event of ``hour`` that its day's row does not show may be declared not
    accepted: its last possible acceptance (the window's edge, plus the grace for a POST
    still in flight) is older than the processing horizon."""
    return hour + WINDOW + SETTLE_GRACE + horizon


def day_final_from(hour: datetime, horizon: timedelta) -> datetime:
    """When nothing about ``hour``'s UTC day can change any more: every hour of the day has
    left the window (the last one 47 h after midnight), plus the grace, plus the processing
    horizon. An event its row cannot decide by then never will be: ``unresolved``."""
    return floor_day(hour) + DAY + WINDOW - HOUR + SETTLE_GRACE + horizon


def settlement_for(entry: LedgerEntry, outcome: EventOutcome) -> Settlement | None:
    """The ledger change an endpoint outcome means; None when it cannot be decided yet."""
    status = outcome.status
    if status is EventStatus.ACCEPTED:
        return Settlement(
            entry,
            LedgerState.ACCEPTED,
            {
                "UsageEventId": outcome.usage_event_id or "",
                "AcceptedQuantity": _quantity(outcome.accepted_quantity, entry.quantity),
                # The day's arithmetic may then rule out any duplicate of it (daily_sums).
                "SentOnce": entry.opened_here and outcome.sends == 1,
            },
        )
    if status in (EventStatus.DUPLICATE_CONFIRMED, EventStatus.MISMATCH):
        state = (
            LedgerState.DUPLICATE_CONFIRMED
            if status is EventStatus.DUPLICATE_CONFIRMED
            else LedgerState.MISMATCH
        )
        return Settlement(
            entry,
            state,
            {
                "UsageEventId": outcome.usage_event_id or "",
                "AcceptedQuantity": _quantity(outcome.accepted_quantity, entry.quantity),
                "Reason": DUPLICATE_REASON,
            },
        )
    if status in (EventStatus.DUPLICATE, EventStatus.EXPIRED, EventStatus.ERROR):
        return None  # decided from the day's sums (or Error: retried later)
    return Settlement(
        entry,
        LedgerState.REJECTED,
        {"Reason": outcome.reason or status.value, "Message": (outcome.message or "")[:1000]},
    )


def _quantity(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _refused(entry: LedgerEntry, parts: Sequence[LedgerEntry]) -> Settlement:
    """``entry``, refused ``ResourceNotActive``, as finally recorded: what of it no event
    carries (``Refused``), and the parts sent with their usage hours and how they ended."""
    refused = entry.quantity - math.fsum(part.quantity for part in parts if part.state.billed)
    went = ", ".join(
        f"{part.quantity!r} as {hour_key(part.hour)}: {part.state.value}" for part in parts
    )
    return Settlement(
        entry,
        LedgerState.REJECTED,
        {
            "Reason": EventStatus.RESOURCE_NOT_ACTIVE.value,
            "Refused": 0.0 if same_quantity(refused, 0.0) else refused,
            "Message": (
                "the resource is not Subscribed (cancelled): only usage of hours before the "
                f"cancellation is accepted, sent with its own hour; {refused!r} of "
                f"{entry.quantity!r} refused" + (f"; sent with usage hours: {went}" if went else "")
            )[:1000],
        },
    )


class Reporter:
    """Reports one work item at a time to the commerce endpoint; one per invocation (the
    client, account and pool it is given outlive it)."""

    def __init__(
        self,
        account: StorageAccount,
        client: CommerceClient,
        *,
        pool: Executor,
        clock: Callable[[], datetime] = utc_now,
        meters: ChargeableMeters | None = None,
        after_post: AfterPost | None = None,
        max_batch: int = MAX_BATCH,
        defer: Defer | None = None,
    ) -> None:
        self.account = account
        self.client = client
        self.clock = clock
        self.meters = meters or ChargeableMeters(account.settings)
        self.after_post = after_post
        self.max_batch = max_batch
        self.pool = pool
        self.defer = defer
        self.horizon = timedelta(hours=account.settings.commerce_processing_horizon_hours)

    def report(self, item: WorkItem) -> ReportResult:
        """Bring every event of ``item`` to a settled ledger state (or raise to be retried)."""
        hour = item.hour
        result = ReportResult(hour, resources=len(item.billing_resource_ids))
        sendable = can_send(hour, self.clock())
        # Resources the carry index lists may hold markers to fold: their hours are read
        # before opening; the others are opened blind (``Ledger.open``). One query, on the
        # pool while the charges are read.
        listing = self.pool.submit(CarryIndex(self.account).resources) if sendable else None
        charges = hour_charges(
            self.account, hour, None, item.billing_resource_ids, self.meters, self.pool
        )
        ledgers = {resource_id: Ledger(self.account, resource_id) for resource_id in charges}
        listed = set(listing.result()) if listing is not None else set()

        def open_events(resource_id: str) -> list[LedgerEntry]:
            owed = charges[resource_id]
            return ledgers[resource_id].open(
                hour,
                owed.plan_id,
                owed.quantities,
                sendable=sendable,
                no_markers=resource_id not in listed,
            )

        # Opening, posting and settling overlap, resource by resource, in key order: a
        # batch is posted as soon as every event in it is recorded pending (its resources'
        # open transactions committed), and a resource's outcomes are recorded (one
        # transaction, on the pool) as soon as its last event is answered, while later
        # batches are in flight. Batches are filled across resources exactly as if every
        # resource were opened first.
        resources = sorted(charges)
        opening = Lookahead(self.pool, open_events, resources, OPENS_AHEAD)
        opened: dict[str, list[LedgerEntry]] = {}
        undecided: list[Undecided] = []
        # Refused ResourceNotActive (or found so by a delivery before): sent with usage hours.
        inactive: list[LedgerEntry] = []
        # Outcomes are recorded before any exception leaves: pending was written first, so
        # an outcome lost to a crash is only a re-send that comes back Duplicate.
        decided: list[Settlement] = []
        settling: list[Future[int]] = []
        try:
            unposted: list[LedgerEntry] = []
            for resource_id, found in opening:
                opened[resource_id] = found
                inactive += [entry for entry in found if entry.sent_as]
                found = [entry for entry in found if not entry.sent_as]
                if not sendable:
                    undecided += [(entry, False) for entry in found]
                    continue
                unposted += found
                while len(unposted) >= self.max_batch or (
                    unposted and resource_id == resources[-1]
                ):
                    batch, unposted = unposted[: self.max_batch], unposted[self.max_batch :]
                    undecided += self._post(batch, decided, result, inactive)
                    # Every opened resource with no event left to post is answered in full.
                    waiting = {entry.resource_id for entry in unposted}
                    ready = [s for s in decided if s.entry.resource_id not in waiting]
                    decided = [s for s in decided if s.entry.resource_id in waiting]
                    settling += self._settle_async(ready, ledgers, result)
        finally:
            # No open may still be writing when this delivery ends (or raises).
            wait(opening.submitted)
            settling += self._settle_async(decided, ledgers, result)
            wait(settling)
            for settled in settling:
                settled.result()
        result.carried_in = sum(len(e.carried_from) for found in opened.values() for e in found)
        if inactive:
            undecided += self._send_with_usage_hours(inactive, ledgers, result)
        if undecided:
            result.waiting = self._resolve(undecided, ledgers, result)
        if sendable:
            carrying = [
                resource_id
                for resource_id, found in opened.items()
                if not charges[resource_id].quantities or any(e.carried_from for e in found)
            ]
            list(self.pool.map(lambda r: ledgers[r].carry_index.forget_if_settled(ledgers[r]),
                               carrying))  # fmt: skip
        log.info(result.summary_line())
        if result.states["pending"]:
            raise TransientError(
                f"{result.states['pending']} event(s) of {hour_key(hour)} still pending "
                "(the endpoint kept answering Error); retrying later",
                code="BillingPending",
            )
        if result.waiting:
            self._wait(item, result)
        return result

    def _wait(self, item: WorkItem, result: ReportResult) -> None:
        """Events wait for their day's rows: the item comes back when the first of them may
        be decided (``defer``), or, without a way to defer, it is retried (raises)."""
        until = min(wait.until for wait in result.waiting)
        if self.defer is None:
            raise TransientError(
                f"{len(result.waiting)} event(s) of {hour_key(item.hour)} are neither proved "
                f"accepted nor safely not accepted yet (look again at {until:%Y-%m-%dT%H:%M}Z); "
                "retrying later",
                code="BillingUndecided",
            )
        self.defer(item, max(until - self.clock(), timedelta(minutes=1)))
        result.deferred_until = until
        log.warning(
            "report_to_azure: %d event(s) of %s wait for their day's rows; the item comes "
            "back at %s",
            len(result.waiting),
            hour_key(item.hour),
            f"{until:%Y-%m-%dT%H:%M}Z",
        )

    def _post(
        self,
        batch: list[LedgerEntry],
        decided: list[Settlement],
        result: ReportResult,
        inactive: list[LedgerEntry] | None = None,
    ) -> list[Undecided]:
        """Post one batch, adding its outcomes to ``decided``; returns the undecided ones.
        Events refused ``ResourceNotActive`` go to ``inactive`` when given (their usage may
        still be sent with its own hours), else they are rejected."""
        result.calls += 1
        result.posted += len(batch)
        try:
            outcomes = self.client.post_batch([entry.event() for entry in batch])
        except CommerceUnavailableError as error:
            settled = [outcome for outcome in error.settled if isinstance(outcome, EventOutcome)]
            if self.after_post is not None:
                self.after_post(settled)
            self._decide(batch, settled, decided, result, inactive)
            raise
        except FinalRejectionError as error:
            if len(batch) > 1:
                # One invalid event is enough for the endpoint to refuse all of them: post
                # the halves, and so on down to single events, so only it is refused.
                log.warning(
                    "commerce refused a whole batch of %d events (%s); posting it in halves",
                    len(batch),
                    error,
                )
                result.split += 1
                half = (len(batch) + 1) // 2
                return self._post(batch[:half], decided, result, inactive) + self._post(
                    batch[half:], decided, result, inactive
                )
            log.error("commerce refused event %s: %s", batch[0].key, error)
            decided.append(
                Settlement(
                    batch[0],
                    LedgerState.REJECTED,
                    {"Reason": error.code, "Message": error.message[:1000]},
                )
            )
            return []
        if self.after_post is not None:
            self.after_post(outcomes)
        return self._decide(batch, outcomes, decided, result, inactive)

    def _decide(
        self,
        batch: list[LedgerEntry],
        outcomes: Sequence[EventOutcome],
        settlements: list[Settlement],
        result: ReportResult,
        inactive: list[LedgerEntry] | None = None,
    ) -> list[Undecided]:
        by_key = {outcome.event.key: outcome for outcome in outcomes}
        undecided: list[Undecided] = []
        for entry in batch:
            outcome = by_key.get(entry.key)
            if outcome is None:
                continue  # not answered (budget spent): still pending, the retry posts it
            if outcome.status is EventStatus.RESOURCE_NOT_ACTIVE and inactive is not None:
                inactive.append(entry)
                continue
            settlement = settlement_for(entry, outcome)
            if settlement is None:
                if outcome.status is EventStatus.ERROR:
                    result.states["pending"] += 1
                else:
                    undecided.append((entry, outcome.status is EventStatus.DUPLICATE))
            else:
                settlements.append(settlement)
        return undecided

    def _send_with_usage_hours(
        self, inactive: list[LedgerEntry], ledgers: dict[str, Ledger], result: ReportResult
    ) -> list[Undecided]:
        """Events refused ``ResourceNotActive``: their resource was cancelled, and the
        endpoint accepts its usage only "for the time that was before the SaaS subscription
        has been canceled" (Metering APIs FAQ), so only with that time. The usage of each
        refused event is split by the hour it belongs to (late usage is of earlier hours);
        every part whose hour is still inside the window and holds no event of ours for the
        dimension is recorded as a pending event of that hour (``Ledger.send_as``) and
        posted; what cannot be sent so (its hour taken or expired, carried usage, usage of
        hours after the cancellation) stays refused. Once every part is settled, the refused
        event is recorded ``rejected`` (Reason ``ResourceNotActive``) with the quantity no
        event carries (``Refused``) and where the rest went (``SentAs``): reconciliation
        names what was refused. Returns the parts' undecided outcomes."""
        now = self.clock()
        settlements: list[Settlement] = []
        moving: list[tuple[LedgerEntry, list[LedgerEntry]]] = []
        for entry in inactive:
            ledger = ledgers[entry.resource_id]
            if entry.sent_as:  # a delivery before recorded the parts: finish them
                found = [
                    ledger.get(parse_hour_key(key), entry.dimension) for key, _ in entry.sent_as
                ]
                moving.append((entry, [part for part in found if part is not None]))
                continue
            result.not_active += 1
            parts = self._movable_parts(entry, ledger, now)
            if not parts:
                settlements.append(_refused(entry, ()))
                continue
            recorded = ledger.send_as(entry, parts)
            if recorded is None:  # another delivery changed it, or took one of the hours
                result.states["pending"] += 1  # posted again by the retry, decided again
                continue
            moving.append(recorded)
            result.sent_with_usage_hours += len(recorded[1])
        pending = [
            part for _, parts in moving for part in parts if part.state is LedgerState.PENDING
        ]
        # A part whose hour left the window meanwhile is never posted again: its day's
        # sums decide whether the post before was accepted.
        undecided: list[Undecided] = [(p, False) for p in pending if not can_send(p.hour, now)]
        pending = [part for part in pending if can_send(part.hour, now)]
        decided: list[Settlement] = []
        try:
            for start in range(0, len(pending), self.max_batch):
                undecided += self._post(pending[start : start + self.max_batch], decided, result)
        finally:
            self._settle(decided, ledgers, result)
        for entry, sent in moving:
            ledger = ledgers[entry.resource_id]
            ended = [ledger.get(part.hour, part.dimension) or part for part in sent]
            if all(part.state.final for part in ended):
                settlements.append(_refused(entry, ended))
        self._settle(settlements, ledgers, result)
        return undecided

    def _movable_parts(
        self, entry: LedgerEntry, ledger: Ledger, now: datetime
    ) -> dict[datetime, float]:
        """The parts of ``entry``'s own usage that may be sent with their own hours: hours
        before its hour, still inside the window, holding no event of ours for the
        dimension. Carried-in usage is older than the window by construction."""
        if entry.own_quantity <= 0:
            return {}
        parts = usage_hour_parts(
            self.account, entry.hour, entry.resource_id, entry.dimension, self.meters, self.pool
        )
        if not same_quantity(math.fsum(parts.values()), entry.own_quantity):
            log.error(
                "billing event %s %s %s: its rows (%r) no longer add up to what was sent (%r); "
                "nothing of it is sent with its usage hours",
                entry.resource_id,
                entry.dimension,
                hour_key(entry.hour),
                math.fsum(parts.values()),
                entry.own_quantity,
            )
            return {}
        movable = {
            hour: quantity
            for hour, quantity in parts.items()
            if hour < entry.hour and can_send(hour, now) and quantity > 0
        }
        taken = {hour for hour in movable if ledger.get(hour, entry.dimension) is not None}
        return {hour: q for hour, q in movable.items() if hour not in taken}

    def _settle(
        self, settlements: list[Settlement], ledgers: dict[str, Ledger], result: ReportResult
    ) -> None:
        settling = self._settle_async(settlements, ledgers, result)
        wait(settling)
        for settled in settling:
            settled.result()

    def _settle_async(
        self, settlements: list[Settlement], ledgers: dict[str, Ledger], result: ReportResult
    ) -> list[Future[int]]:
        """Record ``settlements`` on the pool, one transaction per resource; the caller
        waits for the returned futures (their exceptions are the writes' failures)."""
        by_resource: dict[str, list[Settlement]] = defaultdict(list)
        for settlement in settlements:
            by_resource[settlement.entry.resource_id].append(settlement)
            result.states[settlement.state.value] += 1
        at = self.clock()
        return [
            self.pool.submit(ledgers[r].settle, found, at=at) for r, found in by_resource.items()
        ]

    def _resolve(
        self, undecided: list[Undecided], ledgers: dict[str, Ledger], result: ReportResult
    ) -> list[Waiting]:
        """Decide events no POST answer settled, from their day's sums at the endpoint, and
        return those whose decision must wait.

        Reads in the order daily_sums relies on: each resource's ledger day, then the
        endpoint's rows of the day (only the pairs decided here matter), then the ledger day
        again. Proved accepted: settled at once. Proved absent: carried forward once the
        processing horizon has passed since it could last have been accepted
        (:func:`decided_not_accepted_from`), else it waits. Neither: it waits, and is
        ``unresolved`` once its day is final (:func:`day_final_from`). One read per UTC day
        (the events of a refused cancelled resource's usage hours may be of another day).
        """
        days: dict[datetime, list[Undecided]] = defaultdict(list)
        for found in undecided:
            days[floor_day(found[0].hour)].append(found)
        return [
            waiting
            for day, found in sorted(days.items())
            for waiting in self._resolve_day(day, found, ledgers, result)
        ]

    def _resolve_day(
        self,
        day: datetime,
        undecided: list[Undecided],
        ledgers: dict[str, Ledger],
        result: ReportResult,
    ) -> list[Waiting]:
        """``_resolve`` for the events of one UTC day."""
        now = self.clock()
        resources = sorted({entry.resource_id for entry, _ in undecided})

        def day_entries(resource_id: str) -> list[LedgerEntry]:
            return ledgers[resource_id].entries(day, day + DAY - HOUR)

        before = dict(zip(resources, self.pool.map(day_entries, resources), strict=True))
        read = self.client.daily_usage(
            day, day, needed={(entry.resource_id, entry.dimension) for entry, _ in undecided}
        )
        totals = day_totals(read.rows)
        after = dict(zip(resources, self.pool.map(day_entries, resources), strict=True))
        settlements: list[Settlement] = []
        waiting: list[Waiting] = []
        for entry, known_billed in undecided:
            blind = read.blind_to(entry.resource_id, entry.dimension)
            if blind is not None:
                verdict, why = Verdict.UNKNOWN, blind
            else:
                verdict, why = day_verdict(
                    entry,
                    known_billed,
                    before[entry.resource_id],
                    after[entry.resource_id],
                    totals.get(endpoint_key((entry.resource_id, entry.dimension, day))),
                    now=now,
                    horizon=self.horizon,
                )
            absent_from = decided_not_accepted_from(entry.hour, self.horizon)
            final_from = day_final_from(entry.hour, self.horizon)
            if verdict is Verdict.ACCEPTED:
                settlements.append(
                    Settlement(
                        entry,
                        LedgerState.DUPLICATE_CONFIRMED,
                        {
                            "UsageEventId": "",  # the daily rows name no event
                            "AcceptedQuantity": entry.quantity,
                            "Reason": "DailySums",
                            "Message": why[:1000],
                        },
                    )
                )
            elif verdict is Verdict.NOT_ACCEPTED and now >= absent_from:
                settlements.append(
                    Settlement(
                        entry,
                        LedgerState.EXPIRED,
                        {"Reason": "Expired", "Message": f"not accepted ({why})"[:1000]},
                    )
                )
            elif now >= final_from:
                log.error(
                    "billing event %s %s %s cannot be decided from its day's sums, and its "
                    "day can no longer change; recorded unresolved (never carried forward): %s",
                    entry.resource_id,
                    entry.dimension,
                    hour_key(entry.hour),
                    why,
                )
                settlements.append(
                    Settlement(
                        entry,
                        LedgerState.UNRESOLVED,
                        {"Reason": "Undecidable", "Message": why[:1000]},
                    )
                )
            else:
                absent = verdict is Verdict.NOT_ACCEPTED
                recheck = now + max(RECHECK, self.horizon / 4)
                until = absent_from if absent else min(recheck, final_from)
                reason = WAIT_HORIZON if absent else WAIT_UNDECIDED
                log.warning(
                    "billing event %s %s %s not decided yet (%s; waits until %s): %s",
                    entry.resource_id,
                    entry.dimension,
                    hour_key(entry.hour),
                    verdict.value,
                    f"{until:%Y-%m-%dT%H:%M}Z",
                    why,
                )
                waiting.append(Waiting(entry.key, reason, until, why))
        self._settle(settlements, ledgers, result)
        return waiting


class Lookahead(Generic[Found]):
    """``work(key)`` of each key on ``pool``, yielded in key order, at most ``ahead`` keys
    submitted beyond the one being waited for.

    The pool is shared by the work items that run at once: submitting all of an item's work
    up front queues it behind everything submitted before, and an item whose first open waits
    behind another's last cannot post. A bounded lookahead interleaves the items' opens.
    """

    def __init__(
        self, pool: Executor, work: Callable[[str], Found], keys: Sequence[str], ahead: int
    ) -> None:
        self._pool, self._work, self._keys, self._ahead = pool, work, keys, ahead
        self.submitted: list[Future[Found]] = []

    def __iter__(self) -> Iterator[tuple[str, Found]]:
        for index, key in enumerate(self._keys):
            # Keep ``ahead`` keys beyond this one submitted, then wait for this one.
            while len(self.submitted) <= min(index + self._ahead, len(self._keys) - 1):
                self.submitted.append(
                    self._pool.submit(self._work, self._keys[len(self.submitted)])
                )
            yield key, self.submitted[index].result()


def commerce_client(
    settings: Settings, token_provider: TokenProvider | None = None, **options: Any
) -> CommerceClient:
    """The commerce client the settings describe (``options`` go to CommerceClient).

    Pass the app's ``token_provider`` so its cached token is reused across invocations.
    """
    provider = token_provider_for(settings) if token_provider is None else token_provider
    return CommerceClient(
        settings.commerce_base_url,
        provider,
        proxies=proxies_for(settings.commerce_base_url, settings),
        verify=ca_bundle(settings),
        **options,
    )


def report_message(
    body: bytes | str,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    client: CommerceClient | None = None,
    after_post: AfterPost | None = None,
    account: StorageAccount | None = None,
    pool: Executor | None = None,
    defer: Defer | None = None,
) -> ReportResult:
    """The queue function's work: decode the item, report it (BadInputError if malformed).

    The function app passes its long-lived ``client``, ``account`` and ``pool`` (so items
    reuse the endpoint's connections and each pool thread keeps its storage clients between
    invocations); without them this call builds its own. ``defer``: how an item whose
    events wait for their day's rows comes back (the app sends it to the queue, invisible
    until then); without it such an item raises to be retried.
    """
    item = WorkItem.from_body(body)
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(commerce_client(settings))
        if pool is None:
            pool = stack.enter_context(
                ThreadPoolExecutor(LEDGER_PARALLELISM, thread_name_prefix="billing")
            )
        reporter = Reporter(
            account or StorageAccount(settings),
            client,
            pool=pool,
            clock=clock,
            after_post=after_post,
            defer=defer,
        )
        return reporter.report(item)
