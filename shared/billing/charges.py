"""What is owed: chargeable usage summed per event key (billing resource, dimension, hour).

The commerce endpoint keeps one accepted event per (resource, dimension, UTC hour), so the
quantity of a key must be the sum over EVERY subscription billed to that resource in that
reported hour, computed in one place, once (spec/commerce-api.md "How our usage maps onto
events"). Where a subscription is billed is read from the hour manifest (the collector
recorded it when the hour was written); ``""`` means the settings' default (registration)
resource and plan.

Only chargeable meters count (the catalogue's flag, then the operator's overrides); each
meter is billed under its stable dimension id. Sums use ``math.fsum``: exact, so the order
rows arrive in (threads, pages) never changes a quantity and the reconciliation's
independent recomputation agrees to the last bit.

An hour's sums are read from its summary (``shared.storage.hour_summary``): one partition,
whatever the number of subscriptions. Hours without one, and reconciliation's independent
recomputation, read the rows: point-partition queries, one per subscription table
(``H{hour}``), run in parallel (the function app keeps one pool, so its threads keep their
storage clients between invocations).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from shared.core.hours import floor_hour
from shared.core.meters import ChargeableMeters
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import HourEntry, entry_target, read_hour, read_manifest
from shared.storage.hour_summary import plan_of, read_resource_sums
from shared.storage.subscriptions import BillingTarget
from shared.storage.usage_rows import UsageRow, read_hourly_rows

log = logging.getLogger(__name__)

READ_PARALLELISM = 8
# (billing resource, dimension, reported hour): the endpoint's duplicate key.
ChargeKey = tuple[str, str, datetime]


@dataclass
class ResourceCharges:
    """One billing resource's owed quantities for one reported hour, per dimension."""

    resource_id: str
    plan_id: str
    subscriptions: list[str] = field(default_factory=list)
    quantities: dict[str, float] = field(default_factory=dict)


def sum_by_dimension(rows: Iterable[UsageRow], meters: ChargeableMeters) -> dict[str, list[float]]:
    """The chargeable quantities of ``rows`` grouped by dimension (not yet summed)."""
    parts: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        dimension = meters.dimension_of(row.meter_id)
        if dimension is not None:
            parts[dimension].append(row.quantity)
    return parts


def hour_charges(
    account: StorageAccount,
    hour: datetime,
    entries: Sequence[HourEntry] | None,
    resources: Iterable[str],
    meters: ChargeableMeters,
    pool: Executor,
) -> dict[str, ResourceCharges]:
    """Owed quantities of reported ``hour`` for each of ``resources`` (all of its subscriptions).

    A resource of ``resources`` without entries still gets a (empty) ResourceCharges, so
    the reporter can fold carried-forward usage into it. The sums come from the hour's
    summary (written by the collector; only ``resources``' keys are read); an hour without
    a complete summary (collected before summaries existed) is summed from its
    subscriptions' rows, listed by ``entries`` (None: the hour's manifest is read then, and
    only then: with a summary, billing needs no second read).
    """
    wanted = set(resources)
    summary = read_resource_sums(account, hour, wanted)
    if summary is not None:
        found = {resource_id: summary.get(resource_id) for resource_id in sorted(wanted)}
        return {
            resource_id: ResourceCharges(
                resource_id,
                sums.plan_id if sums is not None else "",
                quantities=(
                    {dimension: float(total) for dimension, total in sums.quantities.items()}
                    if sums is not None
                    else {}
                ),
            )
            for resource_id, sums in found.items()
        }
    if entries is None:
        entries = read_hour(account, hour)
    return hour_charges_from_rows(account, hour, entries, resources, meters, pool)


def hour_charges_from_rows(
    account: StorageAccount,
    hour: datetime,
    entries: Sequence[HourEntry],
    resources: Iterable[str],
    meters: ChargeableMeters,
    pool: Executor,
) -> dict[str, ResourceCharges]:
    """``hour_charges`` summed from the subscriptions' rows: one point query per
    subscription, in parallel on ``pool`` (hours without a summary; the summary's check)."""
    wanted = set(resources)
    settings = account.settings
    by_resource: dict[str, list[HourEntry]] = defaultdict(list)
    for entry in entries:
        target = entry_target(settings, entry)
        if target.resource_id in wanted:
            by_resource[target.resource_id].append(entry)
    charges: dict[str, ResourceCharges] = {}
    for resource_id in sorted(wanted):
        mine = by_resource.get(resource_id, [])
        plans = {entry_target(settings, e).plan_id for e in mine}
        plan = plan_of(resource_id, plans) if plans else ""
        charges[resource_id] = ResourceCharges(
            resource_id, plan, sorted(e.subscription_id for e in mine)
        )
    jobs = [(r, s) for r, c in charges.items() for s in c.subscriptions]

    def read(job: tuple[str, str]) -> tuple[str, dict[str, list[float]]]:
        resource_id, subscription_id = job
        rows = read_hourly_rows(account, subscription_id, hour, hour)
        return resource_id, sum_by_dimension((row for _, row in rows), meters)

    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for resource_id, by_dimension in pool.map(read, jobs):
        for dimension, quantities in by_dimension.items():
            parts[resource_id][dimension].extend(quantities)
    for resource_id, by_dimension in parts.items():
        charges[resource_id].quantities = {
            dimension: math.fsum(quantities) for dimension, quantities in by_dimension.items()
        }
    return charges


def usage_hour_parts(
    account: StorageAccount,
    hour: datetime,
    resource_id: str,
    dimension: str,
    meters: ChargeableMeters,
    pool: Executor,
) -> dict[datetime, float]:
    """One event key's own quantity (resource, dimension, reported ``hour``) split by the
    UTC hour its usage belongs to (late usage reported in ``hour`` is of earlier hours).

    Read from the rows (one point query per subscription billed to the resource), for the
    rare event the endpoint refuses because its resource was cancelled: usage of hours
    before the cancellation is still accepted when sent with its own hour.
    """
    settings = account.settings
    subscriptions = [
        entry.subscription_id
        for entry in read_hour(account, hour)
        if entry_target(settings, entry).resource_id == resource_id
    ]

    def read(subscription_id: str) -> list[tuple[datetime, float]]:
        rows = read_hourly_rows(account, subscription_id, hour, hour)
        return [
            (floor_hour(row.usage_start), row.quantity)
            for _, row in rows
            if meters.dimension_of(row.meter_id) == dimension
        ]

    parts: dict[datetime, list[float]] = defaultdict(list)
    for found in pool.map(read, subscriptions):
        for usage_hour, quantity in found:
            parts[usage_hour].append(quantity)
    return {usage_hour: math.fsum(values) for usage_hour, values in sorted(parts.items())}


def range_charges(
    account: StorageAccount,
    first_hour: datetime,
    last_hour: datetime,
    meters: ChargeableMeters,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[ChargeKey, float], dict[str, str]]:
    """Owed quantity per event key for reported hours ``first_hour``..``last_hour``.

    One range query per subscription table over the whole window (reconciliation's
    independent recomputation). Returns the quantities and each resource's plan.
    ``progress(done, total)`` is called as subscriptions are read.
    """
    settings = account.settings
    target_of: dict[tuple[datetime, str], BillingTarget] = {}
    for hour, entry in read_manifest(account, first_hour, last_hour):
        target_of[(hour, entry.subscription_id)] = entry_target(settings, entry)
    subscriptions = sorted({subscription for _, subscription in target_of})

    def read(subscription_id: str) -> list[tuple[ChargeKey, float]]:
        found = []
        for hour, row in read_hourly_rows(account, subscription_id, first_hour, last_hour):
            dimension = meters.dimension_of(row.meter_id)
            target = target_of.get((hour, subscription_id))
            if dimension is not None and target is not None:
                found.append(((target.resource_id, dimension, hour), row.quantity))
        return found

    parts: dict[ChargeKey, list[float]] = defaultdict(list)
    plans: dict[str, str] = {}
    for target in target_of.values():
        plans.setdefault(target.resource_id, target.plan_id)
    with ThreadPoolExecutor(READ_PARALLELISM, thread_name_prefix="reconcile") as pool:
        for done, found in enumerate(pool.map(read, subscriptions), start=1):
            for key, quantity in found:
                parts[key].append(quantity)
            if progress is not None:
                progress(done, len(subscriptions))
    return {key: math.fsum(values) for key, values in parts.items()}, plans
