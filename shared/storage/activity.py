"""Which of a provider's direct tenants have usage in a reported day.

The provider route reads the tables of a provider's tenants, and most tenants of a large
operator are idle in any window: visiting each of them (a query per empty table) would make
a page cost the provider's size, not its answer (invariant 6). So the collector records,
with every hour it writes, which subscriptions had rows that reported day, filed under
their provider: ``PartitionKey = {provider subscription id}_{YYYYMMDD}`` (``_{YYYYMMDD}``
for the root of the hierarchy), ``RowKey`` = subscription id. A provider page reads the
partitions of its window's reported days in one range query (a provider's keys sort by day,
and no other provider's key falls between two of them) and visits only those tenants: a
ten-year window over a few days of usage costs those days' entries, not 3,650 requests.

Entries are upserts of keys derived from the rows, written before the watermark moves:
collecting an hour again writes the same entries (idempotent), and an hour is never
visible to queries before its entries are durable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from shared.core.hours import day_key, floor_day
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount
from shared.storage.table_writer import PartitionWriter

ROLE = "activity"


def activity_partition(provider_subscription_id: str | None, day: datetime) -> str:
    return f"{(provider_subscription_id or '').lower()}_{day_key(floor_day(day))}"


def record_activity(
    account: StorageAccount,
    reported_hour: datetime,
    providers: Iterable[tuple[str, str | None]],
) -> None:
    """Record that each (subscription, its provider) had rows in ``reported_hour``'s day."""
    partitions: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for subscription_id, provider in providers:
        partition = activity_partition(provider, reported_hour)
        key = subscription_id.lower()
        partitions[partition][key] = {"PartitionKey": partition, "RowKey": key}
    if not partitions:
        return
    # One transaction per provider's day, several providers' at once.
    with PartitionWriter(account, parallelism=account.settings.write_parallelism) as writer:
        for entities in partitions.values():
            writer.write_partition(account.settings.table_name(ROLE), list(entities.values()))


def active_tenants(
    account: StorageAccount, provider_subscription_id: str, first: datetime, last: datetime
) -> set[str]:
    """The provider's tenants with rows in reported days ``first``..``last`` (inclusive):
    one PartitionKey-range query, however many days the window spans."""
    table = account.table(ROLE)
    low = activity_partition(provider_subscription_id, first)
    high = activity_partition(provider_subscription_id, last)

    def read() -> set[str]:
        entities = table.query_entities(
            "PartitionKey ge @low and PartitionKey le @high",
            parameters={"low": low, "high": high},
            select=["RowKey"],
        )
        return {entity["RowKey"] for entity in entities}

    return call_with_retry(read, what=f"read activity {low}..{high}")
