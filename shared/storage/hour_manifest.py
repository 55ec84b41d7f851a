"""The hour manifest: which (reported hour, subscription) partitions hold usage rows.

Written after an hour's rows are durable, one entity per subscription with rows
(``PartitionKey`` = reported hour, ``RowKey`` = subscription id). Readers use it to touch only
partitions that exist: the daily rollup (which subscriptions had rows in a day), billing
(work items, an hour's charges) and reconciliation. The usage API does not read it: a
query reads the tables of the subscriptions in its caller's scope.

Each entry also records where the subscription's usage of that hour is billed (billing
resource and plan), resolved by the collector when the hour is written. Billing reads the
mapping from here, not from the subscriptions table, so an operator who remaps a
subscription changes the hours collected after the change and never splits one event key
(billing resource, dimension, reported hour) between two resources. Entries written before
the mapping was recorded read back as ``""`` (= the settings' default resource and plan).
Each entry names the usage source (stamp) that wrote it, so a source's rerun or daily rollup
touches only its own subscriptions' entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.core.config import Settings
from shared.core.hours import hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import BillingTarget
from shared.storage.table_writer import Entity, PartitionWriter

ROLE = "hours"


@dataclass(frozen=True, slots=True)
class HourEntry:
    subscription_id: str
    rows: int
    late_rows: int
    billing_resource_id: str = ""
    billing_plan_id: str = ""
    # The usage source (stamp) that wrote it; "" for entries written before that was recorded.
    source: str = ""


def entry_target(settings: Settings, entry: HourEntry) -> BillingTarget:
    """The billing target recorded in a manifest entry ('' = the default)."""
    if entry.billing_resource_id:
        return BillingTarget(entry.billing_resource_id, entry.billing_plan_id)
    return BillingTarget(settings.billing_default_resource_id, settings.billing_default_plan_id)


def write_manifest(account: StorageAccount, hour: datetime, entries: Sequence[HourEntry]) -> None:
    key = hour_key(hour)
    entities = [
        {
            "PartitionKey": key,
            "RowKey": entry.subscription_id,
            "Rows": entry.rows,
            "LateRows": entry.late_rows,
            "BillingResourceId": entry.billing_resource_id,
            "BillingPlanId": entry.billing_plan_id,
            "Source": entry.source,
        }
        for entry in entries
    ]
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(account.settings.table_name(ROLE), entities)


def _entry(entity: Entity) -> tuple[datetime, HourEntry]:
    return (
        parse_hour_key(entity["PartitionKey"]),
        HourEntry(
            entity["RowKey"],
            int(entity["Rows"]),
            int(entity["LateRows"]),
            entity.get("BillingResourceId") or "",
            entity.get("BillingPlanId") or "",
            entity.get("Source") or "",
        ),
    )


def read_manifest(
    account: StorageAccount, first_hour: datetime, last_hour: datetime
) -> Iterator[tuple[datetime, HourEntry]]:
    """Entries of reported hours ``first_hour``..``last_hour`` (inclusive), oldest first."""

    def query() -> list[tuple[datetime, HourEntry]]:
        entities = account.table(ROLE).query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={"first": hour_key(first_hour), "last": hour_key(last_hour)},
        )
        return [_entry(entity) for entity in entities]

    # One entity per (hour, subscription with usage): small enough to read in one go,
    # and reading it whole lets a transient fault retry the query from the start.
    yield from call_with_retry(query, what="read hour manifest")


def read_hour(account: StorageAccount, hour: datetime) -> list[HourEntry]:
    """The entries of one reported hour: a single point-partition query."""

    def query() -> list[HourEntry]:
        entities = account.table(ROLE).query_entities(
            "PartitionKey eq @hour", parameters={"hour": hour_key(hour)}
        )
        return [_entry(entity)[1] for entity in entities]

    return call_with_retry(query, what=f"read hour manifest {hour_key(hour)}")


def has_entries(account: StorageAccount, first_hour: datetime, last_hour: datetime) -> bool:
    """True if any reported hour ``first_hour``..``last_hour`` has rows (one small read)."""

    def query() -> bool:
        entities = account.table(ROLE).query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={"first": hour_key(first_hour), "last": hour_key(last_hour)},
            select=["PartitionKey"],
            results_per_page=1,
        )
        # Iterating stops at the first entity (a page of one), following empty pages.
        return next(iter(entities), None) is not None

    return call_with_retry(query, what="probe hour manifest")


def first_hour_with_entries(
    account: StorageAccount, first_hour: datetime, last_hour: datetime
) -> datetime | None:
    """The earliest reported hour ``first_hour``..``last_hour`` with rows, or None (one read)."""

    def query() -> datetime | None:
        entities = account.table(ROLE).query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={"first": hour_key(first_hour), "last": hour_key(last_hour)},
            select=["PartitionKey"],
            results_per_page=1,
        )
        found = next(iter(entities), None)
        return None if found is None else parse_hour_key(found["PartitionKey"])

    return call_with_retry(query, what="probe hour manifest")
