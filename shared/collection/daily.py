"""Daily rows: the hourly rows of one reported day, summed per usage day.

A daily row is the sum of the hourly rows of the same subscription, meter, resource and
usage day reported in that reported day (spec: time semantics). It is built once the
reported day has closed, i.e. when its source's watermark passes its 23:00 hour, from what
is stored, never from the source. Rebuilding a day writes the same keys with the same sums
(``math.fsum`` is exact, so the order rows are read in does not matter): idempotent.

Work is per subscription (the hour manifest says which had rows that day): one range query
over its table's hourly partitions of the day, summed and written as one daily partition, so
memory holds one subscription-day at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from shared.core.hours import DAY, HOUR, floor_day
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_manifest
from shared.storage.table_writer import Entity, PartitionWriter
from shared.storage.usage_rows import (
    UsageRow,
    daily_partition,
    daily_row_key,
    read_hourly_rows,
    usage_table_name,
)


def sum_to_daily(day: datetime, hourly: Iterable[UsageRow]) -> list[Entity]:
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
    partition = daily_partition(day)
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
            instance_data_truncated=row.instance_data_truncated,
        )
        entities.append(daily.to_entity(partition, key))
    return entities


def _rollup_subscription(account: StorageAccount, day: datetime, subscription_id: str) -> None:
    rows = read_hourly_rows(account, subscription_id, day, day + DAY - HOUR)
    entities = sum_to_daily(day, (row for _, row in rows))
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(
            usage_table_name(account.settings.table_prefix, subscription_id), entities
        )


def build_daily_rows(
    account: StorageAccount, day: datetime, *, parallelism: int, source: str | None = None
) -> int:
    """(Re)build the daily rows of reported ``day`` of ``source``'s subscriptions (every
    source's when None); returns how many subscriptions had any.

    Manifest entries written before entries named their source count for every source."""
    day = floor_day(day)
    subscriptions = sorted(
        {
            entry.subscription_id
            for _, entry in read_manifest(account, day, day + DAY - HOUR)
            if source is None or entry.source in (source, "")
        }
    )
    # Each worker holds one subscription-day; ``map`` re-raises the first failure.
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="daily") as workers:
        list(workers.map(lambda sid: _rollup_subscription(account, day, sid), subscriptions))
    return len(subscriptions)
