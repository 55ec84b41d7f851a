"""The Cost Management Query route and the subscriptions list over real HTTP through the local
host: Microsoft's own clients read them, every money figure equals the statements' and the
roll-ups' to the cent, scopes hold, paging returns every row once, errors are ARM's."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.costmanagement import CostManagementClient
from azure.mgmt.costmanagement.models import (
    QueryAggregation,
    QueryComparisonExpression,
    QueryDataset,
    QueryDefinition,
    QueryFilter,
    QueryGrouping,
    QueryTimePeriod,
)
from azure.mgmt.subscription import SubscriptionClient

from devstack.example_prices import load_example_prices
from devstack.host import LocalFunctionsHost
from shared.storage.subscriptions import SubscriptionState, SubscriptionStore
from tests.integration.test_query_api import assert_error, validate
from tests.integration.test_query_support import API_VERSION, DAY, World, call

NOVEMBER = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-30T00:00:00Z"}
STATEMENT = "/subscriptions/{}/providers/Microsoft.Commerce/statements/2026-11"
ROLLUP = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberStatements/2026-11"
QUERY = "/subscriptions/{}/providers/Microsoft.CostManagement/query"
PROVIDER_QUERY = (
    "/subscriptions/{}/providers/Microsoft.Commerce.Admin/providers/Microsoft.CostManagement/query"
)
VERSION = {"api-version": "2023-03-01"}
CHARGES = {"api-version": API_VERSION}
USAGE_ONLY = {"dimensions": {"name": "ChargeType", "operator": "In", "values": ["Usage"]}}


@pytest.fixture(scope="module")
def priced(world: World) -> World:
    """The world with the example sheets (idempotent)."""
    load_example_prices(world.settings)
    return world


class _Token:
    """A TokenCredential handing out one bearer token (the local issuer's)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def post(
    base_url: str, path: str, body: Any, token: str | None, params: dict[str, str] | None = None
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        base_url + path, params=params or VERSION, data=data, headers=headers, timeout=60
    )


def definition(grouping: list[str], *, daily: bool = False, **dataset: Any) -> dict[str, Any]:
    return {
        "type": "ActualCost",
        "timeframe": "Custom",
        "timePeriod": NOVEMBER,
        "dataset": {
            "granularity": "Daily" if daily else "None",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [{"type": "Dimension", "name": name} for name in grouping],
            **dataset,
        },
    }


def by_column(answer: dict[str, Any]) -> list[dict[str, Any]]:
    names = [column["name"] for column in answer["properties"]["columns"]]
    return [dict(zip(names, row, strict=True)) for row in answer["properties"]["rows"]]


def cents(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def test_azures_client_reads_a_tenants_cost_and_it_is_the_statement_to_the_cent(
    priced: World, host: LocalFunctionsHost
) -> None:
    """azure-mgmt-costmanagement reads a tenant's daily cost per meter; its sum is the
    tenant's November statement usage total, and its meters' sums the statement lines."""
    tenant = next(s for s in priced.tenants() if s.owners and s.state is SubscriptionState.ACTIVE)
    subscription_id, token = tenant.subscription_id.lower(), priced.token(tenant.owners[0])
    client = CostManagementClient(_Token(token), base_url=host.base_url)
    result = client.query.usage(
        f"subscriptions/{subscription_id}",
        QueryDefinition(
            type="ActualCost",
            timeframe="Custom",
            time_period=QueryTimePeriod(from_property=DAY - timedelta(days=19), to=DAY),
            dataset=QueryDataset(
                granularity="Daily",
                aggregation={"totalCost": QueryAggregation(name="Cost", function="Sum")},
                grouping=[QueryGrouping(type="Dimension", name="MeterId")],
                filter=QueryFilter(
                    dimensions=QueryComparisonExpression(
                        name="ChargeType", operator="In", values_property=["Usage"]
                    )
                ),
            ),
        ),
        enforce_https=False,  # the local host speaks http; production is https
    )
    assert result is not None
    names = [column.name for column in result.properties.columns]
    assert names == ["Cost", "UsageDate", "MeterId", "Currency"]
    rows = result.properties.rows
    assert rows
    assert {row[3] for row in rows} == {"USD"}
    assert {row[1] for row in rows} <= {20261119, 20261120}
    statement = call(host.base_url, STATEMENT.format(subscription_id), CHARGES, token).json()
    per_meter: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        per_meter[row[2].lower()] += cents(row[0])
    assert sum(per_meter.values()) == Decimal(statement["usageTotal"])
    lines: dict[str, Decimal] = defaultdict(Decimal)
    for line in statement["lines"]:
        lines[line["meterId"].lower()] += Decimal(line["amount"])
    assert {k: v for k, v in per_meter.items() if v} == {k: v for k, v in lines.items() if v}


def test_a_providers_scope_is_its_direct_tenants_and_the_admins_root_the_whole_cloud(
    priced: World, host: LocalFunctionsHost
) -> None:
    """A provider's cost per subscription equals each direct tenant's statement; the admin
    on the default provider's scope gets every charged tenant once, as their statements."""
    admin = priced.admin_token()
    statements: dict[str, Decimal] = {}
    for subscription_id in priced.reported_subscriptions():
        document = call(host.base_url, STATEMENT.format(subscription_id), CHARGES, admin).json()
        statements[subscription_id] = Decimal(document["usageTotal"])
    body = definition(["SubscriptionId"], filter=USAGE_ONLY)
    for provider in priced.fleet.delegated_providers:
        token = priced.token(provider.owners[0])
        response = post(host.base_url, PROVIDER_QUERY.format(provider.subscription_id), body, token)
        assert response.status_code == 200, response.text
        got = {row["SubscriptionId"]: cents(row["Cost"]) for row in by_column(response.json())}
        direct = priced.direct_tenants(provider.subscription_id)
        assert got
        assert set(got) <= direct
        assert got == {s: statements[s] for s in got}
        assert {s for s in direct if statements.get(s)} <= set(got)
    root = priced.fleet.default_provider.subscription_id
    response = post(host.base_url, PROVIDER_QUERY.format(root), body, admin)
    assert response.status_code == 200, response.text
    cloud = {row["SubscriptionId"]: cents(row["Cost"]) for row in by_column(response.json())}
    assert cloud == {s: v for s, v in statements.items() if s in cloud}
    assert {s for s, v in statements.items() if v} <= set(cloud)
    assert set(cloud) - priced.direct_tenants(root)  # delegated providers' tenants too


def test_groupings_filters_and_days_add_up_to_the_same_money(
    priced: World, host: LocalFunctionsHost
) -> None:
    """Grouping by resource group, provider or meter, daily or not, filtered to a meter or
    not: every way of slicing a tenant's money adds up to the same cents."""
    tenant = next(
        s for s in priced.tenants() if s.subscription_id.lower() in priced.reported_subscriptions()
    )
    path, admin = QUERY.format(tenant.subscription_id), priced.admin_token()
    totals = set()
    answers = {}
    for grouping, daily in (
        (["ResourceGroup"], False),
        (["ServiceName", "Meter"], True),
        ([], True),
    ):
        response = post(host.base_url, path, definition(grouping, daily=daily), admin)
        assert response.status_code == 200, response.text
        validate(response.json(), "QueryResult")
        rows = by_column(response.json())
        answers[tuple(grouping)] = rows
        totals.add(sum((cents(row["Cost"]) for row in rows), Decimal(0)))
    assert len(totals) == 1
    providers = {row["ServiceName"] for row in answers[("ServiceName", "Meter")]}
    assert all(p.startswith("Microsoft.") for p in providers if p)
    one = sorted(providers - {""})[0]
    narrowed = definition(
        ["ServiceName"],
        filter={"dimensions": {"name": "ServiceName", "operator": "In", "values": [one.upper()]}},
    )
    rows = by_column(post(host.base_url, path, narrowed, admin).json())
    assert {row["ServiceName"] for row in rows} == {one}
    expected = sum(
        (cents(r["Cost"]) for r in answers[("ServiceName", "Meter")] if r["ServiceName"] == one),
        Decimal(0),
    )
    assert sum((cents(r["Cost"]) for r in rows), Decimal(0)) == expected
    group = answers[("ResourceGroup",)][0]["ResourceGroup"]
    scoped = QUERY.format(f"{tenant.subscription_id}/resourceGroups/{group.upper()}")
    rows = by_column(post(host.base_url, scoped, definition(["ResourceGroup"]), admin).json())
    assert [row["ResourceGroup"] for row in rows] == [group]


def test_paging_returns_every_row_once_and_tokens_are_bound(
    priced: World, host: LocalFunctionsHost
) -> None:
    """$top pages through nextLink (a POST of the same body); a token is refused for another
    body or another caller."""
    tenant = next(
        s
        for s in priced.tenants()
        if s.owners
        and s.state is SubscriptionState.ACTIVE
        and s.subscription_id.lower() in priced.reported_subscriptions()
    )
    path, admin = QUERY.format(tenant.subscription_id), priced.admin_token()
    body = definition(["ResourceId", "MeterId"], daily=True)
    whole = by_column(post(host.base_url, path, body, admin).json())
    assert len(whole) > 6
    top = -(-len(whole) // 3)
    response = post(host.base_url, path, body, admin, {**VERSION, "$top": str(top)})
    pages, rows = 1, by_column(response.json())
    link = response.json()["properties"]["nextLink"]
    first_link = link
    while link:
        assert link.startswith(host.base_url + "/subscriptions/")
        answer = requests.post(
            link, data=json.dumps(body), headers={"Authorization": f"Bearer {admin}"}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        rows += by_column(answer.json())
        link = answer.json()["properties"]["nextLink"]
        pages += 1
    assert pages == 3
    assert rows == whole
    other = definition(["MeterId"], daily=True)
    refused = requests.post(
        first_link, data=json.dumps(other), headers={"Authorization": f"Bearer {admin}"}, timeout=60
    )
    assert_error(refused, 400, "InvalidContinuationToken")
    owner = priced.token(tenant.owners[0])
    refused = requests.post(
        first_link, data=json.dumps(body), headers={"Authorization": f"Bearer {owner}"}, timeout=60
    )
    assert_error(refused, 400, "InvalidContinuationToken")


def test_scopes_and_errors_answer_as_arm(priced: World, host: LocalFunctionsHost) -> None:
    """No token 401, another's subscription or provider 403, unknown 404, GET 405, and a bad
    definition 400 naming what is wrong."""
    tenants = [s for s in priced.tenants() if s.owners and s.state is SubscriptionState.ACTIVE]
    mine, other = tenants[0], tenants[1]
    token = priced.token(mine.owners[0])
    body = definition([])
    assert post(host.base_url, QUERY.format(mine.subscription_id), body, token).status_code == 200
    assert_error(
        post(host.base_url, QUERY.format(mine.subscription_id), body, None),
        401,
        "InvalidAuthenticationToken",
    )
    assert_error(
        post(host.base_url, QUERY.format(other.subscription_id), body, token),
        403,
        "AuthorizationFailed",
    )
    provider = priced.fleet.delegated_providers[0].subscription_id
    assert_error(
        post(host.base_url, PROVIDER_QUERY.format(provider), body, token),
        403,
        "AuthorizationFailed",
    )
    unknown = "00000000-0000-0000-0000-00000000abcd"
    assert_error(
        post(host.base_url, QUERY.format(unknown), body, priced.admin_token()), 404, "NotFound"
    )
    assert_error(
        call(host.base_url, QUERY.format(mine.subscription_id), VERSION, token),
        405,
        "MethodNotAllowed",
    )
    path = QUERY.format(mine.subscription_id)
    bad = [
        definition(["Colour"]),
        {**body, "timeframe": "Yesterday"},
        definition(["MeterId", "Meter", "ResourceId"]),
        {**body, "timePeriod": {"from": "2025-01-01", "to": "2026-11-30"}},
        {**body, "timePeriod": {"from": "2026-11-30", "to": "2026-11-01"}},
        {**body, "type": "Forecast"},
        definition(
            [], filter={"dimensions": {"name": "Meter", "operator": "Contains", "values": ["x"]}}
        ),
        b"{not json",
    ]
    for item in bad:
        assert_error(post(host.base_url, path, item, token), 400, "BadRequest")
    assert_error(
        post(host.base_url, path, body, token, {"api-version": "2015-06-01-preview"}),
        400,
        "InvalidApiVersionParameter",
    )


def test_azures_subscription_client_lists_what_the_caller_may_read(
    priced: World, host: LocalFunctionsHost
) -> None:
    """azure-mgmt-subscription lists a tenant's subscriptions by name (owned and read), a
    provider owner's its provider subscription, and the admin's every subscription."""
    owner = next(s.owners[0] for s in priced.tenants() if s.owners)
    stored = SubscriptionStore(priced.account).all()
    expected = {
        s.subscription_id.lower(): s.display_name
        for s in stored.values()
        if s.state is not SubscriptionState.DELETED
        and owner.lower() in {o.lower() for o in (*s.owners, *s.readers)}
    }
    client = SubscriptionClient(_Token(priced.token(owner)), base_url=host.base_url)
    listed = list(client.subscriptions.list(enforce_https=False))
    assert {s.subscription_id: s.display_name for s in listed} == expected
    assert all(s.state == "Enabled" or s.state == "Disabled" for s in listed)
    admin = SubscriptionClient(_Token(priced.admin_token()), base_url=host.base_url)
    every = {s.subscription_id for s in admin.subscriptions.list(enforce_https=False)}
    assert every == set(stored)
    provider = priced.fleet.delegated_providers[0]
    response = call(
        host.base_url,
        "/subscriptions",
        {"api-version": "2022-12-01"},
        priced.token(provider.owners[0]),
    )
    validate(response.json(), "SubscriptionListResult")
    roles = {item["subscriptionId"]: item["tags"]["usageRole"] for item in response.json()["value"]}
    assert roles[provider.subscription_id.lower()] == "provider"
    kinds = {
        item["subscriptionId"]: item["tags"].get("providerKind")
        for item in response.json()["value"]
    }
    assert kinds[provider.subscription_id.lower()] == "delegated"
    root = priced.fleet.default_provider
    listed = call(
        host.base_url, "/subscriptions", {"api-version": "2022-12-01"}, priced.token(root.owners[0])
    ).json()["value"]
    assert {i["subscriptionId"]: i["tags"].get("providerKind") for i in listed}[
        root.subscription_id.lower()
    ] == "default"
    with pytest.raises(HttpResponseError):
        list(
            SubscriptionClient(_Token("not-a-token"), base_url=host.base_url).subscriptions.list(
                enforce_https=False
            )
        )


def levels(answer: dict[str, Any]) -> dict[str, Decimal]:
    """The cents of each ``PricingLevel`` in an answer grouped by it (and maybe more)."""
    found: dict[str, Decimal] = defaultdict(Decimal)
    for row in by_column(answer):
        found[row["PricingLevel"]] += cents(row["Cost"])
    return dict(found)


def test_a_providers_wholesale_and_margin_are_the_roll_ups_through_pricing_level(
    priced: World, host: LocalFunctionsHost
) -> None:
    """Grouped by PricingLevel, a delegated provider's retail, wholesale and their difference
    are the roll-up's charged, wholesale and margin to the cent, tenant by tenant; the default
    provider's wholesale is its resellers' total, under each reseller with no tenant's
    resource; the admin's root retail is the whole cloud; a tenant has no wholesale."""
    body = definition(["PricingLevel"])
    for provider in priced.fleet.delegated_providers:
        token = priced.token(provider.owners[0])
        path = PROVIDER_QUERY.format(provider.subscription_id)
        response = post(host.base_url, path, body, token)
        assert response.status_code == 200, response.text
        rollup = call(host.base_url, ROLLUP.format(provider.subscription_id), CHARGES, token)
        figures = rollup.json()
        split = levels(response.json())
        assert split["retail"] == Decimal(figures["directTenantsTotal"])
        assert split["wholesale"] == Decimal(figures["wholesaleTotal"])
        assert split["retail"] - split["wholesale"] == Decimal(figures["margin"])
        assert 0 < split["wholesale"] < split["retail"]
        per_tenant = post(
            host.base_url, path, definition(["PricingLevel", "SubscriptionId"]), token
        )
        wholesale = {
            row["SubscriptionId"]: cents(row["Cost"])
            for row in by_column(per_tenant.json())
            if row["PricingLevel"] == "wholesale"
        }
        assert wholesale == {
            t["subscriptionId"]: Decimal(t["wholesaleTotal"])
            for t in figures["tenants"]
            if Decimal(t["wholesaleTotal"])
        }
        plain = post(host.base_url, path, definition([]), token)
        assert sum(cents(r["Cost"]) for r in by_column(plain.json())) == split["retail"]
    root = priced.fleet.default_provider
    owner = priced.token(root.owners[0])
    path = PROVIDER_QUERY.format(root.subscription_id)
    figures = call(host.base_url, ROLLUP.format(root.subscription_id), CHARGES, owner).json()
    split = levels(post(host.base_url, path, body, owner).json())
    assert split["retail"] == Decimal(figures["directTenantsTotal"])
    assert split["wholesale"] == Decimal(figures["resellersTotal"]) > 0
    assert split["retail"] + split["wholesale"] == Decimal(figures["grandTotal"])
    only = {"dimensions": {"name": "PricingLevel", "operator": "In", "values": ["Wholesale"]}}
    resold = by_column(
        post(
            host.base_url, path, definition(["SubscriptionId", "ResourceId"], filter=only), owner
        ).json()
    )
    assert {row["SubscriptionId"] for row in resold} == {
        r["subscriptionId"] for r in figures["resellers"]
    }
    assert {row["ResourceId"] for row in resold} == {""}
    admin = priced.admin_token()
    cloud = call(host.base_url, ROLLUP.format(root.subscription_id), CHARGES, admin).json()
    split = levels(post(host.base_url, path, body, admin).json())
    assert split["retail"] == Decimal(cloud["cloud"]["cloudTotal"])
    assert split["wholesale"] == Decimal(figures["resellersTotal"])
    tenant = next(
        s
        for s in priced.tenants()
        if s.owners
        and s.state is SubscriptionState.ACTIVE
        and (s.provider_subscription_id or "").lower()
        == priced.fleet.delegated_providers[0].subscription_id.lower()
        and s.subscription_id.lower() in priced.reported_subscriptions()
    )
    mine = post(
        host.base_url,
        QUERY.format(tenant.subscription_id),
        definition(["PricingLevel"]),
        priced.token(tenant.owners[0]),
    )
    assert set(levels(mine.json())) == {"retail"}


def test_amortized_cost_and_usage_are_the_actual_cost(
    priced: World, host: LocalFunctionsHost
) -> None:
    """With no reservations or savings plans there is nothing to amortise: AmortizedCost and
    Usage answer exactly ActualCost's rows, day by day and charge type by charge type."""
    root = priced.fleet.default_provider.subscription_id
    path, admin = PROVIDER_QUERY.format(root), priced.admin_token()
    answers = {}
    for kind in ("ActualCost", "AmortizedCost", "Usage"):
        body = {**definition(["ChargeType", "SubscriptionId"], daily=True), "type": kind}
        response = post(host.base_url, path, body, admin)
        assert response.status_code == 200, response.text
        answers[kind] = response.json()["properties"]["rows"]
    assert answers["ActualCost"]
    assert answers["AmortizedCost"] == answers["ActualCost"] == answers["Usage"]
