"""The hour's chargeable sums: what each billing event of a reported hour is owed.

Billing's event key is (billing resource, dimension, reported hour), and its quantity is the
sum of the chargeable rows of every subscription billed to that resource in that hour. The
collector has every row of the hour in hand when it writes it, so it sums them there, once,
and stores the sums in the same durable step as the hour manifest (before the watermark
moves): billing then reads ONE partition per hour instead of every subscription's rows,
so its cost follows the billing resources, not the subscriptions (issue: billing costs
O(billing resources)).

Collection is cut into parts (one per slice of one usage source's hour: several stamps,
several workers), so each part writes its own sums and billing combines them. Layout (the
``summaries`` table): ``PartitionKey`` = the reported hour ``YYYYMMDDHH``; per part,
``RowKey`` = ``{part}|{hash of the resource id}_{dimension}`` with ``ResourceId``, ``PlanId``,
``Dimension``, ``Subscriptions``, ``Quantity`` (for people) and ``Exact`` (the part's exact
sum as a fraction ``n/d``: every float is a binary fraction, so parts add up exactly and the
combined quantity is the correctly rounded sum of every row, the same number ``math.fsum``
over the rows gives, whatever the cut), ``Digest`` (the resource's digest, what a work
item's read filters on) and ``Generation``; and two part markers, ``{part}|!~start`` and
``{part}|~done``, which sort before and after the part's sums, each holding how many keys
the part has and the same ``Generation``: a digest of the part's sums, so a write with
other sums is a new generation, named by its markers and carried by each of its sums.
Rewriting a part replaces it: in one entity-group transaction when it fits (100
operations), else its done marker is deleted, new sums upserted, keys no longer owed
deleted, both markers written; a crash in between leaves the part without a done marker.

When every part of the hour is written (every source has finished the hour), the hour
marker ``~complete`` is written listing the parts. Billing trusts a summary only when that
marker lists parts whose markers all match their rows; otherwise (an hour collected before
summaries existed, or one still being written) it reads the rows instead.

Derived data: reconciliation recomputes the sums from the rows and names any difference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import partial
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.core.hours import HOUR, hour_key
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import BillingTarget
from shared.storage.table_writer import MAX_BATCH, Entity, PartitionWriter

log = logging.getLogger(__name__)

ROLE = "summaries"
MARKER = "~complete"
PART_MARKER = "~done"
# Sorts before every digest (hex) as PART_MARKER sorts after ("~" in both: markers hold one,
# sums never): a read in key order meets a part's start marker, its sums, its done marker.
PART_START = "!~start"
_ITEM_FIELDS = [
    "RowKey",
    "ResourceId",
    "PlanId",
    "Dimension",
    "Exact",
    "Subscriptions",
    "Generation",
    "Keys",
    "Parts",
]
# A read that met a part being rewritten is read again this many times in all, then left
# to the rows (a rewrite is a transaction or a few, so the second read nearly always holds).
TORN_READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ResourceSums:
    """One billing resource's owed quantities of one reported hour, per dimension."""

    resource_id: str
    plan_id: str
    subscriptions: int
    # Exact sums; ``float()`` of one is the correctly rounded sum of its rows.
    quantities: Mapping[str, Fraction]


@dataclass
class HourSummaryBuilder:
    """Sums an hour's chargeable quantities per (billing resource, dimension)."""

    _parts: dict[tuple[str, str], Fraction] = field(default_factory=lambda: defaultdict(Fraction))
    _plans: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _subscriptions: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, target: BillingTarget, charges: Iterable[tuple[str, float]]) -> None:
        """One subscription's stored rows of the hour, billed to ``target``: the
        (dimension, quantity) of each chargeable row."""
        self._plans[target.resource_id].add(target.plan_id)
        self._subscriptions[target.resource_id] += 1
        for dimension, quantity in charges:
            self._parts[(target.resource_id, dimension)] += Fraction(quantity)

    def sums(self) -> dict[str, ResourceSums]:
        """Per billing resource: its plan, how many subscriptions, and the exact sums."""
        quantities: dict[str, dict[str, Fraction]] = defaultdict(dict)
        for (resource_id, dimension), total in self._parts.items():
            quantities[resource_id][dimension] = total
        return {
            resource_id: ResourceSums(
                resource_id,
                plan_of(resource_id, plans),
                self._subscriptions[resource_id],
                quantities.get(resource_id, {}),
            )
            for resource_id, plans in self._plans.items()
        }


def plan_of(resource_id: str, plans: set[str]) -> str:
    """One plan per resource and hour: the endpoint keys events without the plan."""
    plan = min(plans)
    if len(plans) > 1:
        log.warning(
            "billing resource %s has subscriptions on plans %s; billing under %s",
            resource_id,
            sorted(plans),
            plan,
        )
    return plan


def resource_digest(resource_id: str) -> str:
    """Where a billing resource's sums sit in a part (resource ids may hold characters keys
    forbid). Billing plans its work items in this order (``shared.billing.work_items``),
    so the resources of one item are neighbours here: one range read per part."""
    return hashlib.blake2b(resource_id.encode("utf-8"), digest_size=10).hexdigest()


def _row_key(part: str, resource_id: str, dimension: str) -> str:
    return f"{part}|{resource_digest(resource_id)}_{dimension}"


def _part_marker(part: str) -> str:
    return f"{part}|{PART_MARKER}"


def _part_start(part: str) -> str:
    return f"{part}|{PART_START}"


def write_hour_summary(
    account: StorageAccount, hour: datetime, part: str, sums: Mapping[str, ResourceSums]
) -> None:
    """Replace ``part``'s sums of reported ``hour`` with ``sums`` (see the module docstring).

    ``part`` names one slice of one source's hour (letters, digits, ``.`` and ``-``)."""
    partition = hour_key(hour)
    table_name = account.settings.table_name(ROLE)

    def entity(resource: ResourceSums, dimension: str, quantity: Fraction) -> Entity:
        return {
            "PartitionKey": partition,
            "RowKey": _row_key(part, resource.resource_id, dimension),
            "Digest": resource_digest(resource.resource_id),
            "ResourceId": resource.resource_id,
            "PlanId": resource.plan_id,
            "Dimension": dimension,
            "Quantity": float(quantity),
            "Exact": f"{quantity.numerator}/{quantity.denominator}",
            "Subscriptions": resource.subscriptions,
        }

    entities = [
        entity(resource, dimension, quantity)
        for resource in sums.values()
        for dimension, quantity in resource.quantities.items()
    ]
    # Resources with subscriptions but nothing chargeable keep a row too (no dimension), so
    # the reporter still sees them (it folds carried usage into their events).
    entities += [entity(resource, "", Fraction(0)) for resource in sums.values()
                 if not resource.quantities]  # fmt: skip
    generation = _generation(entities)
    for each in entities:
        each["Generation"] = generation
    markers = [_part_start(part), _part_marker(part)]
    kept = {entity["RowKey"] for entity in entities} | set(markers)
    stale = [key for key in _part_keys(account, partition, part) if key not in kept]
    marker_entities = [
        {"PartitionKey": partition, "RowKey": key, "Keys": len(entities), "Generation": generation}
        for key in markers
    ]
    if len(entities) + len(stale) + len(markers) <= MAX_BATCH:
        # The usual part (tens of keys): one entity-group transaction replaces it whole.
        operations: list[Any] = [
            *(("upsert", entity, {"mode": UpdateMode.REPLACE}) for entity in entities),
            *(("upsert", marker, {"mode": UpdateMode.REPLACE}) for marker in marker_entities),
            *(("delete", {"PartitionKey": partition, "RowKey": key}) for key in stale),
        ]
        table = account.table(ROLE)
        call_with_retry(
            partial(account.transport.submit_transaction, table, operations),
            what=f"write hour summary {partition}/{part}",
        )
        return
    # The done marker alone: a read meeting the part from now until the markers are written
    # again finds it missing, or of a generation the start marker does not name.
    _delete(account, partition, [_part_marker(part)])
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table_name, entities)
    _delete(account, partition, stale)
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table_name, marker_entities)


def _generation(entities: list[Entity]) -> str:
    """What names one write of a part: a digest of its sums, so a rewrite with other sums is
    another generation, and one with the same sums (a rerun) the same, whose rows read
    together are the same sums either way; collecting an hour twice stores the same."""
    content = sorted(
        (e["RowKey"], e["PlanId"], e["Exact"], e["Subscriptions"], e["ResourceId"])
        for e in entities
    )
    return hashlib.blake2b(json.dumps(content).encode(), digest_size=8).hexdigest()


def complete_hour_summary(account: StorageAccount, hour: datetime, parts: Iterable[str]) -> None:
    """Mark reported ``hour``'s summary complete: these parts, and no other, are the hour."""
    entity = {"PartitionKey": hour_key(hour), "RowKey": MARKER, "Parts": json.dumps(sorted(parts))}
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(account.settings.table_name(ROLE), [entity])


def read_hour_summary(account: StorageAccount, hour: datetime) -> dict[str, ResourceSums] | None:
    """Reported ``hour``'s sums by billing resource; None when no complete summary exists."""

    def query() -> list[Entity]:
        try:
            return list(
                account.table(ROLE).query_entities(
                    "PartitionKey eq @pk", parameters={"pk": hour_key(hour)}
                )
            )
        except ResourceNotFoundError:
            return []

    return _summary_of(call_with_retry(query, what=f"read hour summary {hour_key(hour)}"))


def read_hour_summaries(
    account: StorageAccount, first_hour: datetime, last_hour: datetime
) -> dict[datetime, dict[str, ResourceSums] | None]:
    """Each reported hour's sums, ``first_hour``..``last_hour``, as :func:`read_hour_summary`
    reads one hour (None: no complete summary), in one range query over the hours'
    partitions and its continuation pages instead of a query per hour."""

    def query() -> list[Entity]:
        try:
            return list(
                account.table(ROLE).query_entities(
                    "PartitionKey ge @first and PartitionKey le @last",
                    parameters={"first": hour_key(first_hour), "last": hour_key(last_hour)},
                )
            )
        except ResourceNotFoundError:
            return []

    entities = call_with_retry(
        query, what=f"read hour summaries {hour_key(first_hour)}..{hour_key(last_hour)}"
    )
    by_hour: dict[str, list[Entity]] = defaultdict(list)
    for entity in entities:
        by_hour[entity["PartitionKey"]].append(entity)
    found: dict[datetime, dict[str, ResourceSums] | None] = {}
    hour = first_hour
    while hour <= last_hour:
        found[hour] = _summary_of(by_hour.get(hour_key(hour), []))
        hour += HOUR
    return found


def _summary_of(entities: list[Entity]) -> dict[str, ResourceSums] | None:
    """One hour's sums from its partition's entities; None unless complete."""
    marker = next((e for e in entities if e["RowKey"] == MARKER), None)
    if marker is None or "Parts" not in marker:
        return None  # not complete, or written before parts existed: billing reads the rows
    parts = set(json.loads(marker["Parts"]))
    rows: dict[str, list[Entity]] = defaultdict(list)
    done: dict[str, int] = {}
    for entity in entities:
        part, _, rest = entity["RowKey"].partition("|")
        if part not in parts:
            continue
        if rest == PART_MARKER:
            done[part] = int(entity["Keys"])
        elif rest != PART_START:
            rows[part].append(entity)
    if any(done.get(part) != len(rows[part]) for part in parts):
        return None
    return _combine(parts, rows)


def read_resource_sums(
    account: StorageAccount, hour: datetime, resources: Iterable[str]
) -> dict[str, ResourceSums] | None:
    """Reported ``hour``'s sums of ``resources`` only, in one query; None when no complete
    summary exists or a part stayed mid-rewrite for every read (billing then reads the rows).

    A billing work item needs a few resources of an hour that may hold thousands: reading
    the whole partition for each item made billing cost items x resources, and reading each
    part's marker before and after its rows cost 1 + 3 requests per part. One query now
    answers: the hour's partition filtered to the hour marker, every part's two markers and
    the sums whose digest is in the item's range (the planner gives an item neighbouring
    digests; sums of resources not asked for are dropped). Table storage answers in key
    order, so per part the read meets its start marker, then its sums, then its done
    marker. A write of other sums is a new generation: one transaction changes its markers
    and sums together; a larger rewrite deletes the done marker first and writes both
    markers last.
    So a read is whole exactly when, per part, both markers are there, name one
    generation, and every sum read carries it: a rewrite that ran while the part was read
    leaves a marker missing, two generations, or a sum of another generation, whatever
    the service's isolation and however many pages the answer takes. Such a torn read is
    read again (``TORN_READ_ATTEMPTS`` in all). Resources without sums are absent from the
    answer.
    """
    partition = hour_key(hour)
    wanted = set(resources)
    # The SDK substitutes @names split on spaces: keep them apart from parentheses.
    query_filter = "PartitionKey eq @pk and ( RowKey eq @complete or Keys ge 0"
    parameters: dict[str, Any] = {"pk": partition, "complete": MARKER}
    if wanted:
        digests = [resource_digest(resource_id) for resource_id in wanted]
        query_filter += " or ( Digest ge @low and Digest le @high )"
        parameters |= {"low": min(digests), "high": max(digests)}
    query_filter += " )"

    def query() -> list[Entity]:
        try:
            return account.transport.query_entities(
                account.table(ROLE),
                query_filter,
                parameters=parameters,
                select=_ITEM_FIELDS,
                plain=True,  # strings and Int32s
            )
        except ResourceNotFoundError:
            return []

    for _ in range(TORN_READ_ATTEMPTS):
        read = _item_read(call_with_retry(query, what=f"read hour summary {partition}"), wanted)
        if not isinstance(read, _Torn):
            return read
        log.info("hour summary %s: part %s was rewritten while read", partition, read.part)
    return None


@dataclass(frozen=True)
class _Torn:
    """A read that met ``part`` mid-rewrite."""

    part: str


def _item_read(entities: list[Entity], wanted: set[str]) -> dict[str, ResourceSums] | _Torn | None:
    """A work item's sums from one read of the hour (``read_resource_sums``): None without
    a complete summary written with generations (an hour written before they existed),
    ``_Torn`` when a part was read mid-rewrite."""
    by_key = {entity["RowKey"]: entity for entity in entities}
    complete = by_key.get(MARKER)
    if complete is None or not complete.get("Parts"):
        return None  # not complete, or written before parts existed: billing reads the rows
    parts = json.loads(complete["Parts"])
    generations: dict[str, str] = {}
    for part in parts:
        start = by_key.get(_part_start(part), {}).get("Generation")
        done = by_key.get(_part_marker(part), {}).get("Generation")
        if start is None and done is None and _part_marker(part) in by_key:
            return None  # written before generations: the rows answer
        if start is None or start != done:
            return _Torn(part)  # a marker deleted (a rewrite under way), or two generations
        generations[part] = start
    rows: dict[str, list[Entity]] = defaultdict(list)
    for key, entity in by_key.items():
        part, _, rest = key.partition("|")
        if part not in generations or rest in (PART_MARKER, PART_START):
            continue
        if entity.get("Generation") != generations[part]:
            return _Torn(part)
        if entity.get("ResourceId") in wanted:
            rows[part].append(entity)
    return _combine(parts, rows)


def _combine(parts: Iterable[str], rows: Mapping[str, list[Entity]]) -> dict[str, ResourceSums]:
    """Per billing resource, its parts' rows added up exactly."""
    quantities: dict[str, dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    plans: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for part in parts:
        # Every row of one resource in one part carries that part's subscription count.
        part_counts: dict[str, int] = {}
        for entity in rows.get(part, []):
            resource_id = entity["ResourceId"]
            plans[resource_id].add(entity["PlanId"])
            part_counts[resource_id] = int(entity["Subscriptions"])
            sums = quantities[resource_id]  # kept even with nothing chargeable this hour
            if entity["Dimension"]:
                sums[entity["Dimension"]] += _exact(entity["Exact"])
        for resource_id, count in part_counts.items():
            counts[resource_id] += count
    return {
        resource_id: ResourceSums(
            resource_id,
            plan_of(resource_id, plans[resource_id]),
            counts[resource_id],
            dict(quantities[resource_id]),
        )
        for resource_id in plans
    }


def _exact(text: str) -> Fraction:
    """A stored ``n/d`` sum; read by hand, since ``Fraction``'s own parser is a regex."""
    numerator, _, denominator = text.partition("/")
    return Fraction(int(numerator), int(denominator or 1))


def _part_keys(account: StorageAccount, partition: str, part: str) -> list[str]:
    def query() -> list[str]:
        try:
            entities = account.table(ROLE).query_entities(
                "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                parameters={"pk": partition, "low": f"{part}|", "high": f"{part}}}"},
                select=["RowKey"],
            )
            return [entity["RowKey"] for entity in entities]
        except ResourceNotFoundError:
            return []

    return call_with_retry(query, what=f"read hour summary keys {partition}/{part}")


def _delete(account: StorageAccount, partition: str, keys: Iterable[str]) -> None:
    table = account.table(ROLE)
    for key in keys:

        def delete(key: str = key) -> None:
            with contextlib.suppress(ResourceNotFoundError):  # gone already: as wanted
                table.delete_entity(partition, key)

        call_with_retry(delete, what=f"delete hour summary entry {partition}/{key}")
