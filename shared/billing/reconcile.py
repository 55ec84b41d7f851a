"""Reconciliation: what was collected, what the ledger says, what the endpoint accepted.

Three independent sides, each compared at the grain it really has:

- storage, per event key (billing resource, dimension, reported hour): the chargeable rows
  summed again from the hourly partitions (``shared.billing.charges``);
- the ledger, per event key: its state, its own quantity, what was sent (own + carried in)
  and what the endpoint holds for it;
- the endpoint, per (billing resource, dimension, UTC day): the daily rows of
  ``GET /api/usageEvents`` (``shared.billing.daily_sums``), the only read it offers.

Per hour, the hour summary billing read (``shared.storage.hour_summary``) must equal the
rows summed again, exactly (``summary-differs``). Per hour, for the window's reported
hours, storage against the ledger: a key is in order
when storage's total equals the ledger's own quantity and the ledger holds it billed, or
carried forward into a key that is billed. Otherwise: ``unreported`` (collected, no ledger
record), ``storage-differs``, ``pending``, ``awaiting-carry`` (expired, waiting for a later
event), ``rejected`` (with the reason; for a cancelled resource, what of it was refused and
which parts went out with their usage hours: in order only when all of it did, billed),
``mismatch`` (the endpoint holds another quantity), ``carried-unbilled``, ``unresolved``
(posted, answer lost, its day's sums could not tell: it may or may not be billed, and is
never carried), ``carried-unresolved`` (carried into an event that is unresolved).

Per day, for every UTC day the window touches, whole (the endpoint's rows are whole days,
so the ledger's events of those days are read whole too), the ledger against the endpoint:
the events the ledger holds as billed, counted and their accepted quantities summed, must
equal the day's ``submittedCount`` and ``submittedQuantity``, and the day must be processed
as submitted. Otherwise: ``missing-at-endpoint``, ``unexpected-at-endpoint`` (the endpoint
holds events of a day the ledger billed nothing on), ``endpoint-differs`` (counts or sums),
``endpoint-unverifiable`` (the day counts more submissions than the ledger billed, and where
the endpoint counts duplicates too many combinations of them fit to check),
``endpoint-processing`` (``Submitted``: not processed yet), ``endpoint-mismatch``
(processed differs from submitted), ``endpoint-rejected``, ``endpoint-unreadable`` (a row
this client cannot parse: named, never guessed at; ``*`` when even its resource cannot be
read). A day holding ``unresolved``
events is not compared by count and sum: they are named one by one, and the day cannot be
told more exactly than they can.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.billing.charges import ChargeKey, range_charges
from shared.billing.commerce import CommerceClient
from shared.billing.daily_sums import (
    DayKey,
    DayTotal,
    ReconStatus,
    Unexplained,
    day_totals,
    explains,
    same_quantity,
)
from shared.billing.events import endpoint_key
from shared.billing.ledger import CarryIndex, Ledger, LedgerEntry, LedgerState
from shared.billing.reporter import known_of, surely_shown
from shared.core.hours import DAY, HOUR, floor_day, hour_key, parse_hour_key, utc_now
from shared.core.meters import ChargeableMeters
from shared.storage.account import StorageAccount
from shared.storage.hour_summary import read_hour_summaries

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Difference:
    """One key (an event key, or a day with ``day=True``) not in order; ``kind`` is stable
    (scripts match on it)."""

    kind: str
    resource_id: str
    dimension: str
    hour: datetime
    detail: str
    day: bool = False

    def line(self) -> str:
        when = f"{self.hour:%Y-%m-%d}   " if self.day else f"{self.hour:%Y-%m-%dT%H}Z"
        return f"{self.kind:<22} {when}  {self.resource_id}  {self.dimension}  {self.detail}"


@dataclass
class Reconciliation:
    first_hour: datetime
    last_hour: datetime
    keys: int = 0
    days: int = 0  # (resource, dimension, day) compared with the endpoint
    collected: float = 0.0
    billed: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary_line(self) -> str:
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))
        verdict = "in order" if self.ok else f"{len(self.differences)} difference(s)"
        first_day, last_day = floor_day(self.first_hour), floor_day(self.last_hour)
        return (
            f"reconcile {self.first_hour:%Y-%m-%dT%H}Z..{self.last_hour:%Y-%m-%dT%H}Z: "
            f"{self.keys} event keys, collected {self.collected:,.6f}; "
            f"{self.days} resource-dimension-days {first_day:%Y-%m-%d}..{last_day:%Y-%m-%d}, "
            f"accepted at the endpoint {self.billed:,.6f}; ledger: {states or 'empty'}; "
            f"{verdict}"
        )


def reconcile(
    account: StorageAccount,
    client: CommerceClient,
    first_hour: datetime,
    last_hour: datetime,
    *,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> Reconciliation:
    """Compare storage, ledger and endpoint for reported hours ``first_hour``..``last_hour``
    (and, with the endpoint, the whole UTC days they fall in), as of ``now`` (events
    settled within the processing horizon before it may not be in the endpoint's rows)."""
    meters = ChargeableMeters(account.settings)
    moment = utc_now() if now is None else now
    horizon = timedelta(hours=account.settings.commerce_processing_horizon_hours)

    def storage_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("storage: subscriptions read", done, total)

    owed, _ = range_charges(account, first_hour, last_hour, meters, progress=storage_progress)
    first_day, last_day = floor_day(first_hour), floor_day(last_hour)
    read = client.daily_usage(first_day, last_day)
    endpoint = day_totals(read.rows)
    # The endpoint's rows are matched to our resources without case (``endpoint_key``); a
    # resource only the endpoint names is read (and shown) as its rows spell it.
    ours = {key[0] for key in owed} | set(CarryIndex(account).resources())
    spelled = {resource_id.casefold(): resource_id for resource_id in sorted(ours)}
    for total in endpoint.values():
        spelled.setdefault(total.resource_id.casefold(), total.resource_id)
    resources = sorted(set(spelled.values()))
    ledger: dict[ChargeKey, LedgerEntry] = {}
    for done, resource_id in enumerate(resources, start=1):
        for recorded in Ledger(account, resource_id).entries(first_day, last_day + DAY - HOUR):
            ledger[recorded.key] = recorded
        if progress is not None:
            progress("ledger: billing resources read", done, len(resources))

    result = Reconciliation(first_hour, last_hour)
    in_window = {key: entry for key, entry in ledger.items() if first_hour <= key[2] <= last_hour}
    keys = sorted(set(owed) | set(in_window))
    result.keys = len(keys)
    result.collected = math.fsum(owed.values())
    for key in keys:
        entry = in_window.get(key)
        if entry is not None:
            result.states[entry.state.value] = result.states.get(entry.state.value, 0) + 1
        for kind, detail in _check_hour(account, owed.get(key), entry, ledger):
            result.differences.append(Difference(kind, key[0], key[1], key[2], detail))

    for kind, key, detail in _check_summaries(account, first_hour, last_hour, owed):
        result.differences.append(Difference(kind, key[0], key[1], key[2], detail))

    billed_by_day: dict[DayKey, list[LedgerEntry]] = defaultdict(list)
    unresolved_by_day: dict[DayKey, int] = defaultdict(int)
    shown: dict[DayKey, DayKey] = {}
    for (resource_id, dimension, hour), entry in ledger.items():
        day_key = endpoint_key((resource_id, dimension, floor_day(hour)))
        shown.setdefault(day_key, (resource_id, dimension, floor_day(hour)))
        if entry.state.billed:
            billed_by_day[day_key].append(entry)
        elif entry.state is LedgerState.UNRESOLVED:
            unresolved_by_day[day_key] += 1
    days = sorted(set(billed_by_day) | set(endpoint))
    result.days = len(days)
    result.billed = math.fsum(total.submitted for total in endpoint.values())
    for (resource, dimension), why in sorted(read.unreadable.items()):
        result.differences.append(
            Difference(
                "endpoint-unreadable",
                spelled.get(resource, resource),
                dimension,
                first_day,
                f"{why}: the days {first_day:%Y-%m-%d}..{last_day:%Y-%m-%d} of this pair "
                "cannot be compared",
                day=True,
            )
        )
    for day_key in days:
        found = endpoint.get(day_key)
        name = shown.get(day_key) or (
            spelled[day_key[0]],
            found.dimension if found is not None else day_key[1],
            day_key[2],
        )
        for kind, detail in _check_day(
            billed_by_day.get(day_key, []), found, unresolved_by_day[day_key], moment, horizon
        ):
            result.differences.append(Difference(kind, *name, detail, day=True))
    return result


def _check_summaries(
    account: StorageAccount,
    first_hour: datetime,
    last_hour: datetime,
    owed: dict[ChargeKey, float],
) -> list[tuple[str, ChargeKey, str]]:
    """The hour summaries billing read, against the rows summed again: exactly equal (both
    are the correctly rounded sum of the same quantities), or ``summary-differs``. Hours without a
    complete summary were billed from their rows and have nothing to compare."""
    found: list[tuple[str, ChargeKey, str]] = []
    for hour, summary in read_hour_summaries(account, first_hour, last_hour).items():
        if summary is not None:
            summed = {
                (resource_id, dimension, hour): float(quantity)
                for resource_id, sums in summary.items()
                for dimension, quantity in sums.quantities.items()
            }
            from_rows = {key: value for key, value in owed.items() if key[2] == hour}
            for key in sorted(set(summed) | set(from_rows)):
                if summed.get(key) != from_rows.get(key):
                    found.append(
                        (
                            "summary-differs",
                            key,
                            f"summary {summed.get(key)!r}, rows {from_rows.get(key)!r}",
                        )
                    )
    return found


def _check_hour(
    account: StorageAccount,
    collected: float | None,
    entry: LedgerEntry | None,
    ledger: dict[ChargeKey, LedgerEntry],
) -> list[tuple[str, str]]:
    """Storage against the ledger for one event key."""
    if entry is None:
        return [("unreported", f"collected {collected!r}, no ledger record")] if collected else []
    found: list[tuple[str, str]] = []
    if not same_quantity(entry.own_quantity, collected or 0.0):
        found.append(
            ("storage-differs", f"collected {collected or 0.0!r}, ledger {entry.own_quantity!r}")
        )
    state = entry.state
    if state is LedgerState.PENDING:
        found.append(("pending", f"quantity {entry.quantity!r} not settled yet"))
    elif state is LedgerState.EXPIRED:
        found.append(("awaiting-carry", f"expired; {entry.quantity!r} waits for a later event"))
    elif state is LedgerState.REJECTED:
        if not (entry.refused is not None and same_quantity(entry.refused, 0.0)):
            found.append(("rejected", f"{entry.reason}: {entry.message or ''}".strip()))
        # else: refused only as a whole; every part went out with its usage hour, billed
    elif state is LedgerState.MISMATCH:
        found.append(
            ("mismatch", f"we sent {entry.quantity!r}, endpoint holds {entry.accepted_quantity!r}")
        )
    elif state is LedgerState.UNRESOLVED:
        found.append(
            (
                "unresolved",
                f"sent {entry.quantity!r}, may or may not be billed: {entry.message or ''}",
            )
        )
    elif state is LedgerState.CARRIED_FORWARD:
        into = _carried_into(account, entry.key, entry, ledger)
        if into is not None and into.state is LedgerState.UNRESOLVED:
            found.append(
                (
                    "carried-unresolved",
                    f"carried into {hour_key(into.hour)}, unresolved: billed or not as it is",
                )
            )
        elif into is None or not into.state.billed:
            shown = "nothing" if into is None else into.state.value
            found.append(("carried-unbilled", f"carried into {entry.carried_into}: {shown}"))
    return found


def _check_day(
    billed: list[LedgerEntry],
    total: DayTotal | None,
    unresolved: int,
    now: datetime,
    horizon: timedelta,
) -> list[tuple[str, str]]:
    """The ledger's billed events of one (resource, dimension, day) against the endpoint:
    in order when they make the day's count and sum under one reading of what the endpoint
    counts (``daily_sums.explains``), events settled within the processing horizon allowed
    not to be in the row yet."""
    count, held = len(billed), math.fsum(entry.held for entry in billed)
    ours = f"ledger: {count} billed event(s), {held!r}" + (
        f", {unresolved} unresolved" if unresolved else ""
    )
    shown = [known_of(entry) for entry in billed if surely_shown(entry, now, horizon)]
    maybe = [known_of(entry) for entry in billed if not surely_shown(entry, now, horizon)]
    if total is None:
        if shown:
            return [("missing-at-endpoint", f"{ours}; the endpoint has nothing that day")]
        return []  # nothing yet, and nothing it must show yet
    found: list[tuple[str, str]] = []
    if unresolved:
        pass  # its unresolved events are named one by one; the day cannot be more exact
    elif not count:
        found.append(("unexpected-at-endpoint", f"{total.describe()}; {ours}"))
    else:
        reading = explains(total, shown, maybe)
        if reading is Unexplained.NO_READING:
            found.append(("endpoint-differs", f"{total.describe()}; {ours}"))
        elif reading is Unexplained.TOO_MANY_WAYS:
            found.append(
                (
                    "endpoint-unverifiable",
                    f"{total.describe()}; {ours}: more submissions than billed events, in too "
                    "many ways to tell whether they are duplicates of ours",
                )
            )
    if ReconStatus.SUBMITTED.value in total.statuses:
        found.append(("endpoint-processing", f"{total.describe()}: not processed yet"))
    if ReconStatus.MISMATCH.value in total.statuses:
        found.append(("endpoint-mismatch", f"{total.describe()}: processed differs"))
    if ReconStatus.REJECTED.value in total.statuses:
        found.append(("endpoint-rejected", f"{total.describe()}: processing rejected it"))
    return found


def _carried_into(
    account: StorageAccount,
    key: ChargeKey,
    entry: LedgerEntry,
    ledger: dict[ChargeKey, LedgerEntry],
) -> LedgerEntry | None:
    if not entry.carried_into:
        return None
    into_hour = parse_hour_key(entry.carried_into)
    into = ledger.get((key[0], key[1], into_hour))
    if into is None:  # folded into an hour outside the window
        into = Ledger(account, key[0]).get(into_hour, key[1])
    if into is not None and into.state is LedgerState.CARRIED_FORWARD:
        return _carried_into(account, into.key, into, ledger)  # a chain of folds
    return into
