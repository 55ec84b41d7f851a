"""The usage portal in a real headless Chromium (Debian's), against the local host.

The module's world (a simulated fleet's day collected into Azurite, ``tests/conftest.py``)
is served by the local Functions host with the portal's local sign-in beside it; one
browser serves every test. Each test signs in through the page as a person would and
compares what the page shows with what the API answers the same caller. Screenshots of each
view at 1280 and 390 px wide are written to ``test-artifacts/portal/`` (git-ignored).

Runs when ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` are present (``./dev test``
installs them where it is root; ``.ci/run`` always does), and is skipped, saying so, otherwise.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import socket
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.chromium import installed, start_chromium
from devstack.example_prices import load_example_prices
from devstack.host import LocalFunctionsHost
from devstack.sign_in import DEFAULT_PATH, LocalSignIn, SignInChoice
from tests.integration.test_query_support import (
    API_VERSION,
    DAY,
    HOUR,
    PROVIDER_PATH,
    REPO,
    TENANT_PATH,
    World,
    call,
    follow,
    window,
)
from tests.loopback import wait_for

ARTIFACTS = REPO / "test-artifacts" / "portal"
WIDTHS = {"wide": (1280, 1000), "narrow": (390, 844)}
DAY_HASH = "from=2026-11-20&to=2026-11-20&granularity=Hourly"

pytestmark = pytest.mark.skipif(
    not installed(),
    reason="no /usr/bin/chromium and /usr/bin/chromedriver: apt-get install chromium "
    "chromium-driver (./dev test does it as root) to run the portal's browser tests",
)

if installed():
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sign_in(world: World) -> LocalSignIn:
    """The local sign-in for the world's fleet, listing the principals of DAY's last hour."""
    return LocalSignIn(world.settings, world.issuer, at=DAY + 23 * HOUR)


def portal_values(world: World, **overrides: str) -> dict[str, str]:
    return {**world.values, "PORTAL_LOCAL_SIGN_IN_URL": DEFAULT_PATH, **overrides}


@contextlib.contextmanager
def portal_host(values: dict[str, str], sign_in: LocalSignIn) -> Iterator[LocalFunctionsHost]:
    with LocalFunctionsHost(
        REPO, values, run_timers_at_start=False, local_routes=(sign_in.route(),)
    ) as host:
        yield host


@pytest.fixture(scope="module")
def portal(world: World, sign_in: LocalSignIn) -> Iterator[str]:
    """The portal's base URL on the local host serving the world."""
    with portal_host(portal_values(world), sign_in) as host:
        yield host.base_url


@pytest.fixture(scope="module")
def downloads() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="portal-downloads-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    """One headless Chromium for the module, with its own empty profile and download folder."""
    profile = Path(tempfile.mkdtemp(prefix="portal-chromium-"))
    driver = start_chromium(profile, {"browser": "ALL"})
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.set_window_size(*WIDTHS["wide"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- helpers -------------------------------------------------------------------------------


def choice(sign_in: LocalSignIn, key: str) -> SignInChoice:
    return next(c for c in sign_in.choices if c.key == key)


def token_for(world: World, picked: SignInChoice) -> str:
    return world.issuer.mint(picked.principal.object_id, roles=picked.principal.app_roles)


def until(browser: Any, what: str, script: str, *args: Any, seconds: float = 60) -> Any:
    """Poll a script in the page (with ``args`` as its arguments) until it returns something
    truthy."""
    return wait_for(lambda: browser.execute_script(script, *args), what, seconds)


def start_signed_out(browser: Any, base_url: str) -> None:
    browser.get(f"{base_url}/portal/#sign-in")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    until(browser, "the sign-in list", "return document.querySelector('#principals button')")


def sign_in_as(browser: Any, base_url: str, key: str) -> None:
    start_signed_out(browser, base_url)
    browser.find_element(By.CSS_SELECTOR, f"button[data-principal='{key}']").click()
    until(browser, "signed in", "return !document.getElementById('who').hidden")


def open_usage(browser: Any, base_url: str, query: str) -> dict[str, Any]:
    """Go to the usage view for ``query`` and wait until it shows that window (or an error)."""
    browser.get(f"{base_url}/portal/#usage?{query}")
    return until(
        browser,
        "the usage view",
        """const view = document.getElementById('usage-view');
        const problem = document.getElementById('problem-text').textContent;
        if (view.dataset.state === 'error') return {error: problem};
        if (!(view.dataset.window || '').startsWith('2026-11-20T00:00:00Z')) return null;
        return {totals: [...document.querySelectorAll('#totals tr[data-meter-id]')].map(
                  tr => [tr.dataset.meterId, Number(tr.dataset.total)]),
                quantities: [...document.querySelectorAll('#totals tr[data-meter-id]')].map(
                  tr => [tr.dataset.total, tr.dataset.unit, tr.cells[2].textContent]),
                series: [...document.querySelectorAll('#charts figure')].map(
                  f => JSON.parse(f.dataset.series)),
                rows: [...document.querySelectorAll('#rows tbody tr')].map(
                  tr => tr.cells[0].textContent),
                contexts: [...document.getElementById('context').options].map(o => o.value),
                subscribers: [...document.getElementById('subscriber').options].map(o => o.value)
                  .filter(Boolean)};""",
    )


def screenshot(browser: Any, view: str) -> None:
    """The whole page as it is now, at both widths (test artifacts)."""
    for name, (width, height) in WIDTHS.items():
        browser.set_window_size(width, height)
        tall = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, max(height, min(int(tall), 6000)))
        browser.save_screenshot(str(ARTIFACTS / f"{view}-{name}.png"))
    browser.set_window_size(*WIDTHS["wide"])


def api_totals(base_url: str, path: str, params: dict[str, str], token: str) -> dict[str, float]:
    rows, _ = follow(call(base_url, path, params, token), token)
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row["properties"]["meterId"].lower()] += row["properties"]["quantity"]
    return dict(totals)


def api_subscriptions(base_url: str, path: str, params: dict[str, str], token: str) -> set[str]:
    rows, _ = follow(call(base_url, path, params, token), token)
    return {row["properties"]["subscriptionId"].lower() for row in rows}


def collapsed() -> dict[str, str]:
    return {**window(), "showDetails": "false"}


# --- tests ---------------------------------------------------------------------------------


def test_sign_in_lists_the_fleets_principals(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """The sign-in page offers the admin, each provider and some tenants; nothing else shows."""
    start_signed_out(browser, portal)
    keys = browser.execute_script(
        "return [...document.querySelectorAll('#principals button')].map(b => b.dataset.principal)"
    )
    delegated = [f"delegated-{n}" for n in range(len(world.fleet.delegated_providers))]
    assert keys[: 2 + len(delegated)] == ["admin", "provider", *delegated]
    assert [k for k in keys if k.startswith("tenant-")] == [f"tenant-{n}" for n in range(4)]
    assert browser.find_element(By.ID, "usage-view").is_displayed() is False
    screenshot(browser, "sign-in")


def test_tenant_sees_only_its_subscriptions_and_the_apis_totals(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """A tenant's picker holds its own subscriptions; per-meter totals equal the API's."""
    tenant = choice(sign_in, "tenant-0")
    owned = {s["id"] for s in tenant.subscriptions}
    assert owned
    for subscription_id in owned:
        assert tenant.principal.object_id in world.subscriptions[subscription_id].owners
    sign_in_as(browser, portal, "tenant-0")
    subscription = tenant.principal.subscription_id.lower()
    shown = open_usage(browser, portal, f"{DAY_HASH}&context=tenant:{subscription}")
    assert "error" not in shown, shown
    assert {c.split(":", 1)[1] for c in shown["contexts"]} == owned
    assert all(c.startswith("tenant:") for c in shown["contexts"])
    assert set(shown["rows"]) <= owned
    expected = api_totals(
        portal, TENANT_PATH.format(subscription), collapsed(), token_for(world, tenant)
    )
    assert expected, "the tenant reported usage on DAY"
    assert dict(shown["totals"]) == pytest.approx(expected, rel=1e-9)
    for total, unit, text in shown["quantities"]:  # the cost view's quantity formatter
        figure, _, named = text.partition(" ")
        assert named == unit, text
        digits = figure.replace(",", "").lstrip("-")
        decimals = digits.partition(".")[2]
        if abs(float(total)) >= 1:
            assert len(decimals) <= 2, text
            assert abs(float(digits) - abs(float(total))) <= 0.005 + 1e-9, text
        else:
            assert len(decimals.lstrip("0")) <= 4, text
    charted = {s["key"]: s["total"] for figure in shown["series"] for s in figure}
    assert charted == pytest.approx(expected, rel=1e-9)
    screenshot(browser, "usage")


def test_delegated_provider_sees_only_its_tenants(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """A delegated provider's tenant picker is its direct tenants with usage, as the API says."""
    delegated = choice(sign_in, "delegated-0")
    provider = delegated.principal.subscription_id.lower()
    sign_in_as(browser, portal, "delegated-0")
    shown = open_usage(browser, portal, f"{DAY_HASH}&context=provider:{provider}")
    assert "error" not in shown, shown
    assert shown["contexts"] == [f"provider:{provider}"]
    from_api = api_subscriptions(
        portal, PROVIDER_PATH.format(provider), collapsed(), token_for(world, delegated)
    )
    assert from_api
    assert set(shown["subscribers"]) == from_api
    assert from_api <= world.direct_tenants(provider)
    others = set().union(*(world.direct_tenants(p.subscription_id) for p in world.providers()))
    assert not set(shown["rows"]) & (others - world.direct_tenants(provider))


def test_admin_sees_every_provider_and_each_ones_tenants(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """The admin's picker lists every provider subscription; choosing one shows its tenants."""
    admin = choice(sign_in, "admin")
    sign_in_as(browser, portal, "admin")
    default = world.fleet.default_provider.subscription_id.lower()
    shown = open_usage(browser, portal, f"{DAY_HASH}&context=provider:{default}")
    assert "error" not in shown, shown
    providers = {p.subscription_id.lower() for p in world.providers()}
    assert {c.split(":", 1)[1] for c in shown["contexts"]} == providers
    delegated = world.fleet.delegated_providers[1].subscription_id.lower()
    Select(browser.find_element(By.ID, "context")).select_by_value(f"provider:{delegated}")
    tenants = until(
        browser,
        "the delegated provider's tenants",
        f"""const view = document.getElementById('usage-view');
        if (view.dataset.state !== 'ready' || !location.hash.includes('{delegated}')) return null;
        return [...document.getElementById('subscriber').options].map(o => o.value)
          .filter(Boolean);""",
    )
    from_api = api_subscriptions(
        portal, PROVIDER_PATH.format(delegated), collapsed(), token_for(world, admin)
    )
    assert set(tenants) == from_api
    assert from_api <= world.direct_tenants(delegated)


def test_csv_download_equals_the_apis_csv(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn, downloads: Path
) -> None:
    """The downloaded CSV is the API's CSV for the same window and query, every page."""
    provider = choice(sign_in, "provider")
    subscription = provider.principal.subscription_id.lower()
    sign_in_as(browser, portal, "provider")
    shown = open_usage(browser, portal, f"{DAY_HASH}&context=provider:{subscription}")
    assert "error" not in shown, shown
    for old in downloads.iterdir():
        old.unlink()
    browser.find_element(By.ID, "csv").click()
    name = until(browser, "the CSV", "return document.getElementById('usage-view').dataset.csv")
    path = downloads / name
    downloaded = wait_for(
        lambda: path.exists() and path.read_bytes(), f"{name} in the download folder"
    )
    token = token_for(world, provider)
    pages: list[str] = []
    response = call(
        portal, PROVIDER_PATH.format(subscription), collapsed(), token, {"Accept": "text/csv"}
    )
    while True:
        assert response.status_code == 200
        pages.append(response.text)
        link = re.match(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
        if link is None:
            break
        response = requests.get(
            link.group(1),
            headers={"Authorization": f"Bearer {token}", "Accept": "text/csv"},
            timeout=60,
        )
    expected = pages[0] + "".join(page.split("\r\n", 1)[1] for page in pages[1:])
    assert downloaded.decode("utf-8") == expected
    rows = list(csv.reader(io.StringIO(expected)))
    assert len(rows) > 1000, "the window spans more than one API page"


def test_expired_token_returns_to_sign_in(
    browser: Any, portal: str, world: World, sign_in: LocalSignIn
) -> None:
    """The API's 401 for an expired token sends the page back to sign-in, saying why."""
    tenant = choice(sign_in, "tenant-1")
    sign_in_as(browser, portal, "tenant-1")
    expired = world.issuer.mint(tenant.principal.object_id, now=DAY, lifetime=timedelta(minutes=5))
    # The page only knows the token is bad when the API says so (its clock says it is fresh).
    browser.execute_script(
        """const s = JSON.parse(sessionStorage.getItem('usage-portal.session'));
        s.token = arguments[0]; s.expiresAt = Date.now() + 3600000;
        sessionStorage.setItem('usage-portal.session', JSON.stringify(s));""",
        expired,
    )
    subscription = tenant.principal.subscription_id.lower()
    browser.get(f"{portal}/portal/#usage?{DAY_HASH}&context=tenant:{subscription}&x=1")
    browser.refresh()
    message = until(
        browser,
        "the sign-in page",
        """return !document.getElementById('sign-in-view').hidden &&
          document.getElementById('sign-in-message').textContent;""",
    )
    assert "expired" in message
    assert browser.execute_script("return sessionStorage.getItem('usage-portal.session')") is None


def test_a_503_says_so_and_offers_a_retry(browser: Any, world: World, sign_in: LocalSignIn) -> None:
    """Storage unreachable: the API answers 503 and the page says it is busy, with Retry."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = re.sub(
        r"TableEndpoint=http://127\.0\.0\.1:\d+/",
        f"TableEndpoint=http://127.0.0.1:{port}/",
        world.values["AzureWebJobsStorage"],
    )
    tenant = choice(sign_in, "tenant-0")
    subscription = tenant.principal.subscription_id.lower()
    with portal_host(portal_values(world, AzureWebJobsStorage=storage), sign_in) as down:
        sign_in_as(browser, down.base_url, "tenant-0")
        shown = open_usage(browser, down.base_url, f"{DAY_HASH}&context=tenant:{subscription}")
        assert "503" in shown["error"]
        assert "retry" in shown["error"].lower()
        retry = browser.find_element(By.ID, "retry")
        assert retry.is_displayed()
        screenshot(browser, "error-503")
        retry.click()
        again = until(
            browser,
            "the retried request's answer",
            """const view = document.getElementById('usage-view');
            return view.dataset.state === 'error' && !document.getElementById('problem').hidden
              && document.getElementById('problem-text').textContent;""",
        )
        assert "503" in again


def test_keyboard_alone_signs_in_and_every_control_is_labelled(
    browser: Any, portal: str, sign_in: LocalSignIn
) -> None:
    """Tab and Enter reach the first principal; every visible control has a label."""
    start_signed_out(browser, portal)
    for _ in range(10):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script("return document.activeElement.dataset.principal"):
            break
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(browser, "signed in", "return !document.getElementById('who').hidden")
    unlabelled = browser.execute_script(
        """return [...document.querySelectorAll('input, select, button')]
          .filter(e => e.offsetParent !== null)
          .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim() : !e.labels.length)
          .map(e => e.id);"""
    )
    assert unlabelled == []


# --- charges (the chargeback routes) -----------------------------------------------------

MONTH = "2026-11"


@pytest.fixture(scope="module")
def priced(world: World) -> World:
    """The world with the example price sheets (idempotent: other modules load the same)."""
    load_example_prices(world.settings)
    return world


def money_of(document: dict[str, Any]) -> tuple[str, str, str | None, list[str]]:
    lines = [line["amount"] for line in document["lines"]]
    return document["total"], document["status"], document["currency"], lines


def test_tenant_statement_and_rate_card_are_the_apis(
    browser: Any, portal: str, priced: World, sign_in: LocalSignIn
) -> None:
    """The month's statement (lines, total, currency, status) and rate card, as the API says."""
    tenant = choice(sign_in, "tenant-0")
    subscription = tenant.principal.subscription_id.lower()
    sign_in_as(browser, portal, "tenant-0")
    browser.get(f"{portal}/portal/#charges?month={MONTH}&context=tenant:{subscription}")
    shown = until(
        browser,
        "the charges view",
        f"""const view = document.getElementById('charges-view');
        if (view.dataset.state === 'error') return {{error: view.textContent}};
        if (view.dataset.state !== 'ready' || view.dataset.month !== '{MONTH}') return null;
        const block = document.querySelector('#statement .statement');
        return {{total: block.dataset.total, status: block.dataset.status,
                currency: block.dataset.currency,
                lines: [...block.querySelectorAll('tr[data-amount]')].map(tr => tr.dataset.amount),
                meters: [...document.querySelectorAll('#rate-card tr[data-meter-id]')]
                  .map(tr => tr.dataset.meterId)}};""",
    )
    assert "error" not in shown, shown
    token = token_for(priced, tenant)
    statement = call(
        portal,
        f"/subscriptions/{subscription}/providers/Microsoft.Commerce/statements/{MONTH}",
        {"api-version": API_VERSION},
        token,
    ).json()
    total, status, currency, lines = money_of(statement)
    assert (shown["total"], shown["status"], shown["currency"] or None, shown["lines"]) == (
        total,
        status,
        currency,
        lines,
    )
    card = call(
        portal,
        f"/subscriptions/{subscription}/providers/Microsoft.Commerce/RateCard",
        {
            "api-version": API_VERSION,
            "$filter": f"OfferDurableId eq 'MS-AZR-0003P' and Currency eq '{currency}' "
            "and Locale eq 'en-US' and RegionInfo eq 'US'",
        },
        token,
    ).json()
    assert shown["meters"] == [meter["MeterId"].lower() for meter in card["Meters"]]
    screenshot(browser, "charges")


def test_provider_totals_and_top_subscriptions_are_the_apis(
    browser: Any, portal: str, priced: World, sign_in: LocalSignIn
) -> None:
    """The admin's per-provider totals (named by the roll-up's labels), the whole cloud's
    total and the top subscriptions by cost equal the roll-ups."""
    admin = choice(sign_in, "admin")
    default = priced.fleet.default_provider.subscription_id.lower()
    sign_in_as(browser, portal, "admin")
    browser.get(f"{portal}/portal/#providers?month={MONTH}&context=provider:{default}")
    shown = until(
        browser,
        "the providers view",
        f"""const view = document.getElementById('providers-view');
        if (view.dataset.state === 'error') return {{error: view.textContent}};
        if (view.dataset.state !== 'ready' || view.dataset.month !== '{MONTH}') return null;
        return {{totals: [...document.querySelectorAll('#provider-totals tr[data-provider]')]
                  .map(tr => [tr.dataset.provider, tr.dataset.total]),
                headers: [...document.querySelectorAll('#provider-totals th')]
                  .map(th => th.textContent),
                cloud: document.getElementById('cloud-total')?.dataset.total,
                top: [...document.querySelectorAll('#top-subscriptions tr[data-subscription]')]
                  .map(tr => [tr.dataset.subscription, tr.dataset.total])}};""",
    )
    assert "error" not in shown, shown
    token = token_for(priced, admin)
    rollups = {
        p.subscription_id.lower(): call(
            portal,
            f"/subscriptions/{p.subscription_id}/providers/Microsoft.Commerce.Admin"
            f"/subscriberStatements/{MONTH}",
            {"api-version": API_VERSION},
            token,
        ).json()
        for p in priced.providers()
    }
    assert dict(shown["totals"]) == {p: r["grandTotal"] for p, r in rollups.items()}
    labels = rollups[default]["labels"]
    assert shown["headers"][3:] == [
        labels[key]
        for key in (
            "directTenantsTotal",
            "wholesaleTotal",
            "margin",
            "resellersTotal",
            "grandTotal",
        )
    ]
    assert shown["cloud"] == rollups[default]["cloud"]["cloudTotal"]
    tenants = sorted(rollups[default]["tenants"], key=lambda t: -float(t["total"]))[:10]
    assert shown["top"] == [[t["subscriptionId"].lower(), t["total"]] for t in tenants]
    screenshot(browser, "providers")


def test_entra_sign_in_loads_msal_under_the_policy(
    browser: Any, world: World, sign_in: LocalSignIn
) -> None:
    """With a client id the page loads MSAL.js from itself and offers Microsoft sign-in."""
    values = portal_values(
        world,
        PORTAL_LOCAL_SIGN_IN_URL="",
        PORTAL_CLIENT_ID="6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a5b",
        PORTAL_AUTHORITY="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47",
    )
    with portal_host(values, sign_in) as entra:
        browser.get(f"{entra.base_url}/portal/")
        browser.execute_script("sessionStorage.clear()")
        browser.refresh()
        until(
            browser,
            "the Microsoft sign-in button",
            """return window.msal && !document.getElementById('entra-sign-in').hidden &&
              document.getElementById('status').textContent === 'Not signed in.';""",
        )
        assert browser.find_element(By.ID, "entra-button").is_displayed()
        assert not browser.find_element(By.ID, "local-sign-in").is_displayed()
        screenshot(browser, "sign-in-entra")


def test_no_content_security_policy_violation_was_reported(browser: Any) -> None:
    """Across every page above, the browser refused nothing under the strict policy."""
    messages = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in messages if "Content Security Policy" in m or "Refused" in m]


def test_the_committed_screenshot_is_small() -> None:
    """The README shows docs/portal.png: a PNG, small enough to keep in the repository."""
    image = REPO / "docs" / "portal.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.stat().st_size < 200_000
    assert "docs/portal.png" in (REPO / "README.md").read_text(encoding="utf-8")
