"""Daily rows: the hourly rows of one reported day, summed per usage day.

A daily row is the sum of the hourly rows of the same subscription, meter, resource and
usage day reported in that reported day (spec: time semantics). It is built once the
reported day has closed, i.e. right after its 23:00 hour is written, from what is stored,
never from the source. Rebuilding a day writes the same keys with the same sums
(``math.fsum`` is exact, so the order rows are read in does not matter): idempotent.

Work is per subscription: its hourly partitions of the day are read, summed and written as
one daily partition, so memory holds one subscription-day at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from shared.hour_manifest import read_manifest
from shared.hours import DAY, HOUR, floor_day
from shared.retry import call_with_retry
from shared.storage import StorageAccount
from shared.table_writer import Entity, PartitionWriter
from shared.usage_rows import UsageRow, daily_partition, daily_row_key, hourly_partition


def read_partition(account: StorageAccount, role: str, partition_key: str) -> list[Entity]:
    """Every entity of one partition (a point partition query), retried as a whole."""

    def query() -> list[Entity]:
        table = account.table(role)
        return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": partition_key}))

    return call_with_retry(query, what=f"read {role} partition {partition_key}")


def sum_to_daily(day: datetime, subscription_id: str, hourly: Iterable[UsageRow]) -> list[Entity]:
    """The daily entities of one subscription for reported ``day``, from its hourly rows."""
    quantities: dict[str, list[float]] = defaultdict(list)
    latest: dict[str, UsageRow] = {}
    for row in hourly:
        usage_day = floor_day(row.usage_start)
        key = daily_row_key(usage_day, row.meter_id.lower(), row.resource_uri)
        quantities[key].append(row.quantity)
        kept = latest.get(key)
        if kept is None or row.usage_start > kept.usage_start:
            latest[key] = row  # instance data as of the newest hour
    partition = daily_partition(day, subscription_id)
    entities = []
    for key, row in latest.items():
        usage_day = floor_day(row.usage_start)
        daily = UsageRow(
            subscription_id=row.subscription_id,
            meter_id=row.meter_id,
            usage_start=usage_day,
            usage_end=usage_day + DAY,
            quantity=math.fsum(quantities[key]),
            resource_uri=row.resource_uri,
            location=row.location,
            tags_json=row.tags_json,
            additional_info_json=row.additional_info_json,
        )
        entities.append(daily.to_entity(partition, key))
    return entities


def _rollup_subscription(
    account: StorageAccount, day: datetime, subscription_id: str, hours: Sequence[datetime]
) -> list[Entity]:
    rows = (
        UsageRow.from_entity(entity)
        for hour in hours
        for entity in read_partition(account, "hourly", hourly_partition(hour, subscription_id))
    )
    return sum_to_daily(day, subscription_id, rows)


def build_daily_rows(account: StorageAccount, day: datetime, *, parallelism: int) -> int:
    """(Re)build every daily row of reported ``day``; returns how many were written."""
    day = floor_day(day)
    hours_by_subscription: dict[str, list[datetime]] = defaultdict(list)
    for hour, entry in read_manifest(account, day, day + DAY - HOUR):
        hours_by_subscription[entry.subscription_id].append(hour)
    subscriptions = sorted(hours_by_subscription)
    with (
        PartitionWriter(account, "daily", parallelism=parallelism) as writer,
        ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="daily") as readers,
    ):
        # A slice of subscriptions at a time keeps memory at a few subscription-days.
        for start in range(0, len(subscriptions), parallelism):
            chunk = subscriptions[start : start + parallelism]
            results = readers.map(
                lambda sid: _rollup_subscription(account, day, sid, hours_by_subscription[sid]),
                chunk,
            )
            for entities in results:
                writer.write_partition(entities)
    return writer.entities_written
