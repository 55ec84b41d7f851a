"""The RateCard, statement and roll-up routes over real HTTP through the local host: shapes
(validated against the shipped OpenAPI document), who sees what, and Azure's errors."""

from __future__ import annotations

import csv
import io
import time
from decimal import Decimal
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.commerce import UsageManagementClient

from devstack.demo_tokens import demo_principal
from devstack.example_prices import load_example_prices
from devstack.host import LocalFunctionsHost
from shared.query.rate_card_filter import FILTER_MESSAGE
from shared.rating.adjustments import AdjustmentStore, Category
from shared.rating.engine import Level, Month
from shared.storage.subscriptions import SubscriptionState
from tests.integration.test_query_api import assert_error, validate
from tests.integration.test_query_isolation import (
    RATE_CARD_ARGS,
    RATE_CARD_PATH,
    ROLLUP_PATH,
    STATEMENT_PATH,
)
from tests.integration.test_query_support import API_VERSION, World, call

BASE_VM = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"
DEC = Month(2026, 12)
ARGS = {"api-version": API_VERSION}


@pytest.fixture(scope="module")
def priced(world: World) -> World:
    """The world with the example sheets (idempotent)."""
    load_example_prices(world.settings)
    return world


def readers(world: World) -> list[tuple[str, str]]:
    """(subscription, an owner) of every active tenant subscription."""
    return [
        (s.subscription_id.lower(), s.owners[0])
        for s in world.tenants()
        if s.owners and s.state is SubscriptionState.ACTIVE
    ]


def test_a_tenant_reads_its_own_statement_and_rate_card_and_no_wholesale(
    priced: World, host: LocalFunctionsHost
) -> None:
    """Each tenant's statement is its own, retail, valid; its rate card is its provider's."""
    discounted = demo_principal(priced.settings, "tenant").subscription_id.lower()
    resold = {
        tenant
        for provider in priced.fleet.delegated_providers
        for tenant in priced.direct_tenants(provider.subscription_id)
    }
    for subscription_id, owner in readers(priced):
        token = priced.token(owner)
        response = call(host.base_url, STATEMENT_PATH.format(subscription_id), ARGS, token)
        assert response.status_code == 200, response.text
        document = response.json()
        validate(document, "Statement")
        assert (document["subscriptionId"], document["level"]) == (subscription_id, "retail")
        assert document["status"] == "provisional"  # November is open in this world
        assert Decimal(document["total"]) == sum(Decimal(x["amount"]) for x in document["lines"])
        card = call(host.base_url, RATE_CARD_PATH.format(subscription_id), RATE_CARD_ARGS, token)
        assert card.status_code == 200, card.text
        validate(card.json(), "ResourceRateCardInfo")
        rates = {m["MeterId"]: m["MeterRates"] for m in card.json()["Meters"]}
        if subscription_id in resold and subscription_id != discounted:
            assert rates[BASE_VM] == {"0": 0.0104, "5000": 0.0091}  # the reseller's sheet
        rollup = call(host.base_url, ROLLUP_PATH.format(subscription_id), ARGS, token)
        assert rollup.status_code == 403


def test_statements_answer_csv_when_asked(priced: World, host: LocalFunctionsHost) -> None:
    """Accept: text/csv gives one row per line and a TOTAL row equal to the JSON total."""
    subscription_id, owner = readers(priced)[0]
    token = priced.token(owner)
    path = STATEMENT_PATH.format(subscription_id)
    document = call(host.base_url, path, ARGS, token).json()
    response = call(host.base_url, path, ARGS, token, headers={"Accept": "text/csv"})
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(document["lines"]) + 1
    assert rows[-1]["meterId"] == "TOTAL"
    assert rows[-1]["amount"] == document["total"]


def test_providers_roll_up_exactly_their_direct_tenants(
    priced: World, host: LocalFunctionsHost
) -> None:
    """Each provider's roll-up lists only its direct tenants; a delegated provider also sees
    its wholesale cost and margin, and one tenant's wholesale statement; others are 403."""
    for provider in priced.providers():
        token = priced.token(provider.owners[0])
        path = ROLLUP_PATH.format(provider.subscription_id)
        response = call(host.base_url, path, ARGS, token)
        assert response.status_code == 200, response.text
        rollup = response.json()
        validate(rollup, "Rollup")
        direct = priced.direct_tenants(provider.subscription_id)
        listed = {tenant["subscriptionId"] for tenant in rollup["tenants"]}
        assert listed <= direct
        assert listed
        delegated = provider.provider_subscription_id is not None
        assert (rollup["wholesaleTotal"] is not None) is delegated
        assert (rollup["resellersTotal"] is None) is delegated
        assert "cloud" not in rollup  # the whole cloud is the admin's
        totals = sum((Decimal(t["total"]) for t in rollup["tenants"]), Decimal(0))
        assert Decimal(rollup["directTenantsTotal"]) == totals
        resold = sum((Decimal(r["wholesaleTotal"]) for r in rollup["resellers"]), Decimal(0))
        assert Decimal(rollup["grandTotal"]) == totals + resold
        if delegated:
            assert Decimal(rollup["margin"]) > 0  # resale at 1.3 x wholesale
            wholesale = sum((Decimal(t["wholesaleTotal"]) for t in rollup["tenants"]), Decimal(0))
            assert Decimal(rollup["wholesaleTotal"]) == wholesale
            tenant = sorted(listed)[0]
            one = call(host.base_url, path, {**ARGS, "subscriberId": tenant}, token).json()
            validate(one, "SubscriberStatement")
            assert one["wholesaleStatement"]["buyerSubscriptionId"] == provider.subscription_id
        for other in priced.providers():
            if other.subscription_id != provider.subscription_id:
                other_path = ROLLUP_PATH.format(other.subscription_id)
                assert call(host.base_url, other_path, ARGS, token).status_code == 403
                stranger = sorted(priced.direct_tenants(other.subscription_id))[0]
                narrowed = call(host.base_url, path, {**ARGS, "subscriberId": stranger}, token)
                if stranger not in direct:
                    assert_error(narrowed, 400, "SubscriberIdIsNotDirectTenant")


def test_the_admin_reads_every_roll_up_and_statement(
    priced: World, host: LocalFunctionsHost
) -> None:
    """The admin role reads every provider's roll-up and any tenant's statement; on the
    default provider's roll-up, the whole cloud: every subscription once, at what its
    statement says it is charged (a delegated provider's tenants are not counted twice)."""
    token = priced.admin_token()
    rollups = {}
    for provider in priced.providers():
        path = ROLLUP_PATH.format(provider.subscription_id)
        response = call(host.base_url, path, ARGS, token)
        assert response.status_code == 200
        rollups[provider.subscription_id.lower()] = response.json()
    root = rollups[priced.fleet.default_provider.subscription_id.lower()]
    validate(root, "Rollup")
    cloud = root["cloud"]
    by_provider = {p["providerSubscriptionId"]: p for p in cloud["providers"]}
    assert set(by_provider) == set(rollups)
    for provider_id, rollup in rollups.items():
        assert by_provider[provider_id]["directTenantsTotal"] == rollup["directTenantsTotal"]
        assert by_provider[provider_id]["grandTotal"] == rollup["grandTotal"]
    statements = Decimal(0)
    for subscription in priced.subscriptions:
        response = call(host.base_url, STATEMENT_PATH.format(subscription), ARGS, token)
        assert response.status_code == 200, response.text
        statements += Decimal(response.json()["total"])
    assert Decimal(cloud["cloudTotal"]) == statements
    direct = sum((Decimal(r["directTenantsTotal"]) for r in rollups.values()), Decimal(0))
    assert Decimal(cloud["cloudTotal"]) == direct
    resold = sum((Decimal(r["wholesaleTotal"]) for r in rollups.values() if r["wholesaleTotal"]),
                 Decimal(0))  # fmt: skip
    assert Decimal(root["resellersTotal"]) == resold
    for subscription_id, _ in readers(priced)[:3]:
        path = STATEMENT_PATH.format(subscription_id)
        assert call(host.base_url, path, ARGS, token).json()["subscriptionId"] == subscription_id
    unknown = STATEMENT_PATH.format("0badc0de-0000-4000-8000-000000000000")
    assert_error(call(host.base_url, unknown, ARGS, token), 404, "NotFound")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"api-version": API_VERSION}, 400, "InvalidFilter"),
        ({**RATE_CARD_ARGS, "$filter": "OfferDurableId eq 'MS-AZR-0003P'"}, 400, "InvalidFilter"),
        (
            {**RATE_CARD_ARGS, "$filter": RATE_CARD_ARGS["$filter"].replace("USD", "EUR")},
            400,
            "InvalidFilter",
        ),
        ({"$filter": RATE_CARD_ARGS["$filter"]}, 400, "NoApiVersion"),
        ({**RATE_CARD_ARGS, "api-version": "2020-01-01"}, 400, "InvalidApiVersionParameter"),
    ],
)
def test_rate_card_errors_answer_as_azure(
    priced: World, host: LocalFunctionsHost, params: dict[str, str], status: int, code: str
) -> None:
    """Bad filters are 400 with Azure's message (ARM-shaped); api-version as the usage API."""
    subscription_id, owner = readers(priced)[0]
    response = call(
        host.base_url, RATE_CARD_PATH.format(subscription_id), params, priced.token(owner)
    )
    body: dict[str, Any] = assert_error(response, status, code)
    if code == "InvalidFilter":
        assert body["error"]["message"] == FILTER_MESSAGE


def test_statement_month_errors(priced: World, host: LocalFunctionsHost) -> None:
    """A month that is no month, or one not started yet: 400 InvalidMonth."""
    subscription_id, owner = readers(priced)[0]
    token = priced.token(owner)
    for month in ("2026-13", "november", "2999-01"):
        path = STATEMENT_PATH.replace("2026-11", month).format(subscription_id)
        assert_error(call(host.base_url, path, ARGS, token), 400, "InvalidMonth")


class _Token:
    """A TokenCredential handing out one bearer token (the local issuer's)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def test_azures_own_python_client_reads_the_rate_card(
    priced: World, host: LocalFunctionsHost
) -> None:
    """azure-mgmt-commerce's RateCard client parses our answer, and our 400 as an ARM error."""
    subscription_id, owner = readers(priced)[0]
    client = UsageManagementClient(
        credential=_Token(priced.token(owner)),
        subscription_id=subscription_id,
        base_url=host.base_url,
    )
    # enforce_https=False: the local host speaks http; production is https.
    card = client.rate_card.get(filter=RATE_CARD_ARGS["$filter"], enforce_https=False)
    assert card.currency == "USD"
    assert card.is_tax_included is False
    by_id = {meter.meter_id: meter for meter in card.meters}
    assert set(by_id[BASE_VM].meter_rates) == {"0", "5000"}
    assert all(isinstance(rate, float) for rate in by_id[BASE_VM].meter_rates.values())
    with pytest.raises(HttpResponseError) as refused:
        client.rate_card.get(filter="Currency eq 'USD'", enforce_https=False)
    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error.code == "InvalidFilter"


ADJUSTMENTS = "/subscriptions/{}/providers/Microsoft.Commerce/adjustments/2026-12"
SUBSCRIBER_ADJUSTMENTS = (
    "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberAdjustments/2026-12"
)


def test_adjustments_are_read_per_scope_and_are_on_the_statement(
    priced: World, host: LocalFunctionsHost
) -> None:
    """December's adjustments (the operator CLI's): a tenant reads its own retail ones; a
    delegated provider its tenants' retail ones and the wholesale ones it is charged; the
    default provider its direct tenants' retail ones; the admin every one; the statement
    carries them as lines, and its total is their sum (no usage in December)."""
    store = AdjustmentStore(priced.account)
    default = priced.fleet.default_provider.subscription_id.lower()
    delegated = priced.fleet.delegated_providers[0].subscription_id.lower()
    owned = dict(readers(priced))
    direct = sorted(s for s in priced.direct_tenants(default) if s in owned)[0]
    resold = sorted(s for s in priced.direct_tenants(delegated) if s in owned)[0]
    made = {
        (subscription, level): store.add(
            subscription_id=subscription, level=level, month=DEC, category=Category.CREDIT,
            amount=Decimal(amount), currency="USD", reason="SLA credit", created_by="op",
        ).adjustment_id
        for subscription, level, amount in (
            (direct, Level.RETAIL, "-1.25"),
            (resold, Level.RETAIL, "-2.00"),
            (resold, Level.WHOLESALE, "-0.75"),
        )
    }  # fmt: skip

    def ids(path: str, token: str, **params: str) -> set[str]:
        response = call(host.base_url, path, {**ARGS, **params}, token)
        assert response.status_code == 200, response.text
        validate(response.json(), "AdjustmentList")
        return {a["id"] for a in response.json()["value"]}

    assert ids(ADJUSTMENTS.format(direct), priced.token(owned[direct])) == {
        made[(direct, Level.RETAIL)]
    }
    assert ids(ADJUSTMENTS.format(resold), priced.token(owned[resold])) == {
        made[(resold, Level.RETAIL)]
    }
    reseller = priced.token(priced.fleet.delegated_providers[0].owners[0])
    assert ids(SUBSCRIBER_ADJUSTMENTS.format(delegated), reseller) == {
        made[(resold, Level.RETAIL)],
        made[(resold, Level.WHOLESALE)],
    }
    root = priced.token(priced.fleet.default_provider.owners[0])
    assert ids(SUBSCRIBER_ADJUSTMENTS.format(default), root) == {made[(direct, Level.RETAIL)]}
    assert call(host.base_url, ADJUSTMENTS.format(resold), ARGS, root).status_code == 403
    admin = priced.admin_token()
    unknown = SUBSCRIBER_ADJUSTMENTS.format("0badc0de-0000-4000-8000-000000000000")
    assert_error(call(host.base_url, unknown, ARGS, admin), 404, "NotFound")
    assert ids(SUBSCRIBER_ADJUSTMENTS.format(delegated), admin, subscriberId=resold) == {
        made[(resold, Level.RETAIL)],
        made[(resold, Level.WHOLESALE)],
    }
    statement = call(
        host.base_url, STATEMENT_PATH.replace("2026-11", "2026-12").format(resold), ARGS, reseller
    )
    assert statement.status_code == 403  # the tenant route is the tenant's (and the admin's)
    statement = call(
        host.base_url,
        STATEMENT_PATH.replace("2026-11", "2026-12").format(resold),
        ARGS,
        priced.token(owned[resold]),
    ).json()
    validate(statement, "Statement")
    assert [a["id"] for a in statement["adjustments"]] == [made[(resold, Level.RETAIL)]]
    assert (statement["adjustmentsTotal"], statement["total"]) == ("-2.00", "-2.00")
