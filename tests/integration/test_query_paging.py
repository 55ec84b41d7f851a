"""Paging, time semantics and row shapes of query_usage, over real HTTP against Azurite.

The expected answers are computed independently: from the simulated fleet's own records
(what the source reported) or from the tables read with the raw SDK, never by the code
under test.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devstack.host import LocalFunctionsHost
from devstack.tokens import LocalIssuer
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import floor_day
from shared.core.meters import catalogue
from shared.query.usage_api import HttpCall, UsageApi
from shared.storage.account import StorageAccount
from tests.app_settings import LOCAL_VALUES
from tests.azure_paging import AzurePagingFront
from tests.integration.test_query_support import (
    DAY,
    HOUR,
    PROVIDER_PATH,
    TENANT_PATH,
    World,
    call,
    follow,
    query_string,
    window,
)
from tests.scripted_source import PROVIDER, TENANT_A, TENANT_B, ScriptedSource, vm_record


def identity(row: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """A detailed row's identity: subscription, meter, usage window, resource."""
    properties = row["properties"]
    resource = json.loads(properties["instanceData"])["Microsoft.Resources"]["resourceUri"]
    return (
        properties["subscriptionId"],
        properties["meterId"].lower(),
        properties["usageStartTime"],
        properties["usageEndTime"],
        resource.lower(),
    )


def source_rows(world: World, subscriptions: set[str], hours: list[datetime]) -> dict:
    """What the fleet reported in ``hours`` for ``subscriptions``, summed per identity."""
    expected: dict[tuple[str, str, str, str, str], float] = defaultdict(float)
    for hour in hours:
        for record in world.fleet.usage(hour):
            subscription = str(record.subscription_id).lower()
            if subscription in subscriptions:
                key = (
                    subscription,
                    str(record.meter_id).lower(),
                    record.usage_start.isoformat(),
                    record.usage_end.isoformat(),
                    str(record.resource_uri).lower(),
                )
                expected[key] += float(record.quantity)
    return expected


def delegated_provider(world: World) -> str:
    """The delegated provider whose direct tenants have the most usage (> 3,000 rows/day)."""
    return world.fleet.delegated_providers[0].subscription_id


def test_paging_over_3000_rows_returns_each_row_once_in_stable_order(
    world: World, host: LocalFunctionsHost
) -> None:
    """A provider day over several 1,000-row pages: every reported row once, stable order."""
    provider = delegated_provider(world)
    token = world.admin_token()
    first = call(host.base_url, PROVIDER_PATH.format(provider), window(), token)
    rows, pages = follow(first, token)
    assert len(rows) > 3000
    assert all(len(page.json()["value"]) == 1000 for page in pages[:-1])
    assert "nextLink" not in pages[-1].json()
    assert "Link" not in pages[-1].headers
    assert pages[0].headers["Link"] == f'<{pages[0].json()["nextLink"]}>; rel="next"'
    keys = [identity(row) for row in rows]
    assert len(set(keys)) == len(keys)
    expected = source_rows(
        world, world.direct_tenants(provider), [DAY + n * HOUR for n in range(24)]
    )
    assert set(keys) == set(expected)
    for row in rows:
        assert row["properties"]["quantity"] == pytest.approx(expected[identity(row)])
    again, _ = follow(call(host.base_url, PROVIDER_PATH.format(provider), window(), token), token)
    assert [identity(row) for row in again] == keys
    subscriptions = [row["properties"]["subscriptionId"] for row in rows]
    assert subscriptions == sorted(subscriptions)


def test_paging_is_stable_while_collection_writes_a_later_hour(
    world: World, host: LocalFunctionsHost
) -> None:
    """A window reaching past the watermark: pages after a new hour is collected add nothing."""
    provider = delegated_provider(world)
    token = world.admin_token()
    params = window(DAY + 12 * HOUR, DAY + timedelta(days=1, hours=2))
    first = call(host.base_url, PROVIDER_PATH.format(provider), params, token)
    assert first.status_code == 200
    assert "nextLink" in first.json()
    world.collect(DAY + 24 * HOUR)  # the watermark moves past the window's first page
    rows, _ = follow(first, token)
    keys = [identity(row) for row in rows]
    assert len(set(keys)) == len(keys)
    expected = source_rows(
        world, world.direct_tenants(provider), [DAY + n * HOUR for n in range(12, 24)]
    )
    assert set(keys) == set(expected)
    # A new paging run sees the newly collected hour.
    fresh, _ = follow(call(host.base_url, PROVIDER_PATH.format(provider), params, token), token)
    assert len(fresh) > len(rows)


def test_late_usage_keeps_its_older_usage_window(world: World, host: LocalFunctionsHost) -> None:
    """Rows selected by reported hour 10:00 include usage hours before 10:00, as reported."""
    provider = world.fleet.default_provider.subscription_id
    token = world.admin_token()
    hour = DAY + 10 * HOUR
    rows, _ = follow(
        call(host.base_url, PROVIDER_PATH.format(provider), window(hour, hour + HOUR), token),
        token,
    )
    starts = {row["properties"]["usageStartTime"] for row in rows}
    assert hour.isoformat() in starts
    assert any(start < hour.isoformat() for start in starts)
    expected = source_rows(world, world.direct_tenants(provider), [hour])
    assert {identity(row) for row in rows} == set(expected)


def test_daily_rows_equal_the_sum_of_hourly_rows(world: World, host: LocalFunctionsHost) -> None:
    """Each daily row = the fleet's hourly records of that usage day reported on DAY, summed."""
    token = world.admin_token()
    for provider in world.providers():
        path = PROVIDER_PATH.format(provider.subscription_id)
        params = window(DAY, DAY + timedelta(days=1), "Daily")
        daily, _ = follow(call(host.base_url, path, params, token), token)
        hourly = source_rows(
            world,
            world.direct_tenants(provider.subscription_id),
            [DAY + n * HOUR for n in range(24)],
        )
        summed: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
        for (subscription, meter, start, _, resource), quantity in hourly.items():
            day = floor_day(datetime.fromisoformat(start))
            summed[(subscription, meter, day.isoformat(), resource)].append(quantity)
        got = {}
        for row in daily:
            subscription, meter, start, end, resource = identity(row)
            assert datetime.fromisoformat(end) - datetime.fromisoformat(start) == timedelta(days=1)
            got[(subscription, meter, start, resource)] = row["properties"]["quantity"]
        assert set(got) == set(summed)
        for key, quantities in summed.items():
            assert got[key] == pytest.approx(math.fsum(quantities), rel=1e-9, abs=1e-9)


def test_show_details_false_collapses_per_meter_and_usage_window(
    world: World, host: LocalFunctionsHost
) -> None:
    """showDetails=false: one row per (subscription, meter, window), the detailed rows summed."""
    token = world.admin_token()
    provider = delegated_provider(world)
    path = PROVIDER_PATH.format(provider)
    detailed, _ = follow(call(host.base_url, path, window(), token), token)
    collapsed, _ = follow(
        call(host.base_url, path, {**window(), "showDetails": "false"}, token), token
    )
    expected: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for row in detailed:
        expected[identity(row)[:4]].append(row["properties"]["quantity"])
    keys = [
        (
            row["properties"]["subscriptionId"],
            row["properties"]["meterId"].lower(),
            row["properties"]["usageStartTime"],
            row["properties"]["usageEndTime"],
        )
        for row in collapsed
    ]
    assert len(keys) == len(set(keys)) == len(expected)
    for key, row in zip(keys, collapsed, strict=True):
        assert "instanceData" not in row["properties"]
        assert row["properties"]["quantity"] == pytest.approx(math.fsum(expected[key]))


def test_rows_have_the_spec_shape_and_catalogue_properties(
    world: World, host: LocalFunctionsHost
) -> None:
    """id/name/type, instanceData as a JSON string, +00:00 times, catalogue meter spelling."""
    tenant = next(t for t in world.tenants() if t.owners and t.state.value == "active")
    token = world.token(tenant.owners[0])
    response = call(host.base_url, TENANT_PATH.format(tenant.subscription_id), window(), token)
    assert response.status_code == 200
    rows = response.json()["value"]
    assert rows
    meters = catalogue()
    for row in rows:
        properties = row["properties"]
        meter = meters.lookup(properties["meterId"])
        assert meter is not None
        assert properties["meterId"] == meter.meter_id
        assert (properties["meterName"], properties["unit"], properties["meterCategory"]) == (
            meter.name,
            meter.unit,
            meter.provider,
        )
        name = f"{tenant.subscription_id}-{meter.meter_id}"
        assert row["name"] == name
        assert row["id"] == (
            f"/subscriptions/{tenant.subscription_id}/providers/"
            f"Microsoft.Commerce/UsageAggregate/{name}"
        )
        assert row["type"] == "Microsoft.Commerce/UsageAggregate"
        assert properties["usageStartTime"].endswith("+00:00")
        assert isinstance(properties["quantity"], float)
        resources = json.loads(properties["instanceData"])["Microsoft.Resources"]
        assert set(resources) == {"resourceUri", "location", "tags", "additionalInfo"}
        assert resources["tags"] is None or isinstance(resources["tags"], dict)


def test_csv_page_matches_json_page_and_links_to_the_next(
    world: World, host: LocalFunctionsHost
) -> None:
    """Accept: text/csv gives the same rows as JSON, flattened, with a Link header for paging."""
    token = world.admin_token()
    path = PROVIDER_PATH.format(delegated_provider(world))
    as_json = call(host.base_url, path, window(), token)
    as_csv = call(host.base_url, path, window(), token, {"Accept": "text/csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    rows = as_json.json()["value"]
    assert len(table) == len(rows) == 1000
    for line, row in zip(table, rows, strict=True):
        resources = json.loads(row["properties"]["instanceData"])["Microsoft.Resources"]
        assert line["subscriptionId"] == row["properties"]["subscriptionId"]
        assert float(line["quantity"]) == row["properties"]["quantity"]
        assert line["resourceUri"] == resources["resourceUri"]
        assert (json.loads(line["tags"]) if line["tags"] else None) == resources["tags"]
    link = as_csv.headers["Link"]
    assert link.startswith("<http")
    assert link.endswith('>; rel="next"')
    following = requests.get(
        link[1:-13],
        headers={"Authorization": f"Bearer {token}", "Accept": "text/csv"},
        timeout=60,
    )
    assert following.status_code == 200
    assert following.text.splitlines()[0].startswith("subscriptionId,")


def test_a_page_that_ends_where_storage_pages_end_has_no_link_to_an_empty_page(
    make_settings, azurite, tmp_path
) -> None:
    """Azure may end a full page with continuation headers and nothing after them
    (tests/azure_paging.py): exactly 1,000 rows answer one page without nextLink; 1,000
    rows followed by a later subscription's rows still link to the page holding those."""
    issuer = LocalIssuer(tmp_path / "auth")
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1, AUTH_JWKS_URI=str(issuer.jwks_path))
    hour = DAY
    records = [vm_record(TENANT_A, hour, name=f"vm{n}") for n in range(1000)]
    records += [vm_record(TENANT_B, hour, name=f"vm{n}") for n in range(5)]
    Collector(
        settings, StorageAccount(settings), ScriptedSource({hour: records}, name="simulated")
    ).collect_due_hours(hour + HOUR)
    arguments = query_string(window(hour, hour + HOUR))
    admin = f"Bearer {issuer.mint(str(uuid.uuid4()), roles=['UsageAdmin'])}"

    def page(api: UsageApi, url: str) -> dict[str, Any]:
        route_path = urlsplit(url).path.removeprefix("/subscriptions")
        answer = api.answer(HttpCall("GET", url, route_path, {"Authorization": admin}))
        assert answer.status == 200, answer.body[:300]
        return json.loads(answer.body)

    with AzurePagingFront(azurite.table_port) as front:
        via_front = Settings.from_environ(
            {
                **LOCAL_VALUES,
                "AzureWebJobsStorage": front.connection_string(azurite.connection_string),
                "USAGE_TABLE_PREFIX": settings.table_prefix,
                "AUTH_JWKS_URI": str(issuer.jwks_path),
            }
        )
        api = UsageApi.from_settings(via_front)
        tenant = page(api, f"http://h{TENANT_PATH.format(TENANT_A)}?{arguments}")
        assert len(tenant["value"]) == 1000
        assert "nextLink" not in tenant
        first = page(api, f"http://h{PROVIDER_PATH.format(PROVIDER)}?{arguments}")
        assert len(first["value"]) == 1000
        second = page(api, first["nextLink"])
        assert {row["properties"]["subscriptionId"] for row in second["value"]} == {TENANT_B}
        assert len(second["value"]) == 5
        assert "nextLink" not in second
        assert front.added  # the front did end pages as Azure may
