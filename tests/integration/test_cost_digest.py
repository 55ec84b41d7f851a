"""The cost digests (``shared.rating.cost_digest``): what a provider's or the whole cloud's
cost query reads holds the ledger's money to the cent, in a few requests whatever the number
of subscriptions, and no money is lost or counted twice when a digest is missing or its
subscription moves to another provider."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.app import FunctionApp
from shared.core.config import Settings
from shared.rating.adjustments import AdjustmentStore
from shared.rating.cost_digest import DIGEST_ROLE, CostDigests, ProviderCostLines
from shared.rating.cost_lines import CostItem, CostLines
from shared.rating.engine import Level
from shared.rating.ledger import ChargeLedger, index_partition
from shared.rating.rater import Rater
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.request_count import StorageRequests
from shared.storage.subscriptions import SubscriptionStore
from tests.integration.test_chargeback import DELEGATED, TENANT_C, collect, source
from tests.integration.test_rating_ledger import FIRST, NOV, SOURCES, WIN, priced_settings, sheet
from tests.scripted_source import PROVIDER, TENANT_A, subscription, vm_record

NOVEMBER = (NOV.first_hour, NOV.next.first_hour - timedelta(days=1))
SCOPES = [
    (None, Level.RETAIL),  # the whole cloud
    (PROVIDER, Level.RETAIL),
    (DELEGATED, Level.RETAIL),
    (DELEGATED, Level.WHOLESALE),
]


def sums(items: Iterable[CostItem]) -> dict[tuple[Any, ...], tuple[Decimal, Decimal]]:
    """Cost and quantity per every dimension the cost query answers by."""
    found: dict[tuple[Any, ...], tuple[Decimal, Decimal]] = {}
    for item in items:
        key = (
            item.subscription_id, item.usage_day, item.charge_type, item.level,
            item.meter_id.lower(), item.resource_uri.lower(), item.location, item.tags,
        )  # fmt: skip
        cost, quantity = found.get(key, (Decimal(0), Decimal(0)))
        found[key] = (cost + item.cost, quantity + item.quantity)
    return found


def from_the_ledger(settings: Settings, provider: str | None, level: Level) -> list[CostItem]:
    """The scope's money read the other way: every indexed subscription's ledger days."""
    account = StorageAccount(settings)
    ledger = ChargeLedger(account)
    charged = {
        subscription
        for owner, tenants in ledger.indexed(NOV, provider).items()
        for subscription in tenants
    }
    return CostLines(ledger, AdjustmentStore(account)).items(charged, *NOVEMBER, NOV, "USD", level)


def from_the_digests(account: StorageAccount, provider: str | None, level: Level) -> list[CostItem]:
    lines = ProviderCostLines(ChargeLedger(account), AdjustmentStore(account))
    return lines.items(provider, None, *NOVEMBER, NOV, "USD", (level,))


@pytest.fixture
def rated(make_settings: Callable[..., Settings]) -> Settings:
    settings = priced_settings(make_settings)
    Rater(StorageAccount(settings), SOURCES).rate_due(60)
    return settings


def test_every_scopes_digests_hold_its_ledgers_money_to_the_cent(rated: Settings) -> None:
    """The whole cloud, each provider, retail and wholesale: the digests' items add up to
    the ledger days' billed shares per subscription, day, meter and resource, and the whole
    cloud's read is 3 requests (index, digests, adjustments) for its 2 subscriptions."""
    for provider, level in SCOPES:
        expected = sums(from_the_ledger(rated, provider, level))
        assert expected, (provider, level)
        assert sums(from_the_digests(StorageAccount(rated), provider, level)) == expected
    counter = StorageRequests()
    from_the_digests(StorageAccount(rated, request_hook=counter), None, Level.RETAIL)
    assert sum(counter.snapshot().values()) == 3


def test_a_subscription_without_its_digest_is_read_from_its_ledger_days(rated: Settings) -> None:
    """A digest that is not there (rated before digests, or a crash before it was written)
    costs its subscription's range read, not money: the answer is the ledger's."""
    account = StorageAccount(rated)
    expected = sums(from_the_ledger(rated, None, Level.RETAIL))
    account.table(DIGEST_ROLE).delete_entity(index_partition(NOV, PROVIDER), TENANT_A)
    counter = StorageRequests()
    counted = StorageAccount(rated, request_hook=counter)
    assert sums(from_the_digests(counted, None, Level.RETAIL)) == expected
    assert sum(counter.snapshot().values()) == 3 + 2  # its days, and its adjustments' month


def test_a_subscription_that_moves_to_another_provider_takes_its_money_along(
    make_settings: Callable[..., Settings],
) -> None:
    """A delegated provider's tenant moves to the default provider mid-month and is rated
    again: the old provider's scope no longer has its money, the new one's has all of it,
    and the whole cloud counts it once, each to the cent with the ledger."""
    settings = make_settings()
    scripted = source()
    hours = [FIRST + n * timedelta(hours=1) for n in range(3)]
    for hour in hours:
        scripted.by_hour[hour] = [vm_record(TENANT_A, hour), vm_record(TENANT_C, hour)]
    collect(settings, scripted, hours[:2])
    account = StorageAccount(settings)
    sheets = SheetStore(account)
    subscriptions = SubscriptionStore(account)
    sheets.put(sheet([{"meterId": WIN, "unitPrice": "0.5"}], effective="2026-01-01"), subscriptions)
    delegated = sheet([{"meterId": WIN, "unitPrice": "0.9"}], scope=f"provider:{DELEGATED}",
                      effective="2026-01-01")  # fmt: skip
    sheets.put(delegated, subscriptions)
    Rater(account, SOURCES).rate_due(60, until=hours[1])
    moved = sum(c for c, _ in sums(from_the_digests(account, DELEGATED, Level.RETAIL)).values())
    assert moved > 0
    scripted.listed = [
        subscription(TENANT_C) if listed.subscription_id == TENANT_C else listed
        for listed in scripted.listed
    ]
    collect(settings, scripted, hours[2:])
    Rater(account, SOURCES).rate_due(60)

    assert sums(from_the_digests(account, DELEGATED, Level.RETAIL)) == {}
    assert sums(from_the_digests(account, DELEGATED, Level.WHOLESALE)) == {}
    whole = sums(from_the_digests(account, None, Level.RETAIL))
    assert whole == sums(from_the_ledger(settings, None, Level.RETAIL)) != {}
    on_default = sums(from_the_digests(account, PROVIDER, Level.RETAIL))
    assert {key[0] for key in on_default} == {TENANT_A.lower(), TENANT_C.lower()}
    assert on_default == whole


def test_a_closed_months_digests_are_written_again_from_its_frozen_ledger(
    make_settings: Callable[..., Settings],
) -> None:
    """Whatever happened to the last digest rating wrote (here: emptied, as two runs at once
    could leave it), finalising the month writes it again from the frozen ledger: a closed
    month's cost is its statement's."""
    settings = make_settings()
    scripted = source()
    hours = [NOV.last_hour - timedelta(hours=1), NOV.last_hour]
    for hour in hours:
        scripted.by_hour[hour] = [vm_record(TENANT_A, hour), vm_record(TENANT_C, hour)]
    collect(settings, scripted, hours)
    account = StorageAccount(settings)
    subscriptions = SubscriptionStore(account)
    SheetStore(account).put(
        sheet([{"meterId": WIN, "unitPrice": "0.5"}], effective="2026-01-01"), subscriptions
    )
    app = FunctionApp(settings)
    assert app.rate_usage().rated_through == NOV.last_hour
    expected = sums(from_the_ledger(settings, None, Level.RETAIL))
    assert sums(from_the_digests(account, None, Level.RETAIL)) == expected != {}
    CostDigests(account).empty(NOV, TENANT_A, PROVIDER)
    assert sums(from_the_digests(account, None, Level.RETAIL)) != expected

    assert app.finalise_statements().months_closed == ["2026-11"]
    assert sums(from_the_digests(account, None, Level.RETAIL)) == expected
