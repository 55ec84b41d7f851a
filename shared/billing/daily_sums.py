"""The endpoint's daily rows, and what they prove about an event whose POST answer was lost.

``GET /api/usageEvents`` (spec/commerce-api.md, "Retrieving what was accepted") is the only
documented read of what the endpoint holds, and it answers **daily** rows: one per (UTC
usage day, resource, dimension, plan) with ``submittedQuantity``, ``processedQuantity``,
``submittedCount`` and ``reconStatus``. There is no per-hour, per-event read; the only
hour-level truth is the answer to a POST. So an event whose answer was lost (a crash after
the POST) and whose retry comes after the 24-hour window (a re-send is only ``Expired``)
can be decided by arithmetic over its (resource, dimension, day) alone:

    the day's count and sum = the events the ledger knows the endpoint holds (K)
                            + some subset X of those whose outcome it does not know (U)
                            [+ duplicates, if the endpoint counts them]

Every X that makes the count and the sum come out (relative tolerance 1e-9, as quantities
compare everywhere) is an explanation. An event is **accepted** when it is in every
explanation, **not accepted** when it is in none, and **cannot be told** otherwise: two
unknown events of the day with the same quantity and only one of them accepted; nothing
explains the day (the endpoint holds something the ledger cannot explain); more than
:data:`MAX_SUBSETS` steps to try.

What the docs leave open (spec/commerce-api.md, "What the docs do not promise") is held by
explaining the day under every reading at once, so a verdict holds whichever is true:

- whether the counts include **duplicates** (and expired sends; this client never posts an
  expired hour, so only duplicates matter): an explanation may add at least one more send
  of every event a ``Duplicate`` answer proved sent twice, and any number of sends of any
  held event, except one known to have reached the endpoint once (:class:`Known`);
- **when** an accepted event shows in its row: an event held but settled within the
  processing horizon may be missing from the row (``maybe_shown``: an explanation may count
  it or not). That an event is absent is only acted on once the horizon has passed since it
  could last have been accepted (the reporter's rule), because a row may lag.

The day is only trusted when every billing row of it is ``Accepted`` (processed equals
submitted): ``Submitted`` is not processed yet (its sums may still move: wait), ``Mismatch``
and ``Rejected`` say the endpoint's processing disagrees with what it accepted (an
operator's question, never an arithmetic input). ``TestHeaders`` and ``DryRun`` rows are not
billing and are left out. No row at all means nothing shown that day.

What makes it sound is the order of the caller's reads: the ledger's held events are read
BEFORE the endpoint (each was accepted before the endpoint answered, so it is in the sums
once the horizon has passed), and the day's other events AFTER it (an event is recorded
``pending`` before it is ever posted, so every event the endpoint could have counted is in
that second read; those that were not known held in the first read count as unknown).

Rows are read leniently (:func:`read_rows`): rows of pairs a decision does not need are
skipped unparsed, and a needed row that cannot be parsed makes its pair undecidable by that
read rather than failing it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import combinations
from typing import Any, TypeVar

from shared.billing.events import QUANTITY_REL_TOLERANCE, endpoint_key, endpoint_pair
from shared.core.hours import floor_day

K = TypeVar("K", bound=Hashable)
# Fitting subsets tried per (resource, dimension, day) before giving up as "cannot tell".
MAX_SUBSETS = 20_000
# Absolute tolerance next to the relative one: sums of tiny quantities still compare.
QUANTITY_ABS_TOLERANCE = 1e-9
# (billing resource, dimension, UTC day); as the endpoint compares it where it keys a total.
DayKey = tuple[str, str, datetime]


class ReconStatus(StrEnum):
    """``reconStatus`` of a daily row, as the fact sheet lists them."""

    SUBMITTED = "Submitted"  # not processed yet
    ACCEPTED = "Accepted"  # processed as submitted
    REJECTED = "Rejected"
    MISMATCH = "Mismatch"  # non-zero, but processed differs from submitted
    TEST_HEADERS = "TestHeaders"
    DRY_RUN = "DryRun"


NOT_BILLING = frozenset({ReconStatus.TEST_HEADERS.value, ReconStatus.DRY_RUN.value})


def same_quantity(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=QUANTITY_REL_TOLERANCE, abs_tol=QUANTITY_ABS_TOLERANCE)


@dataclass(frozen=True)
class DailyRow:
    """One row of GET usageEvents: a (day, resource, dimension, plan) and its sums."""

    day: datetime
    resource_id: str
    dimension: str
    plan_id: str
    submitted: float
    processed: float
    count: int
    status: str

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> DailyRow:
        """Parse one documented row; ValueError names what is missing or malformed."""
        try:
            moment = datetime.fromisoformat(str(raw["usageDate"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            raise ValueError("usageDate is missing or not a date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        strings = {}
        for name in ("usageResourceId", "dimension", "reconStatus"):
            value = raw.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} is missing or not a string")
            strings[name] = value
        count = raw.get("submittedCount")
        if isinstance(count, bool) or not isinstance(count, int | float) or count != int(count):
            raise ValueError("submittedCount is missing or not a whole number")
        return cls(
            day=floor_day(moment),
            resource_id=strings["usageResourceId"],
            dimension=strings["dimension"],
            plan_id=str(raw.get("planId") or ""),
            submitted=_number(raw, "submittedQuantity"),
            processed=_number(raw, "processedQuantity"),
            count=int(count),
            status=strings["reconStatus"],
        )

    @property
    def key(self) -> DayKey:
        """(resource, dimension, day) as the endpoint compares it (``endpoint_key``)."""
        return endpoint_key((self.resource_id, self.dimension, self.day))


# A row whose resource or dimension cannot be read may be about any (resource, dimension).
ANY_PAIR = ("*", "*")


@dataclass(frozen=True)
class DailyRead:
    """The rows of one GET usageEvents read (every page), as far as the caller needs them.

    ``rows``: the rows of the days asked that the caller needs, parsed. ``unreadable``: what
    was wrong with each row the caller may need but that could not be parsed, by the
    (resource, dimension) it is about as the endpoint compares it (:data:`ANY_PAIR` when
    even that cannot be read); those pairs cannot be told from this read.
    """

    rows: list[DailyRow]
    unreadable: dict[tuple[str, str], str]

    def blind_to(self, resource_id: str, dimension: str) -> str | None:
        """Why this read cannot tell this pair's day (None: it can)."""
        pair = endpoint_pair(resource_id, dimension)
        return self.unreadable.get(pair) or self.unreadable.get(ANY_PAIR)


def read_rows(
    raw_rows: Iterable[object],
    first_day: datetime,
    last_day: datetime,
    needed: Collection[tuple[str, str]] | None = None,
) -> DailyRead:
    """The rows of days ``first_day``..``last_day`` that matter, parsed leniently.

    ``needed``: the (resource, dimension) pairs the caller decides, compared as the
    endpoint compares them (None: every row matters, as for reconciliation). A row of
    another pair is skipped unparsed, so a row this client cannot read never stands in the
    way of a decision about another resource; a row that matters but cannot be parsed is
    named in ``DailyRead.unreadable``, never guessed at.
    """
    wanted = None if needed is None else {endpoint_pair(r, d) for r, d in needed}
    rows: list[DailyRow] = []
    unreadable: dict[tuple[str, str], str] = {}
    for raw in raw_rows:
        resource = raw.get("usageResourceId") if isinstance(raw, dict) else None
        dimension = raw.get("dimension") if isinstance(raw, dict) else None
        if isinstance(resource, str) and isinstance(dimension, str):
            pair = endpoint_pair(resource, dimension)
        else:
            pair = ANY_PAIR
        if wanted is not None and pair != ANY_PAIR and pair not in wanted:
            continue
        day = _day_of_row(raw)
        if day is not None and not first_day <= day <= last_day:
            continue  # another day (the read asks one more day than needed)
        try:
            if not isinstance(raw, dict):
                raise ValueError("a row is not a JSON object")
            row = DailyRow.from_wire(raw)
        except ValueError as error:
            unreadable.setdefault(pair, f"unreadable usageEvents row: {error}")
            continue
        if first_day <= row.day <= last_day:
            rows.append(row)
    return DailyRead(rows, unreadable)


def _day_of_row(raw: object) -> datetime | None:
    """The UTC day a raw row is about, when its ``usageDate`` can be read."""
    if not isinstance(raw, dict):
        return None
    try:
        moment = datetime.fromisoformat(str(raw["usageDate"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return floor_day(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def _number(raw: Mapping[str, Any], name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} is missing or not a finite number")
    return float(value)


@dataclass(frozen=True)
class DayTotal:
    """The endpoint's billing rows of one (resource, dimension, day), plans summed;
    ``resource_id`` and ``dimension`` as its rows spell them."""

    submitted: float
    processed: float
    count: int
    statuses: frozenset[str]
    resource_id: str = ""
    dimension: str = ""

    @property
    def settled(self) -> bool:
        """Every row processed exactly as submitted: the sums are final and agree."""
        return self.statuses == {ReconStatus.ACCEPTED.value}

    def describe(self) -> str:
        return (
            f"endpoint: {self.count} event(s), submitted {self.submitted!r}, processed "
            f"{self.processed!r}, {'/'.join(sorted(self.statuses))}"
        )


def day_totals(rows: Iterable[DailyRow]) -> dict[DayKey, DayTotal]:
    """Billing rows summed per (resource, dimension, day), keyed as the endpoint compares
    them (``endpoint_key``: look them up the same way); TestHeaders/DryRun left out."""
    parts: dict[DayKey, list[DailyRow]] = defaultdict(list)
    for row in rows:
        if row.status not in NOT_BILLING:
            parts[row.key].append(row)
    return {
        key: DayTotal(
            submitted=math.fsum(row.submitted for row in found),
            processed=math.fsum(row.processed for row in found),
            count=sum(row.count for row in found),
            statuses=frozenset(row.status for row in found),
            resource_id=found[0].resource_id,
            dimension=found[0].dimension,
        )
        for key, found in parts.items()
    }


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    NOT_ACCEPTED = "not-accepted"
    UNKNOWN = "unknown"


class CountingReading(StrEnum):
    """What a day's ``submittedCount`` / ``submittedQuantity`` count: not documented."""

    ACCEPTED_ONLY = "accepted events only"
    EVERY_SUBMISSION = "duplicates too"


@dataclass(frozen=True)
class Known:
    """An event of the day the ledger knows the endpoint holds.

    ``held``: the quantity the endpoint accepted for it; ``sent``: the quantity we sent (a
    duplicate of it counts that much where duplicates are counted); ``duplicated``: a
    ``Duplicate`` answer proved that a second send of it reached the endpoint; ``once``: it
    is known to have reached the endpoint exactly once (settled by the ``Accepted`` answer
    to the accepted send), so no duplicate of it can be counted.
    """

    held: float
    sent: float
    duplicated: bool = False
    once: bool = False


class _TooManyWaysError(Exception):
    """The search for explanations of a day ran past its budget."""


@dataclass
class _Budget:
    left: int

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _TooManyWaysError


def decide(
    total: DayTotal | None,
    shown: Sequence[Known],
    unknown: Mapping[K, float],
    *,
    maybe_shown: Sequence[Known] = (),
    known_billed: Collection[K] = (),
) -> tuple[dict[K, Verdict], str]:
    """What the day's sums prove about each event of ``unknown``, and why (for the ledger).

    ``total``: the endpoint's day (None: no row). ``shown``: the events the ledger knows the
    endpoint holds and whose every send is old enough to be in the row (read before the
    endpoint). ``maybe_shown``: events it holds that may not be in the row yet (accepted
    within the processing horizon). ``unknown``: every other event of the day that may have
    been accepted, key -> the quantity it was sent with (read after the endpoint).
    ``known_billed``: keys of ``unknown`` known to be held (a ``Duplicate`` without the
    accepted quantity); only explanations holding them fit.

    An explanation is a set X of ``unknown`` (the ones accepted) that makes the row's count
    and sum come out under one of the :class:`CountingReading`: ``shown`` + X + some of
    ``maybe_shown``, plus, where duplicates count, at least one more send of every
    ``duplicated`` event and any number of further sends of any held event not known to
    have been sent ``once`` (X included). An event is accepted when every explanation holds
    it, not accepted when none does, and cannot be told otherwise, or when nothing explains
    the day, or past :data:`MAX_SUBSETS` steps.
    """
    everything_unknown = dict.fromkeys(unknown, Verdict.UNKNOWN)
    if total is None:
        total = DayTotal(0.0, 0.0, 0, frozenset({ReconStatus.ACCEPTED.value}))
        where = "endpoint: nothing that day"
    else:
        where = total.describe()
    if not total.settled:
        return everything_unknown, f"{where}: not settled by the endpoint yet"
    keys = sorted(unknown, key=repr)
    ledger = (
        f"ledger: {len(shown)} held ({math.fsum(k.held for k in shown)!r})"
        + (f", {len(maybe_shown)} held but maybe not shown yet" if maybe_shown else "")
        + f", {len(keys)} unknown"
    )
    must = set(known_billed)
    budget = _Budget(MAX_SUBSETS)
    fitting: list[tuple[set[K], CountingReading]] = []
    free = total.count - len(shown)
    try:
        for size in range(len(must), min(len(keys), max(free, -1)) + 1):
            for chosen in combinations(keys, size):
                budget.spend()
                picked = set(chosen)
                if must <= picked:
                    reading = _explains(total, shown, maybe_shown, [unknown[k] for k in chosen],
                                        budget)  # fmt: skip
                    if reading is not None:
                        fitting.append((picked, reading))
    except _TooManyWaysError:
        return everything_unknown, f"{where}; {ledger}: too many ways to explain the day"
    if not fitting:
        return everything_unknown, f"{where}; {ledger}: nothing the ledger holds explains the day"
    in_all = set.intersection(*(picked for picked, _ in fitting))
    in_any = set.union(*(picked for picked, _ in fitting))
    verdicts = {
        key: (
            Verdict.ACCEPTED
            if key in in_all
            else Verdict.NOT_ACCEPTED
            if key not in in_any
            else Verdict.UNKNOWN
        )
        for key in keys
    }
    readings = sorted({reading.value for _, reading in fitting})
    how = (
        "one explanation fits" if len(fitting) == 1 else f"{len(fitting)} explanations fit"
    ) + f" (counting {' or '.join(readings)})"
    return verdicts, f"{where}; {ledger}; {how}"


class Unexplained(StrEnum):
    """Why the events the ledger holds do not explain a day (``explains``)."""

    NO_READING = "no reading of the counts explains it"
    TOO_MANY_WAYS = "too many ways to check"  # duplicates counted: the search gave up


def explains(
    total: DayTotal, shown: Sequence[Known], maybe_shown: Sequence[Known] = ()
) -> CountingReading | Unexplained:
    """The counting reading under which the events the ledger holds make the day's count
    and sum (``decide``'s explanations with nothing unknown), or why none was found: none
    does, or the search ran past :data:`MAX_SUBSETS` steps (a day where many duplicates
    may be counted cannot be checked: anything of their size fits)."""
    try:
        reading = _explains(total, shown, maybe_shown, [], _Budget(MAX_SUBSETS))
    except _TooManyWaysError:
        return Unexplained.TOO_MANY_WAYS
    return Unexplained.NO_READING if reading is None else reading


def _explains(
    total: DayTotal,
    shown: Sequence[Known],
    maybe_shown: Sequence[Known],
    accepted: Sequence[float],
    budget: _Budget,
) -> CountingReading | None:
    """The reading under which ``shown`` + ``accepted`` (+ extras) make the day's count and
    sum, or None. Accepted events only: some of ``maybe_shown`` (each at most once) fill
    the rest. Duplicates too: at least one more send of every duplicated ``shown`` event,
    then any sends of any held event, ``maybe_shown`` included (held or sent quantity)."""
    count = total.count - len(shown) - len(accepted)
    rest = total.submitted - math.fsum([*(k.held for k in shown), *accepted])
    tolerance = QUANTITY_REL_TOLERANCE * abs(total.submitted) + QUANTITY_ABS_TOLERANCE
    optional = [(k.held, False) for k in maybe_shown]  # in the row, or not yet
    if count >= 0 and _sums_to(optional, count, rest, tolerance, budget):
        return CountingReading.ACCEPTED_ONLY
    again = [k.sent for k in shown if k.duplicated]
    count -= len(again)
    rest -= math.fsum(again)
    repeatable = {k.sent for k in [*shown, *maybe_shown] if not k.once} | set(accepted)
    if count >= 0 and _sums_to(
        optional + [(value, True) for value in repeatable], count, rest, tolerance, budget
    ):
        return CountingReading.EVERY_SUBMISSION
    return None


def _sums_to(
    items: Sequence[tuple[float, bool]],
    count: int,
    target: float,
    tolerance: float,
    budget: _Budget,
) -> bool:
    """Whether ``count`` of ``items`` (value > 0, and whether it may be taken any number of
    times rather than at most once) add up to ``target`` within ``tolerance``; one budget
    step per choice tried."""
    ordered = sorted(items)
    largest = ordered[-1][0] if ordered else 0.0

    def search(index: int, count: int, target: float) -> bool:
        budget.spend()
        if count == 0:
            return abs(target) <= tolerance
        if index == len(ordered):
            return False
        value, again = ordered[index]
        if value * count > target + tolerance:
            return False  # every item from here on is at least this large
        if largest * count < target - tolerance:
            return False  # even the largest items fall short
        taken = search(index if again else index + 1, count - 1, target - value)
        return taken or search(index + 1, count, target)

    return search(0, count, target)
