"""The billing ledger: one entity per event key, whose state changes only under its ETag.

Design invariant 4 ("billed exactly once in effect") rests on two facts: the endpoint keeps
at most one accepted event per (resource, dimension, hour) and answers a re-send with
``Duplicate`` plus what it accepted; and this ledger records an event as ``pending``, with
the exact quantity to send, BEFORE it is posted. A process that dies between the POST and
the ledger write leaves ``pending`` behind; the redelivered message re-posts the recorded
quantity (never a recomputed one) and learns from the ``Duplicate`` what was billed. An
event in a final state is never posted again, so replayed messages change nothing.

States::

    (none) ──> pending ──> accepted             (usageEventId, accepted quantity)
      │           ├──────> duplicate-confirmed  (accepted earlier, same quantity; or proved
      │           │                              accepted by the day's sums: Reason DailySums)
      │           ├──────> mismatch             (accepted earlier, OTHER quantity: reported
      │           │                              by reconciliation, never silently accepted)
      │           ├──────> rejected             (final status + the peer's reason; refused
      │           │                              ResourceNotActive: what of it was sent with
      │           │                              its usage hours, SentAs, and Refused)
      │           ├──────> unresolved           (posted, answer lost, window closed, and the
      │           │                              day's sums cannot tell: never carried, shown
      │           │                              by reconciliation)
      │           └──────> expired ──> carried-forward (into a later key: CarriedInto)
      └──> expired   (the hour left the 24-hour window before it was ever posted)

``expired`` is not final: it waits, with a carry marker, for the next event of the same
resource and dimension that can still be sent; that event's pending quantity includes the
expired one (``CarriedFrom`` lists the folded hours) and the fold is one entity-group
transaction: create the pending event, delete each marker under its ETag (the claim: two
runs can never fold the same hour twice), mark each folded event carried-forward.

A resource whose subscriptions stop using chargeable meters would never have a later
event to fold into, so the carry index (:class:`CarryIndex`, one partition of the same
table) lists the resources that hold markers; billing plans work for each of them every
hour until their markers are claimed. The index is derived from the markers: it is written
before and after a marker is (so no crash and no concurrent clean-up leaves a marker
unlisted) and an entry is removed only when no marker is left, under the ETag it was read
with (a marker written meanwhile rewrites the entry, so the removal fails).

Layout (the ``ledger`` table): one partition per billing resource (``PartitionKey`` =
``r`` + a hash of the resource id, which may hold characters keys forbid), so everything a
fold touches is in one partition and can commit atomically, and a resource's window of
hours is one RowKey range. Events: ``RowKey = {hour YYYYMMDDHH}_{dimension}``; carry
markers: ``RowKey = ~carry_{dimension}_{hour}`` (``~`` sorts after digits, so hour ranges
never read markers, and the markers of a resource are one short range); each hour's
guard, written with its first events: ``RowKey = ~opened_{hour}`` (see ``Ledger.open``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.billing.events import UsageEvent
from shared.core.errors import TransientError
from shared.core.hours import HOUR, as_utc, hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount

ROLE = "ledger"
# The Reason of an event settled by a Duplicate answer (the reporter writes it).
DUPLICATE_REASON = "Duplicate"
MARKER_PREFIX = "~carry_"
# An hour's guard (``Ledger.open``); "~o" sorts after every event key and marker.
GUARD_PREFIX = "~opened_"
MAX_TRANSACTION = 100
# Expired hours one event may fold (3 operations each, plus the event, within one
# transaction of 100); the rest wait for the next event.
MAX_CLAIMS_PER_EVENT = 30
ROUNDS = 6
_MARKER_END = MARKER_PREFIX[:-1] + chr(ord("_") + 1)  # just after every marker key
# The carry index's partition: "~" sorts after every resource partition ("r" + hex).
CARRY_INDEX_PARTITION = "~carries"
# Characters Table storage refuses in keys: / \ # ? and control characters.
_FORBIDDEN_IN_KEY = re.compile(r"[/\\#?\x00-\x1f]")

Entity = dict[str, Any]
Operation = tuple[str, Entity, dict[str, Any]]


class LedgerState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DUPLICATE_CONFIRMED = "duplicate-confirmed"
    MISMATCH = "mismatch"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CARRIED_FORWARD = "carried-forward"
    UNRESOLVED = "unresolved"

    @property
    def final(self) -> bool:
        """True when nothing will ever post this key again."""
        return self not in (LedgerState.PENDING, LedgerState.EXPIRED)

    @property
    def billed(self) -> bool:
        """True when the endpoint holds an accepted event for this key."""
        return self in (
            LedgerState.ACCEPTED,
            LedgerState.DUPLICATE_CONFIRMED,
            LedgerState.MISMATCH,
        )


def ledger_partition(resource_id: str) -> str:
    """The partition of a billing resource (resource ids may hold ``/``)."""
    return "r" + hashlib.blake2b(resource_id.encode("utf-8"), digest_size=10).hexdigest()


def event_row_key(hour: datetime, dimension: str) -> str:
    _check_dimension(dimension)
    return f"{hour_key(hour)}_{dimension}"


def marker_row_key(dimension: str, hour: datetime) -> str:
    return f"{MARKER_PREFIX}{dimension}_{hour_key(hour)}"


def guard_row_key(hour: datetime) -> str:
    return f"{GUARD_PREFIX}{hour_key(hour)}"


def _check_dimension(dimension: str) -> None:
    if not dimension or _FORBIDDEN_IN_KEY.search(dimension):
        raise ValueError(f"dimension {dimension!r} cannot be part of a table key")


@dataclass(frozen=True)
class LedgerEntry:
    """One event key's record. ``quantity`` is what is (or was) sent: own + carried in."""

    resource_id: str
    plan_id: str
    dimension: str
    hour: datetime
    state: LedgerState
    quantity: float
    own_quantity: float
    carried_from: tuple[str, ...] = ()
    carried_into: str | None = None
    usage_event_id: str | None = None
    accepted_quantity: float | None = None
    reason: str | None = None
    message: str | None = None
    etag: str | None = None
    # When the reporter settled it, by its clock (``SettledAt``; None before it was written).
    settled_at: datetime | None = None
    # A Duplicate answer came for it after another delivery had settled it (``DuplicateSeen``).
    duplicate_seen: bool = False
    # Refused because its resource was cancelled: the parts of it sent as events of their
    # own usage hours (``SentAs``: hour key -> quantity; see ``Ledger.send_as``).
    sent_as: tuple[tuple[str, float], ...] = ()
    # What of a rejected event no event carries (``Refused``; None: not recorded, all of it).
    refused: float | None = None
    # Accepted on the answer to its only send, by the delivery that created it (``SentOnce``).
    answered_first_send: bool = False
    # Created by the call that returned it (not stored, not part of the record's value): no
    # earlier delivery can have sent it.
    opened_here: bool = field(default=False, compare=False)

    @property
    def key(self) -> tuple[str, str, datetime]:
        return (self.resource_id, self.dimension, self.hour)

    @property
    def held(self) -> float:
        """What the endpoint holds for a billed entry: its answer's quantity, else ours."""
        return self.quantity if self.accepted_quantity is None else self.accepted_quantity

    @property
    def duplicated(self) -> bool:
        """True when a ``Duplicate`` answer proved a second send of it reached the endpoint."""
        return self.reason == DUPLICATE_REASON or self.duplicate_seen

    @property
    def sent_once(self) -> bool:
        """True when it is known to have reached the endpoint exactly once: accepted on the
        answer to its only send, made by the delivery that created it (no earlier send that
        timed out can arrive later as a duplicate), and no other delivery's send answered
        ``Duplicate`` since (:meth:`Ledger.settle` marks those)."""
        return (
            self.state is LedgerState.ACCEPTED
            and self.answered_first_send
            and not self.duplicate_seen
        )

    def event(self) -> UsageEvent:
        return UsageEvent(self.resource_id, self.plan_id, self.dimension, self.quantity, self.hour)

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any], etag: str | None = None) -> LedgerEntry:
        """The record an entity holds; ``etag`` for one just written (a read entity
        carries its own in its metadata)."""
        accepted = entity.get("AcceptedQuantity")
        settled_at = entity.get("SettledAt")
        return cls(
            resource_id=entity["ResourceId"],
            plan_id=entity.get("PlanId", ""),
            dimension=entity["Dimension"],
            hour=as_utc(entity["Hour"]),
            state=LedgerState(entity["State"]),
            quantity=float(entity["Quantity"]),
            own_quantity=float(entity.get("OwnQuantity", entity["Quantity"])),
            carried_from=tuple(json.loads(entity.get("CarriedFrom") or "[]")),
            carried_into=entity.get("CarriedInto") or None,
            usage_event_id=entity.get("UsageEventId") or None,
            accepted_quantity=None if accepted is None else float(accepted),
            reason=entity.get("Reason") or None,
            message=entity.get("Message") or None,
            etag=_etag(entity) if etag is None else etag,
            settled_at=None if settled_at is None else as_utc(settled_at),
            duplicate_seen=bool(entity.get("DuplicateSeen", False)),
            sent_as=tuple(
                (str(key), float(quantity))
                for key, quantity in json.loads(entity.get("SentAs") or "{}").items()
            ),
            refused=None if entity.get("Refused") is None else float(entity["Refused"]),
            answered_first_send=bool(entity.get("SentOnce", False)),
        )


@dataclass(frozen=True)
class CarryMarker:
    """An expired event waiting to be folded into a later one; deleting it is the claim."""

    dimension: str
    hour: datetime
    quantity: float
    plan_id: str
    etag: str | None


@dataclass(frozen=True)
class Settlement:
    """Move ``entry`` (pending) to ``state`` with ``fields`` (entity property names)."""

    entry: LedgerEntry
    state: LedgerState
    fields: Mapping[str, Any]


def _etag(entity: Mapping[str, Any]) -> str | None:
    """The ETag the SDK attaches to a read entity (``TableEntity.metadata``)."""
    metadata = getattr(entity, "metadata", None) or {}
    etag = metadata.get("etag")
    return None if etag is None else str(etag)


def _marker_of(row: Mapping[str, Any]) -> CarryMarker:
    return CarryMarker(
        row["Dimension"],
        as_utc(row["Hour"]),
        float(row["Quantity"]),
        row.get("PlanId", ""),
        _etag(row),
    )


def _result_etag(result: Any) -> str | None:
    etag = result.get("etag") if isinstance(result, Mapping) else None
    return None if etag is None else str(etag)


def _now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """The ledger partition of one billing resource."""

    def __init__(self, account: StorageAccount, resource_id: str) -> None:
        self._account = account
        self.resource_id = resource_id
        self.partition = ledger_partition(resource_id)
        self.carry_index = CarryIndex(account)

    @property
    def _table_name(self) -> str:
        return self._account.settings.table_name(ROLE)

    def _query(self, low: str, high: str, what: str) -> list[Entity]:
        def query() -> list[Entity]:
            table = self._account.table_named(self._table_name)
            try:
                return self._account.transport.query_entities(
                    table,
                    "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                    parameters={"pk": self.partition, "low": low, "high": high},
                )
            except ResourceNotFoundError:
                return []  # no ledger table yet: nothing recorded

        return call_with_retry(query, what=f"read ledger {what}")

    def entries(self, first_hour: datetime, last_hour: datetime) -> list[LedgerEntry]:
        """Every event of reported hours ``first_hour``..``last_hour``, in key order."""
        rows = self._query(hour_key(first_hour), hour_key(last_hour + HOUR), "window")
        return [LedgerEntry.from_entity(row) for row in rows]

    def hour(self, hour: datetime) -> dict[str, LedgerEntry]:
        """This resource's events of one reported hour, by dimension."""
        return {entry.dimension: entry for entry in self.entries(hour, hour)}

    def get(self, hour: datetime, dimension: str) -> LedgerEntry | None:
        def read() -> LedgerEntry | None:
            table = self._account.table_named(self._table_name)
            try:
                entity = table.get_entity(self.partition, event_row_key(hour, dimension))
            except ResourceNotFoundError:
                return None
            return LedgerEntry.from_entity(entity)

        return call_with_retry(read, what="read ledger event")

    def _open_state(self, hour: datetime) -> tuple[dict[str, LedgerEntry], list[CarryMarker]]:
        """One query: this hour's events by dimension, and the resource's carry markers."""

        def query() -> list[Entity]:
            table = self._account.table_named(self._table_name)
            try:
                return self._account.transport.query_entities(
                    table,
                    # The SDK substitutes @names split on spaces: keep one before ")".
                    "PartitionKey eq @pk and ((RowKey ge @low and RowKey lt @high ) or "
                    "(RowKey ge @mlow and RowKey lt @mhigh ))",
                    parameters={
                        "pk": self.partition,
                        "low": hour_key(hour),
                        "high": hour_key(hour + HOUR),
                        "mlow": MARKER_PREFIX,
                        "mhigh": _MARKER_END,
                    },
                )
            except ResourceNotFoundError:
                return []

        rows = call_with_retry(query, what="read ledger hour")
        events = [row for row in rows if not row["RowKey"].startswith(MARKER_PREFIX)]
        markers = [row for row in rows if row["RowKey"].startswith(MARKER_PREFIX)]
        return (
            {entry.dimension: entry for entry in map(LedgerEntry.from_entity, events)},
            [_marker_of(row) for row in markers],
        )

    def markers(self) -> list[CarryMarker]:
        """Expired events of this resource still waiting to be carried forward."""
        rows = self._query(MARKER_PREFIX, _MARKER_END, "markers")
        return [_marker_of(row) for row in rows]

    # -- opening events -----------------------------------------------------------------

    def open(
        self,
        hour: datetime,
        plan_id: str,
        owed: Mapping[str, float],
        *,
        sendable: bool,
        no_markers: bool = False,
    ) -> list[LedgerEntry]:
        """Record this hour's events and return those that are ``pending`` (to post).

        New keys become ``pending`` with their owed quantity plus any expired usage of the
        same dimension waiting to be carried (``sendable``), or ``expired`` with a marker
        when the hour can no longer be sent. Keys already recorded keep their record:
        a pending one is returned as recorded, a final or expired one is left alone.
        Races with another delivery of the same item are settled by re-reading: the
        loser's transaction fails as a whole and the winner's record is used.

        Every write of an hour's events also writes the hour's guard (``~opened_{hour}``,
        first, or in the same transaction). So when the caller knows no carry marker of
        this resource is waiting (``no_markers``: the carry index does not list it), a
        sendable hour with something owed is opened in one request, without reading it
        first: the guard is created with the events, in one transaction, which fails whole
        if anything of this hour was ever recorded (a duplicate item, a redelivery, a
        concurrent delivery), and the next round reads, as after a lost race. What a
        create could not meet otherwise (events of dimensions this delivery does not owe:
        a carry, or a dimension no longer chargeable) is thereby met too; with nothing
        owed the hour is always read (its only events may be carries).
        """
        blind = no_markers and sendable and len(owed) < MAX_TRANSACTION and any(owed.values())
        for round_number in range(ROUNDS):
            blind_round = blind and round_number == 0
            current: dict[str, LedgerEntry] = {}
            all_markers: list[CarryMarker] = []
            if not blind_round:
                current, all_markers = self._open_state(hour)
            markers = [m for m in all_markers if m.hour < hour] if sendable else []
            by_dimension: dict[str, list[CarryMarker]] = defaultdict(list)
            for marker in sorted(markers, key=lambda m: m.hour):
                by_dimension[marker.dimension].append(marker)
            pending: list[LedgerEntry] = []
            groups: list[list[Operation]] = []
            now = _now()  # one write, one time
            # Pending events of this hour too: one opened only to carry expired hours
            # (nothing owed of its own) must still be returned to be posted.
            waiting = {d for d, e in current.items() if e.state is LedgerState.PENDING}
            for dimension in sorted(set(owed) | set(by_dimension) | waiting):
                entry = current.get(dimension)
                if entry is not None:
                    if entry.state is LedgerState.PENDING:
                        pending.append(entry)
                    continue
                own = owed.get(dimension, 0.0)
                if sendable:
                    claimed = by_dimension[dimension][:MAX_CLAIMS_PER_EVENT]
                    if own == 0 and not claimed:
                        continue
                    plan = plan_id or (claimed[0].plan_id if claimed else "")
                    groups.append(self._open_group(hour, plan, dimension, own, claimed, now))
                elif own != 0:
                    groups.append(self._expire_new_group(hour, plan_id, dimension, own, now))
            if not groups:
                return pending
            expiring = any(group[0][1]["State"] == LedgerState.EXPIRED.value for group in groups)
            if expiring:
                self.carry_index.add(self.resource_id)
            # Blind, the guard is created in the events' one transaction; after a read it
            # is upserted as the first group (written alone first if the pack fails).
            guard: list[Operation] = (
                [("create", self._guard(hour, now), {})]
                if blind_round
                else [("upsert", self._guard(hour, now), {"mode": UpdateMode.REPLACE})]
            )
            guarded = self._submit_groups([guard, *groups], one_by_one=not blind_round)
            results = guarded[1:]
            if expiring:
                self.carry_index.add(self.resource_id)
            if all(result is not None for result in guarded):
                # Every group committed: the new pending events are as written, with the
                # ETags the transaction returned (no second read).
                for group, result in zip(groups, results, strict=True):
                    entity = group[0][1]
                    if entity["State"] == LedgerState.PENDING.value and result:
                        created = LedgerEntry.from_entity(entity, _result_etag(result[0]))
                        pending.append(replace(created, opened_here=True))
                return pending
            # Lost a race with another delivery: read what won and go again.
        raise TransientError(
            f"ledger of {self.resource_id}: events of {hour_key(hour)} still contended "
            f"after {ROUNDS} rounds",
            code="LedgerContention",
        )

    def _guard(self, hour: datetime, now: datetime) -> Entity:
        """The hour's guard: it exists once any event of the hour was ever written."""
        return {
            "PartitionKey": self.partition,
            "RowKey": guard_row_key(hour),
            "Hour": hour,
            "UpdatedAt": now,
        }

    def _entity(
        self,
        hour: datetime,
        plan_id: str,
        dimension: str,
        state: LedgerState,
        now: datetime,
        **fields: Any,
    ) -> Entity:
        return {
            "PartitionKey": self.partition,
            "RowKey": event_row_key(hour, dimension),
            "ResourceId": self.resource_id,
            "PlanId": plan_id,
            "Dimension": dimension,
            "Hour": hour,
            "State": state.value,
            "UpdatedAt": now,
            **fields,
        }

    def _open_group(
        self,
        hour: datetime,
        plan_id: str,
        dimension: str,
        own: float,
        claimed: Sequence[CarryMarker],
        now: datetime,
    ) -> list[Operation]:
        quantity = math.fsum([own, *(m.quantity for m in claimed)])
        entity = self._entity(
            hour,
            plan_id,
            dimension,
            LedgerState.PENDING,
            now,
            Quantity=quantity,
            OwnQuantity=own,
            CarriedFrom=json.dumps([hour_key(m.hour) for m in claimed]) if claimed else "[]",
        )
        operations: list[Operation] = [("create", entity, {})]
        for marker in claimed:
            operations.append(
                (
                    "delete",
                    {
                        "PartitionKey": self.partition,
                        "RowKey": marker_row_key(dimension, marker.hour),
                    },
                    {"etag": marker.etag, "match_condition": MatchConditions.IfNotModified},
                )
            )
            operations.append(
                (
                    "update",
                    {
                        "PartitionKey": self.partition,
                        "RowKey": event_row_key(marker.hour, dimension),
                        "State": LedgerState.CARRIED_FORWARD.value,
                        "CarriedInto": hour_key(hour),
                        "UpdatedAt": now,
                    },
                    {"mode": UpdateMode.MERGE},
                )
            )
        return operations

    def _marker(self, dimension: str, hour: datetime, quantity: float, plan_id: str) -> Entity:
        return {
            "PartitionKey": self.partition,
            "RowKey": marker_row_key(dimension, hour),
            "Dimension": dimension,
            "Hour": hour,
            "Quantity": quantity,
            "PlanId": plan_id,
        }

    def _expire_new_group(
        self, hour: datetime, plan_id: str, dimension: str, own: float, now: datetime
    ) -> list[Operation]:
        entity = self._entity(
            hour,
            plan_id,
            dimension,
            LedgerState.EXPIRED,
            now,
            Quantity=own,
            OwnQuantity=own,
            CarriedFrom="[]",
            Reason="Expired",
            Message="the hour left the 24-hour window before it was sent",
        )
        marker = self._marker(dimension, hour, own, plan_id)
        return [("create", entity, {}), ("create", marker, {})]

    # -- a cancelled resource's usage, sent with its own hours ---------------------------

    def send_as(
        self, entry: LedgerEntry, parts: Mapping[datetime, float]
    ) -> tuple[LedgerEntry, list[LedgerEntry]] | None:
        """Record that ``entry`` (pending, refused ``ResourceNotActive``) is sent as events
        of its usage's own hours: ``parts`` (usage hour -> quantity), each a new pending
        event of this resource and dimension (own quantity 0, ``CarriedFrom`` the refused
        hour), and ``SentAs`` on ``entry``, which stays pending until they are settled.

        One transaction, under ``entry``'s ETag, creating each new event and upserting its
        hour's guard: so a crash leaves either nothing or everything (a redelivery finds
        ``SentAs`` and posts the parts), and an hour already holding an event of the
        dimension fails it whole. Returns ``entry`` as now recorded and the new events, or
        None when it failed (the caller reads again).
        """
        if not parts or len(parts) > MAX_CLAIMS_PER_EVENT:
            raise ValueError(f"1 to {MAX_CLAIMS_PER_EVENT} parts, not {len(parts)}")
        stamp = _now()
        sent_as = {hour_key(hour): quantity for hour, quantity in sorted(parts.items())}
        operations: list[Operation] = [
            (
                "update",
                {
                    "PartitionKey": self.partition,
                    "RowKey": event_row_key(entry.hour, entry.dimension),
                    "SentAs": json.dumps(sent_as),
                    "UpdatedAt": stamp,
                },
                {
                    "mode": UpdateMode.MERGE,
                    "etag": entry.etag,
                    "match_condition": MatchConditions.IfNotModified,
                },
            )
        ]
        created: list[Entity] = []
        for hour, quantity in sorted(parts.items()):
            operations.append(("upsert", self._guard(hour, stamp), {"mode": UpdateMode.REPLACE}))
            event = self._entity(
                hour,
                entry.plan_id,
                entry.dimension,
                LedgerState.PENDING,
                stamp,
                Quantity=quantity,
                OwnQuantity=0.0,
                CarriedFrom=json.dumps([hour_key(entry.hour)]),
            )
            operations.append(("create", event, {}))
            created.append(event)
        results = self._transact(operations)
        if results is None:
            return None
        recorded = replace(entry, etag=_result_etag(results[0]), sent_as=tuple(sent_as.items()))
        return recorded, [
            replace(
                LedgerEntry.from_entity(event, _result_etag(results[2 + 2 * index])),
                opened_here=True,
            )
            for index, event in enumerate(created)
        ]

    # -- settling -----------------------------------------------------------------------

    def settle(self, settlements: Iterable[Settlement], *, at: datetime | None = None) -> int:
        """Apply outcomes to pending events, each guarded by the ETag it was read with.

        An event someone else settled meanwhile keeps that record (its ETag no longer
        matches): final states are never overwritten. ``at``: the settling clock's time,
        kept as ``SettledAt`` (when the endpoint's daily row must show the event, the
        processing horizon later). Returns how many were applied.
        """
        groups: list[list[Operation]] = []
        settlements_list = list(settlements)
        now = _now()  # one write, one time
        stamp: Entity = {} if at is None else {"SettledAt": as_utc(at)}
        for settlement in settlements_list:
            entry = settlement.entry
            entity: Entity = {
                "PartitionKey": self.partition,
                "RowKey": event_row_key(entry.hour, entry.dimension),
                "State": settlement.state.value,
                "UpdatedAt": now,
                **stamp,
                **settlement.fields,
            }
            group: list[Operation] = [
                (
                    "update",
                    entity,
                    {
                        "mode": UpdateMode.MERGE,
                        "etag": entry.etag,
                        "match_condition": MatchConditions.IfNotModified,
                    },
                )
            ]
            if settlement.state is LedgerState.EXPIRED:
                marker = self._marker(entry.dimension, entry.hour, entry.quantity, entry.plan_id)
                group.append(("create", marker, {}))
            groups.append(group)
        expiring = any(s.state is LedgerState.EXPIRED for s in settlements_list)
        if expiring:
            self.carry_index.add(self.resource_id)
        results = self._submit_groups(groups)
        if expiring:
            self.carry_index.add(self.resource_id)
        lost_duplicates = [
            settlement.entry
            for settlement, result in zip(settlements_list, results, strict=True)
            if result is None and settlement.fields.get("Reason") == DUPLICATE_REASON
        ]
        if lost_duplicates:
            self._mark_duplicated(lost_duplicates)
        return sum(result is not None for result in results)

    def _mark_duplicated(self, entries: Sequence[LedgerEntry]) -> None:
        """Another delivery settled these events first (it posted them at the same time),
        but this one's answer was ``Duplicate``: a second send reached the endpoint. The
        winner's record stays; ``DuplicateSeen`` is added to it, so the day's arithmetic
        knows the event was sent twice (where the endpoint counts duplicates)."""
        self._submit_groups(
            [
                [
                    (
                        "update",
                        {
                            "PartitionKey": self.partition,
                            "RowKey": event_row_key(entry.hour, entry.dimension),
                            "DuplicateSeen": True,
                        },
                        {"mode": UpdateMode.MERGE},
                    )
                ]
                for entry in entries
            ]
        )

    def _submit_groups(
        self, groups: Sequence[list[Operation]], *, one_by_one: bool = True
    ) -> list[list[Any] | None]:
        """Commit groups packed into transactions; a failed pack is retried group by group
        (``one_by_one``; else its groups stay uncommitted).

        A group is atomic (one event and its markers); a group refused for a conflict
        (409 exists, 412 ETag) lost a race and is dropped: the caller re-reads.
        Returns, per group, the per-operation results (ETags) or None if not committed.
        """
        packs: list[list[int]] = [[]]
        size = 0  # operations in the last pack
        for index, group in enumerate(groups):
            if packs[-1] and size + len(group) > MAX_TRANSACTION:
                packs.append([])
                size = 0
            packs[-1].append(index)
            size += len(group)
        results: list[list[Any] | None] = [None] * len(groups)
        for pack in packs:
            if not pack:
                continue
            committed = self._transact([op for i in pack for op in groups[i]])
            if committed is not None:
                offset = 0
                for i in pack:
                    results[i] = committed[offset : offset + len(groups[i])]
                    offset += len(groups[i])
            elif one_by_one and len(pack) > 1:
                for i in pack:
                    results[i] = self._transact(groups[i])
        return results

    def _transact(self, operations: list[Operation]) -> list[Any] | None:
        """One entity-group transaction; None if storage refused it for a conflict."""

        def submit() -> list[Any]:
            table = self._account.table_named(self._table_name)
            try:
                return self._account.transport.submit_transaction(table, operations)
            except HttpResponseError as error:
                if error.status_code == 404 and "TableNotFound" in str(error):
                    self._account.create_table(self._table_name)
                    return self._account.transport.submit_transaction(table, operations)
                raise

        try:
            return call_with_retry(submit, what=f"write ledger {self.partition}")
        except TableTransactionError:
            return None
        except HttpResponseError as error:
            if error.status_code in (404, 409, 412):
                return None
            raise


class CarryIndex:
    """Billing resources that hold carry markers: the ``~carries`` partition of the ledger.

    One entity per resource (``RowKey`` = its ledger partition, ``ResourceId`` the id), so
    the work-item planner lists every resource with usage waiting to be carried in one
    query, whether or not the resource has usage of its own any more.
    """

    def __init__(self, account: StorageAccount) -> None:
        self._account = account

    @property
    def _table_name(self) -> str:
        return self._account.settings.table_name(ROLE)

    def add(self, resource_id: str) -> None:
        """List ``resource_id`` (idempotent: an upsert, which also renews the ETag)."""
        entity = {
            "PartitionKey": CARRY_INDEX_PARTITION,
            "RowKey": ledger_partition(resource_id),
            "ResourceId": resource_id,
            "UpdatedAt": _now(),
        }

        def upsert() -> None:
            table = self._account.table_named(self._table_name)
            try:
                table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            except ResourceNotFoundError:
                self._account.create_table(self._table_name)
                table.upsert_entity(entity, mode=UpdateMode.REPLACE)

        call_with_retry(upsert, what="write carry index")

    def resources(self) -> list[str]:
        """Every listed resource id, in key order."""

        def query() -> list[str]:
            table = self._account.table_named(self._table_name)
            try:
                rows = self._account.transport.query_entities(
                    table, "PartitionKey eq @pk", parameters={"pk": CARRY_INDEX_PARTITION}
                )
                return [str(row["ResourceId"]) for row in rows]
            except ResourceNotFoundError:
                return []

        return call_with_retry(query, what="read carry index")

    def forget_if_settled(self, ledger: Ledger) -> bool:
        """Unlist ``ledger``'s resource if it holds no marker; True when it was removed.

        The entry is read first and removed under that ETag after the markers were found
        gone: a marker written in between rewrites the entry (its writer upserts after the
        marker), so the removal fails and the resource stays listed.
        """
        row_key = ledger_partition(ledger.resource_id)

        def read() -> str | None:
            table = self._account.table_named(self._table_name)
            try:
                return _etag(table.get_entity(CARRY_INDEX_PARTITION, row_key))
            except ResourceNotFoundError:
                return None

        etag = call_with_retry(read, what="read carry index entry")
        if etag is None or ledger.markers():
            return False

        def delete() -> bool:
            table = self._account.table_named(self._table_name)
            try:
                table.delete_entity(
                    CARRY_INDEX_PARTITION,
                    row_key,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except HttpResponseError as error:
                if error.status_code in (404, 412):
                    return False
                raise
            return True

        return call_with_retry(delete, what="remove carry index entry")


def parse_carried(entry: LedgerEntry) -> list[datetime]:
    """The reported hours folded into ``entry``."""
    return [parse_hour_key(key) for key in entry.carried_from]
