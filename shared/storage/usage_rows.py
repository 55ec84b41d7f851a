"""Stored usage rows: where they live, their keys and their entity shape, hourly and daily.

Each tenant subscription's usage lives in **its own table**, ``{prefix}u{subscription id
without dashes}``. Measured reason: a query's cost must follow the rows it returns, not the
rows of other tenants (invariant 6), and Azurite answers every query by scanning the whole
table it names; a table per subscription keeps a tenant's reads at the size of its own
usage there as in Azure, lets a tenant's month be one range query, and gives operators a
per-tenant unit to export or drop. The provider route reads the tables of the
subscriptions in its scope, which is exactly what it is entitled to.

Inside a subscription's table:

- hourly rows, one per (reported hour, usage hour, meter, resource):
  ``PartitionKey = H{reported hour YYYYMMDDHH}``,
  ``RowKey = {usage hour YYYYMMDDHH}_{meter id lower}_{resource hash}``;
- daily rows, one per (reported day, usage day, meter, resource):
  ``PartitionKey = D{reported day YYYYMMDD}``, ``RowKey = {usage day}_{meter}_{hash}``.

Key order is time order, so a window of reported hours is one contiguous PartitionKey range.
The hash is of the lower-cased resourceUri (ARM ids are case-insensitive, and a URI may hold
characters RowKeys forbid).

Quantities are doubles; the usage window is stored as two DateTime properties; tags and
additionalInfo as JSON text (or absent). Table storage keeps a string property of at most
64 KiB as UTF-16 (32,768 code units; larger is ``400 PropertyValueTooLarge``), so
:func:`fit_instance_data` cuts what does not fit, key by key, and the row records what was cut
in ``InstanceDataTruncated``: the usage itself (money) is never dropped for bulky metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.core.hours import day_key, hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.core.usage import UsageRecord
from shared.storage.account import StorageAccount

Entity = dict[str, Any]
# Table storage's limit on one string property: 64 KiB of UTF-16.
MAX_STRING_BYTES = 64 * 1024


def resource_hash(resource_uri: str) -> str:
    """20 hex characters identifying a resource; stable across processes and case."""
    return hashlib.blake2b(resource_uri.lower().encode("utf-8"), digest_size=10).hexdigest()


def usage_table_name(table_prefix: str, subscription_id: str) -> str:
    """The table holding one subscription's usage (table names allow only letters, digits)."""
    return f"{table_prefix}u{subscription_id.replace('-', '').lower()}"


def hourly_partition(reported_hour: datetime) -> str:
    return f"H{hour_key(reported_hour)}"


def daily_partition(reported_day: datetime) -> str:
    return f"D{day_key(reported_day)}"


def hourly_row_key(usage_start: datetime, meter_key: str, resource_uri: str) -> str:
    return f"{hour_key(usage_start)}_{meter_key}_{resource_hash(resource_uri)}"


def daily_row_key(usage_day: datetime, meter_key: str, resource_uri: str) -> str:
    return f"{day_key(usage_day)}_{meter_key}_{resource_hash(resource_uri)}"


def dump_json(value: dict[str, Any] | None) -> str | None:
    """Compact, key-sorted JSON so the same dict always stores the same text.

    NaN and infinities are refused (ValueError): they are not JSON, and clients would choke.
    """
    if value is None:
        return None
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    )


def utf16_bytes(text: str) -> int:
    """The size Table storage counts for a string property: UTF-16 code units times two."""
    return len(text.encode("utf-16-le", errors="surrogatepass"))


def fit_instance_data(name: str, value: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """``value`` as stored JSON text that fits one string property, and what was cut ('' if
    nothing): the largest top-level keys are dropped first (ties by name, so the same input
    always keeps the same keys) until the rest fits. Small, useful keys such as
    ``ServiceType`` survive one huge neighbour. Raises ValueError/TypeError as ``dump_json``.
    """
    if value is None:
        return None, ""
    text = dump_json(dict(value))
    assert text is not None
    if utf16_bytes(text) <= MAX_STRING_BYTES:
        return text, ""
    kept = dict(value)
    dropped: list[str] = []
    by_size = sorted(kept, key=lambda key: (-utf16_bytes(dump_json({key: kept[key]}) or ""), key))
    for key in by_size:
        del kept[key]
        dropped.append(key)
        text = dump_json(kept)
        assert text is not None
        if utf16_bytes(text) <= MAX_STRING_BYTES:
            break
    names = ", ".join(dropped)
    note = f"{name}: {len(dropped)} keys over {MAX_STRING_BYTES} bytes dropped ({names})"
    return text, note[:500]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A stored, validated usage row, hourly or daily."""

    subscription_id: str
    meter_id: str
    usage_start: datetime
    usage_end: datetime
    quantity: float
    resource_uri: str
    location: str
    tags_json: str | None
    additional_info_json: str | None
    # What fit_instance_data cut from tags/additionalInfo to store the row ('' = nothing).
    instance_data_truncated: str = ""

    def to_entity(self, partition_key: str, row_key: str) -> Entity:
        entity: Entity = {
            "PartitionKey": partition_key,
            "RowKey": row_key,
            "SubscriptionId": self.subscription_id,
            "MeterId": self.meter_id,
            "UsageStartTime": self.usage_start,
            "UsageEndTime": self.usage_end,
            "Quantity": float(self.quantity),
            "ResourceUri": self.resource_uri,
            "Location": self.location,
        }
        if self.tags_json is not None:
            entity["Tags"] = self.tags_json
        if self.additional_info_json is not None:
            entity["AdditionalInfo"] = self.additional_info_json
        if self.instance_data_truncated:
            entity["InstanceDataTruncated"] = self.instance_data_truncated
        return entity

    @classmethod
    def from_entity(cls, entity: Entity) -> UsageRow:
        return cls(
            subscription_id=entity["SubscriptionId"],
            meter_id=entity["MeterId"],
            usage_start=entity["UsageStartTime"],
            usage_end=entity["UsageEndTime"],
            quantity=float(entity["Quantity"]),
            resource_uri=entity["ResourceUri"],
            location=entity.get("Location", ""),
            tags_json=entity.get("Tags"),
            additional_info_json=entity.get("AdditionalInfo"),
            instance_data_truncated=entity.get("InstanceDataTruncated") or "",
        )

    def as_record(self) -> UsageRecord:
        """The row as a source record again (for the quarantine, when storage refuses it)."""
        return UsageRecord(
            subscription_id=self.subscription_id,
            meter_id=self.meter_id,
            usage_start=self.usage_start,
            usage_end=self.usage_end,
            quantity=self.quantity,
            resource_uri=self.resource_uri,
            location=self.location,
            tags=json.loads(self.tags_json) if self.tags_json else None,
            additional_info=(
                json.loads(self.additional_info_json) if self.additional_info_json else None
            ),
        )


def read_hourly_rows(
    account: StorageAccount, subscription_id: str, first_hour: datetime, last_hour: datetime
) -> list[tuple[datetime, UsageRow]]:
    """A subscription's hourly rows reported ``first_hour``..``last_hour``, with the reported
    hour of each; read in one range query and retried whole."""
    table_name = usage_table_name(account.settings.table_prefix, subscription_id)

    def query() -> list[tuple[datetime, UsageRow]]:
        entities = account.table_named(table_name).query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={"first": hourly_partition(first_hour), "last": hourly_partition(last_hour)},
        )
        try:
            return [
                (parse_hour_key(entity["PartitionKey"][1:]), UsageRow.from_entity(entity))
                for entity in entities
            ]
        except ResourceNotFoundError:
            return []  # no usage was ever written for this subscription

    return call_with_retry(query, what=f"read hourly rows of {table_name}")
