"""Operator edits of subscriptions: billing mapping and readers survive the collector's sync."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.collection.collector import Collector
from shared.core.errors import BadInputError
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore, index_partition
from shared.storage.table_writer import PartitionWriter
from tests.scripted_source import TENANT_A, ScriptedSource, vm_record

T0 = datetime(2026, 11, 20, 0, tzinfo=UTC)
READER = "55555555-5555-5555-5555-555555555555"


def test_operator_edits_survive_the_next_sync(make_settings) -> None:
    """Billing mapping and granted readers stay after the collector syncs subscriptions again."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    source = ScriptedSource(by_hour={T0: [vm_record(TENANT_A, T0)]})
    account = StorageAccount(settings)
    Collector(settings, account, source).collect_due_hours(T0 + timedelta(hours=1))
    store = SubscriptionStore(account)

    store.set_billing(TENANT_A, "saas-contoso", "gold")
    granted = store.grant_reader(TENANT_A, READER.upper())
    assert granted.readers == (READER,)
    source.by_hour[T0 + timedelta(hours=1)] = [vm_record(TENANT_A, T0 + timedelta(hours=1))]
    Collector(settings, account, source).collect_due_hours(T0 + timedelta(hours=2))

    stored = store.get(TENANT_A)
    assert stored is not None
    assert (stored.billing_resource_id, stored.billing_plan_id) == ("saas-contoso", "gold")
    assert stored.readers == (READER,)
    assert store.revoke_reader(TENANT_A, READER).readers == ()


def test_editing_an_unknown_subscription_or_half_a_mapping_is_refused(account) -> None:
    """Unknown subscriptions and a resource without a plan are clear errors, not writes."""
    store = SubscriptionStore(account)
    with pytest.raises(BadInputError, match="not known"):
        store.set_billing("99999999-9999-9999-9999-999999999999", "r", "p")
    with pytest.raises(BadInputError, match="both"):
        store.set_billing(TENANT_A, "r", "")


def test_a_providers_tenants_are_checked_by_the_cheaper_read(make_settings) -> None:
    """Which candidates are a provider's tenants is answered right, by a page of its index
    per 1,000 tenants or a query per 14 candidates, whichever costs fewer requests."""
    settings = make_settings()
    StorageAccount(settings).ensure_tables()
    rng = random.Random(28)

    def guids(count: int) -> list[str]:
        return sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count))

    small, big = guids(2)
    tenants = {small: guids(300), big: guids(1_500)}
    with PartitionWriter(StorageAccount(settings), parallelism=4) as writer:
        for provider, ids in tenants.items():
            writer.write_partition(
                settings.table_name("subscriptions"),
                [{"PartitionKey": index_partition(provider), "RowKey": key} for key in ids],
            )
    strangers = guids(10)
    sent: list[str] = []
    store = SubscriptionStore(StorageAccount(settings, request_hook=lambda r: sent.append("")))

    def check(provider: str, candidates: list[str]) -> int:
        sent.clear()
        mine = sorted(set(candidates) & set(tenants[provider]))
        assert store.tenants_among(provider, [c.upper() for c in candidates]) == mine
        return len(sent)

    # Few candidates: one query by key, whatever the provider's size.
    assert check(big, tenants[big][::300] + strangers[:5]) == 1
    # A small provider's 110 candidates: its whole index in one page, not 8 queries by key.
    assert check(small, tenants[small][::3] + strangers) == 1
    # A big provider: 510 candidates cost its 2 pages, not 37 queries ...
    assert check(big, tenants[big][::3] + strangers) == 2
    # ... and 20 of them at most the 2 queries by key and one page.
    assert check(big, tenants[big][::83] + strangers[:2]) <= 1 + 2
