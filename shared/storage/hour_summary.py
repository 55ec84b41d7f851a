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
over the rows gives, whatever the cut), and a part marker ``{part}|~done`` holding how many
keys the part has. Rewriting a part replaces it: in one entity-group transaction when it
fits (100 operations), else its marker is deleted, new sums upserted, keys no longer owed
deleted, the marker written; a crash in between leaves no marker.

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
from concurrent.futures import Executor
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
_SUM_FIELDS = ["ResourceId", "PlanId", "Dimension", "Exact", "Subscriptions"]


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
    marker = _part_marker(part)
    kept = {entity["RowKey"] for entity in entities} | {marker}
    stale = [key for key in _part_keys(account, partition, part) if key not in kept]
    marker_entity = {"PartitionKey": partition, "RowKey": marker, "Keys": len(entities)}
    if len(entities) + len(stale) + 1 <= MAX_BATCH:
        # The usual part (tens of keys): one entity-group transaction replaces it whole.
        operations: list[Any] = [
            *(("upsert", entity, {"mode": UpdateMode.REPLACE}) for entity in entities),
            ("upsert", marker_entity, {"mode": UpdateMode.REPLACE}),
            *(("delete", {"PartitionKey": partition, "RowKey": key}) for key in stale),
        ]
        table = account.table(ROLE)
        call_with_retry(
            partial(account.transport.submit_transaction, table, operations),
            what=f"write hour summary {partition}/{part}",
        )
        return
    _delete(account, partition, [marker])
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table_name, entities)
    _delete(account, partition, stale)
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table_name, [marker_entity])


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
        else:
            rows[part].append(entity)
    if any(done.get(part) != len(rows[part]) for part in parts):
        return None
    return _combine(parts, rows)


def read_resource_sums(
    account: StorageAccount, hour: datetime, resources: Iterable[str], pool: Executor
) -> dict[str, ResourceSums] | None:
    """Reported ``hour``'s sums of ``resources`` only; None when no complete summary exists
    or a part was rewritten while it was read (billing then reads the rows).

    A billing work item needs a few resources of an hour that may hold thousands: reading
    the whole partition for each item made billing cost items x resources. A resource's
    keys in a part share its digest, and the planner gives an item resources whose digests
    are neighbours (no other resource of the hour between them), so each part is one range
    read, from the item's lowest digest to its highest, on ``pool``; rows of resources not
    asked for (an item planned otherwise) are dropped. Each part's marker is read before
    and after: a rewrite deletes or replaces the marker (new ETag) before or with its rows,
    so equal ETags mean the rows read are the part's whole, settled sums. Resources without
    sums are absent from the answer.
    """
    partition = hour_key(hour)
    complete = _get(account, partition, MARKER)
    if complete is None or "Parts" not in complete:
        return None
    parts = sorted(json.loads(complete["Parts"]))

    def marker_etags() -> list[str | None]:
        markers = pool.map(lambda part: _get(account, partition, _part_marker(part)), parts)
        return [None if marker is None else marker.metadata["etag"] for marker in markers]

    before = marker_etags()
    if None in before:
        return None
    wanted = set(resources)
    if not wanted:
        return {}
    digests = [resource_digest(resource_id) for resource_id in wanted]
    low, high = min(digests), max(digests)
    found = list(pool.map(lambda part: _range_rows(account, partition, part, low, high), parts))
    if marker_etags() != before:
        return None
    rows = {
        part: [entity for entity in entities if entity["ResourceId"] in wanted]
        for part, entities in zip(parts, found, strict=True)
    }
    return _combine(parts, rows)


def _get(account: StorageAccount, partition: str, row_key: str) -> Any:
    """One marker (with its ETag), or None; a query on both keys is a point read."""

    def get() -> Any:
        try:
            found = account.transport.query_entities(
                account.table(ROLE),
                "PartitionKey eq @pk and RowKey eq @rk",
                parameters={"pk": partition, "rk": row_key},
            )
        except ResourceNotFoundError:
            return None
        return found[0] if found else None

    return call_with_retry(get, what=f"read hour summary {partition}/{row_key}")


def _range_rows(
    account: StorageAccount, partition: str, part: str, low: str, high: str
) -> list[Entity]:
    """The part's rows of every resource whose digest is in ``low``..``high``."""

    def query() -> list[Entity]:
        try:
            return account.transport.query_entities(
                account.table(ROLE),
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                # "`" follows "_": the end of the highest digest's keys.
                parameters={"pk": partition, "low": f"{part}|{low}_", "high": f"{part}|{high}`"},
                select=_SUM_FIELDS,
                plain=True,  # strings and an Int32
            )
        except ResourceNotFoundError:
            return []

    return call_with_retry(query, what=f"read hour summary {partition}/{part}")


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
