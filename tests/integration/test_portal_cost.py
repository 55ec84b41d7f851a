"""The portal's cost analysis and Health views in Debian's headless Chromium, against the
local host: what is drawn is the Query route's answer and the statements' money to the cent,
for a tenant, a delegated provider and the admin; presets and filters live in the URL; the
phone layout keeps money on screen; dark mode; axe-core finds no serious or critical
violation on any view at either width; layout shift stays under 0.1.

Shares the module fixtures of ``test_portal_browser`` (one host, one browser for the module)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
import requests

from devstack.example_prices import load_example_prices
from devstack.sign_in import LocalSignIn
from tests.integration.test_portal_browser import (
    ARTIFACTS,
    REPO,
    WIDTHS,
    browser,
    choice,
    downloads,
    portal,
    pytestmark,
    sign_in,
    sign_in_as,
    token_for,
    until,
)
from tests.integration.test_query_support import API_VERSION, World, call

__all__ = ["browser", "downloads", "portal", "pytestmark", "sign_in"]  # the shared fixtures

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
NOVEMBER = "preset=lastmonth"
QUERY = "/subscriptions/{}/providers/Microsoft.CostManagement/query"
PROVIDER_QUERY = (
    "/subscriptions/{}/providers/Microsoft.Commerce.Admin/providers/Microsoft.CostManagement/query"
)
STATEMENT = "/subscriptions/{}/providers/Microsoft.Commerce/statements/2026-11"
ROLLUP = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberStatements/2026-11"


@pytest.fixture(scope="module", autouse=True)
def priced(world: World) -> World:
    """The world with the example sheets, so there is money to show (idempotent)."""
    load_example_prices(world.settings)
    return world


def open_cost(browser: Any, base_url: str, query: str) -> dict[str, Any]:
    """Open the cost view for ``query`` and wait until it is drawn (or says why not)."""
    browser.get(f"{base_url}/portal/#cost?{query}")
    return until(
        browser,
        "the cost view",
        """const view = document.getElementById('cost-view');
        if (view.dataset.state === 'error')
          return {error: document.getElementById('problem-text').textContent};
        if (view.dataset.state !== 'ready' || view.dataset.hash !== location.hash
            || location.hash !== '#cost?' + arguments[0]) return null;
        const chart = document.getElementById('cost-chart');
        const summary = {};
        for (const card of document.querySelectorAll('#cost-summary .card'))
          summary[card.id.replace('summary-', '')] = card.dataset.amount;
        return {window: view.dataset.window,
                totalMinor: Number(document.getElementById('cost-total').dataset.totalMinor),
                series: JSON.parse(chart.dataset.series), days: JSON.parse(chart.dataset.days),
                tableRows: document.querySelectorAll('#cost-table tbody tr').length,
                summary, hash: location.hash};""",
        query,
    )


def minor(value: Any) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


def query_rows(
    base_url: str, path: str, token: str, grouping: list[str], **dataset: Any
) -> list[dict[str, Any]]:
    body = {
        "type": "ActualCost",
        "timeframe": "Custom",
        "timePeriod": {"from": "2026-11-01T00:00:00Z", "to": "2026-11-30T00:00:00Z"},
        "dataset": {
            "granularity": "Daily",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [{"type": "Dimension", "name": name} for name in grouping],
            **dataset,
        },
    }
    response = requests.post(
        base_url + path,
        params={"api-version": "2023-03-01"},
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer = response.json()["properties"]
    names = [column["name"] for column in answer["columns"]]
    return [dict(zip(names, row, strict=True)) for row in answer["rows"]]


def per_key(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for row in rows:
        sums[row[key] or ""] += minor(row["Cost"])
    return dict(sums)


def test_a_tenant_lands_on_cost_and_it_is_the_query_routes_and_the_statements(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """After sign-in a tenant lands on Cost with focus on its heading; last month per meter is
    the Query route's answer and, meter by meter, its statement's lines to the cent; every
    day of the month is on the axis."""
    tenant = choice(sign_in, "tenant-0")
    sign_in_as(browser, portal, "tenant-0")
    landed = until(
        browser,
        "the landing view",
        """return location.hash.startsWith('#cost') && document.activeElement.id""",
    )
    assert landed == "cost-title"
    subscription = tenant.principal.subscription_id.lower()
    shown = open_cost(browser, portal, f"{NOVEMBER}&by=Meter&context=tenant:{subscription}")
    assert "error" not in shown, shown
    assert shown["window"] == "2026-11-01/2026-11-30"
    assert len(shown["days"]) == 30
    token = token_for(world, tenant)
    rows = query_rows(portal, QUERY.format(subscription), token, ["MeterId"])
    assert shown["totalMinor"] == sum(minor(row["Cost"]) for row in rows)
    drawn = {s["key"]: s["totalMinor"] for s in shown["series"]}
    assert sum(drawn.values()) == shown["totalMinor"]
    statement = call(portal, STATEMENT.format(subscription), {"api-version": API_VERSION}, token)
    lines: dict[str, int] = defaultdict(int)
    for line in statement.json()["lines"]:
        lines[line["meterId"].lower()] += minor(line["amount"])
    by_id = per_key(query_rows(portal, QUERY.format(subscription), token, ["MeterId"]), "MeterId")
    assert {k.lower(): v for k, v in by_id.items() if k and v} == {
        k: v for k, v in lines.items() if v
    }
    assert sum(v for k, v in drawn.items() if k) == minor(statement.json()["usageTotal"])
    assert shown["tableRows"] > 0


def test_a_delegated_provider_sees_its_tenants_money_and_the_roll_up(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """A delegated provider's cost per subscription is the Query route's and each tenant's
    statement; the summary (read from the Query route by PricingLevel) is the roll-up's
    charged, wholesale, margin and total billed to the cent, under the CLI's labels."""
    delegated = choice(sign_in, "delegated-0")
    provider = delegated.principal.subscription_id.lower()
    sign_in_as(browser, portal, "delegated-0")
    shown = open_cost(browser, portal, f"{NOVEMBER}&by=SubscriptionId&context=provider:{provider}")
    assert "error" not in shown, shown
    token = token_for(world, delegated)
    expected = per_key(
        query_rows(portal, PROVIDER_QUERY.format(provider), token, ["SubscriptionId"]),
        "SubscriptionId",
    )
    assert {s["key"]: s["totalMinor"] for s in shown["series"]} == expected
    assert set(expected) <= world.direct_tenants(provider)
    rollup = call(portal, ROLLUP.format(provider), {"api-version": API_VERSION}, token).json()
    assert shown["summary"] == {
        key: rollup[key] for key in ("directTenantsTotal", "wholesaleTotal", "margin", "grandTotal")
    }
    assert rollup["labels"]["wholesaleTotal"] in browser.find_element("id", "cost-summary").text
    tenants = {t["subscriptionId"].lower(): minor(t["total"]) for t in rollup["tenants"]}
    assert {k: v for k, v in expected.items() if v} == {k: v for k, v in tenants.items() if v}


def test_the_admin_sees_the_whole_cloud_and_presets_and_filters_live_in_the_url(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """The admin on the default provider sees every tenant once (the roll-up's cloud total),
    stacked by subscription as the nine largest and the rest in one; a filter narrows the
    money as the Query route does; presets and filters survive reload."""
    admin = choice(sign_in, "admin")
    sign_in_as(browser, portal, "admin")
    root = world.fleet.default_provider.subscription_id.lower()
    base = f"{NOVEMBER}&by=ServiceName&context=provider:{root}"
    shown = open_cost(browser, portal, base)
    assert "error" not in shown, shown
    rollup = call(portal, ROLLUP.format(root), {"api-version": API_VERSION}, world.admin_token())
    cloud = rollup.json()["cloud"]
    assert shown["summary"] == {
        "cloudTotal": cloud["cloudTotal"],
        "resellersTotal": rollup.json()["resellersTotal"],
    }
    token = token_for(world, admin)
    whole = query_rows(portal, PROVIDER_QUERY.format(root), token, ["ServiceName"])
    assert shown["totalMinor"] == sum(minor(row["Cost"]) for row in whole)
    # By subscription: the nine largest drawn one by one, the rest added up into one series.
    stacked = open_cost(browser, portal, f"{NOVEMBER}&by=SubscriptionId&context=provider:{root}")
    each = per_key(
        query_rows(portal, PROVIDER_QUERY.format(root), token, ["SubscriptionId"]),
        "SubscriptionId",
    )
    ranked = sorted(each.values(), reverse=True)
    assert len(ranked) > 10, "the world needs more subscriptions with charges than are drawn"
    drawn = [series["totalMinor"] for series in stacked["series"]]
    assert drawn == [*ranked[:9], sum(ranked[9:])]
    assert stacked["series"][-1]["key"] == "*other"
    compute = "Microsoft.Compute"
    narrowed = open_cost(browser, portal, f"{base}&fdim=ServiceName&fval={compute}")
    filtered = query_rows(
        portal,
        PROVIDER_QUERY.format(root),
        token,
        ["ServiceName"],
        filter={"dimensions": {"name": "ServiceName", "operator": "In", "values": [compute]}},
    )
    assert narrowed["totalMinor"] == sum(minor(row["Cost"]) for row in filtered)
    assert {s["key"] for s in narrowed["series"]} == {compute}
    browser.refresh()
    again = open_cost(browser, portal, f"{base}&fdim=ServiceName&fval={compute}")
    assert again["totalMinor"] == narrowed["totalMinor"]
    # Presets: the form writes them into the URL, and the window follows.
    browser.execute_script(
        "document.getElementById('cost-preset').value = 'last7';"
        "document.getElementById('cost-form').requestSubmit();"
    )
    week = until(
        browser,
        "the last 7 days",
        """const v = document.getElementById('cost-view');
        return location.hash.includes('preset=last7') && v.dataset.state === 'ready'
          && v.dataset.hash === location.hash
          && JSON.parse(document.getElementById('cost-chart').dataset.days);""",
    )
    assert len(week) == 7
    assert "fval=Microsoft.Compute" in browser.execute_script("return location.hash")


def test_phone_layout_dark_mode_accessibility_and_layout_shift(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """At 390 px the total is on screen with no sideways scroll; dark mode follows the
    system; axe-core finds nothing serious or critical on Cost, Health and Usage at either
    width, light or dark; cumulative layout shift while Cost loads stays under 0.1.

    Cost is loaded afresh in each scheme and width (its layout shift is that load's); Health
    and Usage are loaded once each and checked in every scheme and width in place (a width or
    a colour scheme changes their styles, not their content)."""
    sign_in_as(browser, portal, "admin")
    root = world.fleet.default_provider.subscription_id.lower()
    query = f"{NOVEMBER}&by=SubscriptionId&context=provider:{root}"
    axe = AXE.read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    combinations = [(scheme, name) for scheme in ("light", "dark") for name in WIDTHS]

    def look(scheme: str, name: str) -> None:
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        browser.set_window_size(*WIDTHS[name])

    def check(view: str, scheme: str, name: str) -> None:
        if browser.execute_script("return typeof window.axe === 'undefined'"):
            browser.execute_script(axe)  # once per document
        found[f"{view}-{name}-{scheme}"] = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then("
            "r => done(r.violations.filter(v => ['serious', 'critical'].includes(v.impact))"
            ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))));"
        )
        if scheme == "light" or view == "cost":
            browser.save_screenshot(str(ARTIFACTS / f"{view}-{name}-{scheme}.png"))

    for scheme, name in combinations:
        look(scheme, name)
        browser.get("about:blank")  # then a fresh document: every shift of its load counts
        browser.get(f"{portal}/portal/#cost?{query}")
        browser.execute_script(
            "window.__shift = 0; window.__moved = []; new PerformanceObserver(list => {"
            " for (const e of list.getEntries()) if (!e.hadRecentInput) { window.__shift += "
            "e.value; window.__moved.push([e.value.toFixed(3), ...e.sources.map(s => "
            "(s.node && (s.node.id || s.node.className || s.node.nodeName)) + ' ' + "
            "s.previousRect.top + '->' + s.currentRect.top)]); } })"
            ".observe({type: 'layout-shift', buffered: true});"
        )
        open_cost(browser, portal, query)
        shift = browser.execute_script("return window.__shift")
        moved = browser.execute_script("return window.__moved")
        assert shift <= 0.1, (scheme, name, shift, moved)
        if name == "narrow":
            layout = browser.execute_script(
                """const card = document.getElementById('cost-total').getBoundingClientRect();
                return {scroll: document.documentElement.scrollWidth, width: innerWidth,
                        right: card.right, top: card.top, height: innerHeight};"""
            )
            assert layout["scroll"] <= layout["width"], layout
            assert layout["right"] <= layout["width"]
            assert layout["top"] < layout["height"]
        background = browser.execute_script(
            "return getComputedStyle(document.documentElement).backgroundColor"
        )
        assert (background == "rgb(13, 17, 23)") == (scheme == "dark"), background
        check("cost", scheme, name)
    for view in ("health", "usage"):
        browser.get(f"{portal}/portal/#{view}?{query}")
        until(
            browser,
            f"the {view} view",
            f"return ['ready', 'error'].includes("
            f"document.getElementById('{view}-view').dataset.state)",
        )
        for scheme, name in combinations:
            look(scheme, name)
            background = browser.execute_script(
                "return getComputedStyle(document.documentElement).backgroundColor"
            )
            assert (background == "rgb(13, 17, 23)") == (scheme == "dark"), (view, background)
            check(view, scheme, name)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    browser.set_window_size(*WIDTHS["wide"])
    assert len(found) == 12
    assert {key: value for key, value in found.items() if value} == {}


def test_the_admins_health_view_is_the_status_routes(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """Health (the admin only) draws the status route's hourly lag and billing latency, with
    the same hours in its table; a tenant has no Health tab."""
    sign_in_as(browser, portal, "admin")
    browser.get(f"{portal}/portal/#health")
    shown = until(
        browser,
        "the health view",
        """const v = document.getElementById('health-view');
        if (v.dataset.state === 'error')
          return {error: document.getElementById('problem-text').textContent};
        return v.dataset.state === 'ready' && {
          points: Number(document.getElementById('health-chart').dataset.points),
          hours: [...document.querySelectorAll('#health-table tbody tr')].map(r => r.dataset.hour),
          objectives: [...document.querySelectorAll('#health-objectives tbody tr')]
            .map(r => r.dataset.objective)};""",
    )
    assert "error" not in shown, shown
    status = requests.get(
        f"{portal}/providers/Microsoft.Commerce.Admin/pipelineStatus",
        params={"api-version": API_VERSION},
        headers={"Authorization": f"Bearer {world.admin_token()}"},
        timeout=60,
    ).json()["properties"]
    assert shown["points"] == len(status["series"])
    assert sorted(shown["hours"]) == sorted(point["hour"] for point in status["series"])
    assert shown["objectives"] == [o["name"] for o in status["objectives"]]
    sign_in_as(browser, portal, "tenant-0")
    hidden = browser.execute_script("return document.getElementById('health-tab').hidden")
    assert hidden is True
