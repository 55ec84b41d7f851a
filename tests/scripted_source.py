"""A usage source whose records a test spells out, plus table snapshots for comparisons."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.data.tables import TableServiceClient

from shared.core.usage import UsageRecord
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription, SubscriptionState

HOUR = timedelta(hours=1)
PROVIDER = "00000000-0000-0000-0000-00000000000a"
TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "22222222-2222-2222-2222-222222222222"
WINDOWS_VM_HOURS = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
BASE_VM_HOURS = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"
STATIC_IP = "F271A8A388C44D93956A063E1D2FA80B"


def subscription(subscription_id: str, *, provider: str | None = PROVIDER) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        display_name=f"sub {subscription_id[:4]}",
        tenant_id="33333333-3333-3333-3333-333333333333",
        provider_subscription_id=provider,
        owners=("44444444-4444-4444-4444-444444444444",),
        state=SubscriptionState.ACTIVE,
        is_provider=provider is None,
    )


def vm_record(
    subscription_id: str, usage_hour: datetime, *, name: str = "vm1", quantity: float = 8.0
) -> UsageRecord:
    return UsageRecord(
        subscription_id=subscription_id,
        meter_id=WINDOWS_VM_HOURS,
        usage_start=usage_hour,
        usage_end=usage_hour + HOUR,
        quantity=quantity,
        resource_uri=(
            f"/subscriptions/{subscription_id}/resourceGroups/rg/providers/"
            f"Microsoft.Compute/virtualMachines/{name}"
        ),
        location="local",
        tags={"env": "prod"},
        additional_info={"ServiceType": "Standard_A4"},
    )


@dataclass
class ScriptedSource:
    """Serves the records a test put in ``by_hour``; ``on_record`` can inject faults."""

    by_hour: dict[datetime, list[UsageRecord]] = field(default_factory=dict)
    listed: list[Subscription] = field(
        default_factory=lambda: [
            subscription(PROVIDER, provider=None),
            subscription(TENANT_A),
            subscription(TENANT_B),
        ]
    )
    on_record: Callable[[int], None] | None = None
    name: str = "scripted"

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]:
        return list(self.listed)

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        for index, record in enumerate(self.by_hour.get(reported_hour, [])):
            if self.on_record is not None:
                self.on_record(index)
            yield record


def tables_of(account: StorageAccount) -> list[str]:
    """Names of every table this account's settings own (their prefix), sorted."""
    prefix = account.settings.table_prefix
    service = TableServiceClient.from_connection_string(
        account.settings.storage_connection_string.get_secret_value()  # type: ignore[union-attr]
    )
    return sorted(
        table.name
        for table in service.query_tables(
            "TableName ge @low and TableName lt @high",
            parameters={"low": prefix, "high": prefix + "~"},
        )
    )


def snapshot(account: StorageAccount, *kinds: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every entity, keys and values, in key order, of the tables of ``kinds``.

    A kind is an app table role (``hours``, ``quarantine``, ...) or ``usage`` for every
    subscription's usage table. Tables are named without the settings' prefix, so two
    accounts with different prefixes compare equal when they hold the same data.
    """
    prefix = account.settings.table_prefix
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for name in tables_of(account):
        kind = name[len(prefix) :]
        if kind not in kinds and not ("usage" in kinds and kind.startswith("u")):
            continue
        entities = account.table_named(name).list_entities()
        tables[kind] = sorted(
            (entity["PartitionKey"], entity["RowKey"], tuple(sorted(entity.items())))
            for entity in entities
        )
    return tables


def usage_entities(account: StorageAccount) -> list[dict[str, Any]]:
    """Every usage row (hourly and daily) of every subscription table, as stored."""
    prefix = account.settings.table_prefix
    rows: list[dict[str, Any]] = []
    for name in tables_of(account):
        if name[len(prefix) :].startswith("u"):
            rows.extend(dict(entity) for entity in account.table_named(name).list_entities())
    return rows
