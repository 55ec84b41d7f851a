"""The hour's chargeable sums: what each billing event of a reported hour is owed.

Billing's event key is (billing resource, dimension, reported hour), and its quantity is the
sum of the chargeable rows of every subscription billed to that resource in that hour. The
collector has every row of the hour in hand when it writes it, so it sums them there, once,
and stores the sums in the same durable step as the hour manifest (before the watermark
moves): billing then reads ONE partition per hour instead of every subscription's rows,
so its cost follows the billing resources, not the subscriptions (issue: billing costs
O(billing resources)).

Layout (the ``summaries`` table): ``PartitionKey`` = the reported hour ``YYYYMMDDHH``;
``RowKey`` = ``{hash of the resource id}_{dimension}`` with ``ResourceId``, ``PlanId``,
``Dimension``, ``Quantity`` (``math.fsum`` of every row's quantity: the exact same number a
recomputation from the rows gives, whatever order they come in) and ``Subscriptions``;
plus a marker ``~complete`` holding how many keys the hour has. An hour without the marker
was collected before summaries existed (or its summary write was interrupted): billing
reads its rows instead. Rewriting an hour replaces its partition: new sums are upserted,
then keys no longer owed are deleted, then the marker written; a crash in between leaves
no marker, so nobody trusts a half-written summary, and the rerun completes it.

Derived data: reconciliation recomputes the sums from the rows and names any difference.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError

from shared.core.hours import hour_key
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import BillingTarget
from shared.storage.table_writer import Entity, PartitionWriter

log = logging.getLogger(__name__)

ROLE = "summaries"
MARKER = "~complete"


@dataclass(frozen=True, slots=True)
class ResourceSums:
    """One billing resource's owed quantities of one reported hour, per dimension."""

    resource_id: str
    plan_id: str
    subscriptions: int
    quantities: Mapping[str, float]


@dataclass
class HourSummaryBuilder:
    """Sums an hour's chargeable quantities per (billing resource, dimension)."""

    _parts: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    _plans: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _subscriptions: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, target: BillingTarget, charges: Iterable[tuple[str, float]]) -> None:
        """One subscription's stored rows of the hour, billed to ``target``: the
        (dimension, quantity) of each chargeable row."""
        self._plans[target.resource_id].add(target.plan_id)
        self._subscriptions[target.resource_id] += 1
        for dimension, quantity in charges:
            self._parts[(target.resource_id, dimension)].append(quantity)

    def sums(self) -> dict[str, ResourceSums]:
        """Per billing resource: its plan, how many subscriptions, and the exact sums."""
        quantities: dict[str, dict[str, float]] = defaultdict(dict)
        for (resource_id, dimension), parts in self._parts.items():
            quantities[resource_id][dimension] = math.fsum(parts)
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


def _row_key(resource_id: str, dimension: str) -> str:
    digest = hashlib.blake2b(resource_id.encode("utf-8"), digest_size=10).hexdigest()
    return f"{digest}_{dimension}"


def write_hour_summary(
    account: StorageAccount, hour: datetime, sums: Mapping[str, ResourceSums]
) -> None:
    """Replace reported ``hour``'s summary with ``sums`` (see the module docstring)."""
    partition = hour_key(hour)
    table_name = account.settings.table_name(ROLE)
    entities: list[Entity] = [
        {
            "PartitionKey": partition,
            "RowKey": _row_key(resource_id, dimension),
            "ResourceId": resource_id,
            "PlanId": resource.plan_id,
            "Dimension": dimension,
            "Quantity": float(quantity),
            "Subscriptions": resource.subscriptions,
        }
        for resource_id, resource in sums.items()
        for dimension, quantity in resource.quantities.items()
    ]
    # Resources with subscriptions but nothing chargeable keep a row too (no dimension), so
    # the reporter still sees them (it folds carried usage into their events).
    entities += [
        {
            "PartitionKey": partition,
            "RowKey": _row_key(resource_id, ""),
            "ResourceId": resource_id,
            "PlanId": resource.plan_id,
            "Dimension": "",
            "Quantity": 0.0,
            "Subscriptions": resource.subscriptions,
        }
        for resource_id, resource in sums.items()
        if not resource.quantities
    ]
    kept = {entity["RowKey"] for entity in entities}
    stale = [key for key in _keys(account, partition) if key not in kept and key != MARKER]
    _delete(account, partition, [MARKER])
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table_name, entities)
    _delete(account, partition, stale)
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(
            table_name, [{"PartitionKey": partition, "RowKey": MARKER, "Keys": len(entities)}]
        )


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

    entities = call_with_retry(query, what=f"read hour summary {hour_key(hour)}")
    marker = next((e for e in entities if e["RowKey"] == MARKER), None)
    rows = [e for e in entities if e["RowKey"] != MARKER]
    if marker is None or int(marker["Keys"]) != len(rows):
        return None
    quantities: dict[str, dict[str, float]] = defaultdict(dict)
    heads: dict[str, tuple[str, int]] = {}
    for entity in rows:
        resource_id = entity["ResourceId"]
        heads[resource_id] = (entity["PlanId"], int(entity["Subscriptions"]))
        if entity["Dimension"]:
            quantities[resource_id][entity["Dimension"]] = float(entity["Quantity"])
    return {
        resource_id: ResourceSums(resource_id, plan, count, quantities.get(resource_id, {}))
        for resource_id, (plan, count) in heads.items()
    }


def _keys(account: StorageAccount, partition: str) -> list[str]:
    def query() -> list[str]:
        try:
            entities = account.table(ROLE).query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"]
            )
            return [entity["RowKey"] for entity in entities]
        except ResourceNotFoundError:
            return []

    return call_with_retry(query, what=f"read hour summary keys {partition}")


def _delete(account: StorageAccount, partition: str, keys: Iterable[str]) -> None:
    table = account.table(ROLE)
    for key in keys:

        def delete(key: str = key) -> None:
            with contextlib.suppress(ResourceNotFoundError):  # gone already: as wanted
                table.delete_entity(partition, key)

        call_with_retry(delete, what=f"delete hour summary entry {partition}/{key}")
