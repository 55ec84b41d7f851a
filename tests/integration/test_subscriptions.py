"""Operator edits of subscriptions: billing mapping and readers survive the collector's sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.collection.collector import Collector
from shared.core.errors import BadInputError
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
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
