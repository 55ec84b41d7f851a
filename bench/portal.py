"""The portal's cost views against reading the same usage: ``python -m bench portal
[--tenants N] [--days N] [--pairs N] [--quick]``.

Issue 24 asks that money over time cost what its answer holds, not what its window holds. At
the shape of ``./dev run --tenants 300`` (seed 1, scale 1.0), Debian's Chromium (Selenium,
as the browser tests drive it) opens two cost views of the portal, each against reading the
usage the view's money was rated from through the Azure Stack usage API (every page, by its
``nextLink``, as a client would: ``showDetails=false``, hourly), in alternating pairs in
the same run:

- ``admin_month``: the admin's This-month daily cost view of the whole cloud (the default
  provider, stacked by subscription), against the admin's ``subscriberUsageAggregates`` of
  the same days;
- ``subscription_3_months``: one tenant's subscription over its last three months, signed
  in as that tenant, against its ``usageAggregates``: of the subscriptions the local
  sign-in's tenants own, the one alive over the whole window with the most usage in it.

"This month" is December 2026 up to ``--days`` (default 7: Dec 1-7, the month so far on the
day the issue was filed), opened as the Custom preset of those days so the figure does not
move with the calendar; the three months end on the same day (Sep 8 - Dec 7).

``cost_view_ratio_to_usage_read`` (target <= 0.5) is the median over the pairs of the view's
time from the query (the hash change) to drawn (the view ``ready`` and the next animation
frame) over the usage read's time; the headline is the worse of the two views. Beside the
times, what production pays for: the storage requests each side makes (every request the
page sent during the view, and the usage read's pages, replayed in this process through the
app with the storage account's request hook, ``shared.storage.request_count``) and the HTTP
requests.

**The store** is built in process with the pipeline's own code, only for what the views
read: the simulated fleet (``devstack.fleet``) through the real collector
(``Collector.collect_hour``: rows, manifest, activity, hour close and daily rows) for every
subscription's hours of the month, the chosen subscription's hours of the three months
before (the same collector over the fleet's records of that subscription alone), then the
rater (``Rater.rate_due``) writes the ledger's charge lines from them with the example price
sheets. It lives in a fresh in-memory Azurite for the run (not cached: a kept store would
have to be keyed by the fleet, the window and the code that wrote it). ``--quick``: 3
directory tenants, the month's first 6 hours, the subscription's last 8 days, 3 pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from bench.common import finish, median
from devstack.azurite import Azurite
from devstack.capacity import (
    available_memory_mb,
    node_heap_mb,
    node_max_string_length,
    store_limit,
)
from devstack.chromium import installed, start_chromium
from devstack.example_prices import load_example_prices
from devstack.fleet import SimulatedFleet, fleet_from_settings
from devstack.host import LocalFunctionsHost
from devstack.local_settings import local_values
from devstack.sign_in import DEFAULT_PATH, LocalSignIn, SignInChoice
from devstack.tokens import LocalIssuer
from shared.app import FunctionApp
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import HOUR
from shared.core.usage import UsageRecord
from shared.query.usage_api import HttpCall
from shared.rating.rater import Rater
from shared.storage.account import StorageAccount
from shared.storage.request_count import StorageRequests
from shared.storage.subscriptions import Subscription

REPO = Path(__file__).resolve().parent.parent
MONTH_FIRST = datetime(2026, 12, 1, tzinfo=UTC)
USAGE_VERSION = "2015-06-01-preview"
TENANT_USAGE = "/subscriptions/{}/providers/Microsoft.Commerce/usageAggregates"
PROVIDER_USAGE = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
# The host's pipeline functions stay off: the store is built before it starts, and a timer
# firing during a timed view would be measured with it.
DISABLED = ("collect_usage", "collect_slice", "report_to_azure", "rate_usage",
            "finalise_statements", "export_usage", "observe_pipeline")  # fmt: skip
# Runs in the page on the hash change: the time from the query to the view drawn (ready,
# then the next animation frame), or the error the view shows.
TIME_VIEW = """
const hash = arguments[0];
const view = document.getElementById('cost-view');
const timing = {start: performance.now(), end: null, error: null};
window.__benchTiming = timing;
const observer = new MutationObserver(() => {
  if (view.dataset.state === 'error') {
    timing.error = document.getElementById('problem-text').textContent;
    observer.disconnect();
  } else if (view.dataset.state === 'ready' && view.dataset.hash === location.hash) {
    observer.disconnect();
    requestAnimationFrame(() => { timing.end = performance.now(); });
  }
});
observer.observe(view, {attributes: true});
location.hash = hash;
"""


@dataclass(frozen=True)
class Shape:
    """What shapes the store and the views: the fleet, the month's hours, the three months."""

    tenants: int
    month_last: datetime  # the last collected hour of the month (and of the three months)
    history_first: datetime  # the first hour of the subscription's window

    @property
    def last_day(self) -> str:
        return f"{self.month_last:%Y-%m-%d}"

    @property
    def history_from(self) -> str:
        return f"{self.history_first:%Y-%m-%d}"


@dataclass
class OneSubscription:
    """The fleet as a usage source whose records are one subscription's: its subscriptions
    are all listed (the collector keeps the store in step with them), its usage is that
    subscription's alone, generated alone (the fleet's ``within``)."""

    fleet: SimulatedFleet
    subscription_id: str
    name: str = field(init=False)  # the fleet's: the same watermark and hours

    def __post_init__(self) -> None:
        self.name = self.fleet.name

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]:
        return self.fleet.subscriptions(reported_hour)

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        wanted = self.subscription_id

        def keep(subscription_id: str) -> bool:
            return subscription_id.lower() == wanted and (within is None or within(wanted))

        return self.fleet.usage(reported_hour, within=keep)


def longest_lived(
    fleet: SimulatedFleet, choices: dict[str, SignInChoice], shape: Shape
) -> tuple[SignInChoice, str]:
    """The local sign-in's tenant and subscription whose window holds the most usage: of the
    subscriptions the listed tenants own, alive over the whole window, the one with the most
    records in the window's middle hour (a subscription created within the window has less
    than three months to show)."""
    fleet.subscriptions(shape.month_last)  # every subscription of the window, known
    middle = shape.history_first + (shape.month_last - shape.history_first) / 2
    middle = middle.replace(minute=0, second=0, microsecond=0)
    best: tuple[int, str, SignInChoice] | None = None
    for key, choice in sorted(choices.items()):
        if not key.startswith("tenant-"):
            continue
        for owned in choice.subscriptions:
            subscription = owned["id"]
            life = fleet.lifecycle(subscription)
            if life.created > shape.history_first or life.deleted <= shape.month_last:
                continue
            records = sum(1 for _ in OneSubscription(fleet, subscription).usage(middle))
            if best is None or records > best[0]:
                best = (records, subscription, choice)
    if best is None:
        raise SystemExit("bench portal: no listed tenant's subscription lived through the window")
    return best[2], best[1]


@dataclass
class Built:
    rows: int
    hours: int
    seconds: float
    rated_hours: int


def build_store(
    settings: Settings, fleet: SimulatedFleet, shape: Shape, subscription: str
) -> Built:
    """The views' store, written by the pipeline's own code (see the module docstring)."""
    started = time.perf_counter()
    account = StorageAccount(settings)
    account.ensure_tables()
    load_example_prices(settings, subscriptions_first=True)
    every = Collector(settings, account, fleet)
    one = Collector(settings, account, OneSubscription(fleet, subscription))
    rows = hours = 0
    hour = shape.history_first
    while hour <= shape.month_last:
        collector = every if hour >= MONTH_FIRST else one
        rows += collector.collect_hour(hour).rows
        hours += 1
        if hour.hour == 23 or (hour >= MONTH_FIRST and hour.hour % 6 == 5):
            print(
                f"  collected through {hour:%Y-%m-%d %H}:00, {rows:,} rows "
                f"({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
        hour += HOUR
    rated = Rater(account, settings.source_names()).rate_due(float("inf"))
    print(f"  rated ({time.perf_counter() - started:.0f}s)", flush=True)
    return Built(rows, hours, time.perf_counter() - started, rated.subscription_batches)


@dataclass
class Side:
    """One side of a view's pairs: seconds per run, and one run's requests."""

    seconds: list[float] = field(default_factory=list)
    http_requests: int = 0
    storage_requests: int = 0
    storage_by_kind: dict[str, int] = field(default_factory=dict)
    rows: int = 0


@dataclass
class ViewResult:
    name: str
    view: Side
    usage: Side
    ratios: list[float]

    def figures(self) -> dict[str, Any]:
        return {
            "view_ms_p50": round(median(self.view.seconds) * 1000, 1),
            "usage_read_ms_p50": round(median(self.usage.seconds) * 1000, 1),
            "cost_view_ratio_to_usage_read": round(statistics.median(self.ratios), 4),
            "view_http_requests": self.view.http_requests,
            "usage_read_http_requests": self.usage.http_requests,
            "view_storage_requests": self.view.storage_requests,
            "usage_read_storage_requests": self.usage.storage_requests,
            "storage_request_ratio": round(
                self.view.storage_requests / max(self.usage.storage_requests, 1), 4
            ),
            "view_storage_by_kind": self.view.storage_by_kind,
            "usage_read_storage_by_kind": self.usage.storage_by_kind,
            "usage_rows_read": self.usage.rows,
        }


def usage_read(base_url: str, path: str, params: dict[str, str], token: str) -> tuple[int, int]:
    """Every page of a usage query, by its ``nextLink``; (rows, pages)."""
    link: str | None = f"{base_url}{path}?{urlencode(params)}"
    headers = {"Authorization": f"Bearer {token}"}
    rows = pages = 0
    while link:
        answer = requests.get(link, headers=headers, timeout=120)
        answer.raise_for_status()
        body = answer.json()
        rows += len(body["value"])
        pages += 1
        link = body.get("nextLink")
    return rows, pages


@dataclass
class Replayer:
    """Requests replayed through the app in this process, their storage requests counted by
    the account's request hook (the host in the run has no hook)."""

    app: FunctionApp
    counter: StorageRequests

    def counted(self, calls: Callable[[], int]) -> tuple[int, dict[str, int]]:
        before = self.counter.snapshot()
        calls()
        sent = self.counter.since(before)
        return sum(sent.values()), {kind.value: n for kind, n in sorted(sent.items()) if n}

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        path = urlsplit(url).path
        call = HttpCall(
            method=method,
            url=url,
            route_path=path.removeprefix("/subscriptions").lstrip("/"),
            headers=headers,
            body=body,
        )
        answer = self.app.answer_usage_request(call)
        if answer.status != 200:
            raise RuntimeError(f"replayed {method} {path}: {answer.status}")
        return answer

    def usage_pages(self, url: str, token: str) -> int:
        link: str | None = url
        pages = 0
        while link:
            answer = self.answer("GET", link, {"Authorization": f"Bearer {token}"}, b"")
            link = json.loads(answer.body).get("nextLink")
            pages += 1
        return pages


def api_requests_of(log: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, str], bytes]]:
    """The API requests (method, URL, headers, body) a page sent, from Chromium's
    performance log (the portal's own files and the sign-in are not the API)."""
    sent = []
    for entry in log:
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        request = message["params"]["request"]
        if not urlsplit(request["url"]).path.startswith("/subscriptions"):
            continue
        if request["method"] == "OPTIONS":
            continue
        body = request.get("postData", "").encode()
        sent.append((request["method"], request["url"], dict(request["headers"]), body))
    return sent


def chromium(profile: Path) -> Any:
    """Headless Debian Chromium with the browser tests' flags, logging the network."""
    driver = start_chromium(profile, {"performance": "ALL"})
    driver.set_window_size(1280, 1000)
    return driver


def poll(check: Callable[[], Any], what: str, seconds: float = 600) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise TimeoutError(f"no {what} within {seconds:.0f}s")


def sign_in_as(browser: Any, base_url: str, key: str) -> None:
    """Sign in through the page's local sign-in, as a person would."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/portal/#sign-in")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    poll(
        lambda: browser.execute_script("return document.querySelector('#principals button')"),
        "sign-in list",
    )
    browser.find_element(By.CSS_SELECTOR, f"button[data-principal='{key}']").click()
    poll(
        lambda: browser.execute_script("return !document.getElementById('who').hidden"),
        "signed in",
    )
    poll(
        lambda: browser.execute_script(
            "const v = document.getElementById('cost-view');"
            "return v && ['ready', 'error'].includes(v.dataset.state)"
        ),
        "the landing view",
    )


def time_view(browser: Any, hash_: str) -> float:
    """Seconds from the hash change to the cost view drawn, measured in the page."""
    browser.execute_script(TIME_VIEW, hash_)
    timing = poll(
        lambda: browser.execute_script(
            "const t = window.__benchTiming; return (t.end !== null || t.error) && t"
        ),
        "drawn cost view",
    )
    if timing["error"]:
        raise RuntimeError(f"the cost view failed: {timing['error']}")
    return float(timing["end"] - timing["start"]) / 1000


def measure_view(
    name: str,
    browser: Any,
    base_url: str,
    view_hash: str,
    usage_path: str,
    usage_params: dict[str, str],
    token: str,
    pairs: int,
    replay: Replayer,
) -> ViewResult:
    """``pairs`` alternating pairs of the view and the usage read (the view warmed up once
    first); then one run of each replayed for its storage requests."""
    view, usage = Side(), Side()
    ratios: list[float] = []
    # One untimed view first (the page's modules, connections and the host's caches warm);
    # its API requests are the ones replayed for counting.
    browser.get_log("performance")  # drop what came before
    time_view(browser, view_hash + "&run=0")
    calls = api_requests_of(browser.get_log("performance"))
    view.http_requests = len(calls)
    for index in range(1, pairs + 1):
        nonce = f"&run={index}"  # a new hash each time, so the view loads again
        order = ("view", "usage") if index % 2 == 1 else ("usage", "view")
        times: dict[str, float] = {}
        for side in order:
            if side == "view":
                times[side] = time_view(browser, view_hash + nonce)
            else:
                started = time.perf_counter()
                usage.rows, usage.http_requests = usage_read(
                    base_url, usage_path, usage_params, token
                )
                times[side] = time.perf_counter() - started
        view.seconds.append(times["view"])
        usage.seconds.append(times["usage"])
        ratios.append(times["view"] / times["usage"])
        print(f"  {name} pair {index}: view {times['view'] * 1000:.0f} ms, "
              f"usage read {times['usage'] * 1000:.0f} ms", flush=True)  # fmt: skip

    def replay_view() -> int:
        for method, url, headers, body in calls:
            replay.answer(method, url, headers, body)
        return len(calls)

    view.storage_requests, view.storage_by_kind = replay.counted(replay_view)
    first = f"https://usage.example{usage_path}?{urlencode(usage_params)}"
    usage.storage_requests, usage.storage_by_kind = replay.counted(
        lambda: replay.usage_pages(first, token)
    )
    return ViewResult(name, view, usage, ratios)


def token_for(issuer: LocalIssuer, picked: SignInChoice) -> str:
    return issuer.mint(picked.principal.object_id, roles=picked.principal.app_roles)


def usage_params(first: datetime, last: datetime) -> dict[str, str]:
    return {
        "api-version": USAGE_VERSION,
        "reportedStartTime": f"{first:%Y-%m-%dT%H:%M:%SZ}",
        "reportedEndTime": f"{last + HOUR:%Y-%m-%dT%H:%M:%SZ}",
        "aggregationGranularity": "Hourly",
        "showDetails": "false",
    }


def run(shape: Shape, pairs: int) -> dict[str, Any]:
    if not installed():
        raise SystemExit(
            "bench portal: no /usr/bin/chromium and /usr/bin/chromedriver "
            "(apt-get install chromium chromium-driver)"
        )
    limit = store_limit(node_heap_mb(available_memory_mb()), node_max_string_length())
    with (
        Azurite(heap_mb=limit.heap_mb, die_with_parent=True) as azurite,
        tempfile.TemporaryDirectory() as scratch,
    ):
        issuer = LocalIssuer(Path(scratch) / "auth")
        values = local_values(
            azurite.connection_string,
            USAGE_TABLE_PREFIX="p" + uuid.uuid4().hex[:10],
            AUTH_JWKS_URI=str(issuer.jwks_path),
            FLEET_TENANTS=str(shape.tenants),
            FLEET_SEED="1",
            FLEET_SCALE="1.0",
            COLLECT_LOOKBACK_HOURS="1",
            PORTAL_LOCAL_SIGN_IN_URL=DEFAULT_PATH,
            **{f"AzureWebJobs.{name}.Disabled": "true" for name in DISABLED},
        )
        settings = Settings.from_environ(values)
        fleet = fleet_from_settings(settings)
        sign_in = LocalSignIn(settings, issuer, at=shape.month_last)
        choices = {choice.key: choice for choice in sign_in.choices}
        tenant, subscription = longest_lived(fleet, choices, shape)
        built = build_store(settings, fleet, shape, subscription)
        print(
            f"portal: store of {built.rows:,} rows over {built.hours:,} reported hours "
            f"built and rated in {built.seconds:.0f}s",
            flush=True,
        )
        root = fleet.default_provider.subscription_id.lower()
        counter = StorageRequests()
        replay = Replayer(FunctionApp(settings, request_hook=counter), counter)
        browser = chromium(Path(scratch) / "chromium")
        try:
            with LocalFunctionsHost(
                REPO, values, run_timers_at_start=False, local_routes=(sign_in.route(),)
            ) as host:
                base = host.base_url
                window = f"preset=custom&from={MONTH_FIRST:%Y-%m-%d}&to={shape.last_day}"
                sign_in_as(browser, base, "admin")
                admin = measure_view(
                    "admin_month",
                    browser,
                    base,
                    f"#cost?{window}&by=SubscriptionId&context=provider:{root}",
                    PROVIDER_USAGE.format(root),
                    usage_params(MONTH_FIRST, shape.month_last),
                    token_for(issuer, choices["admin"]),
                    pairs,
                    replay,
                )
                sign_in_as(browser, base, tenant.key)
                history = f"preset=custom&from={shape.history_from}&to={shape.last_day}"
                one = measure_view(
                    "subscription_3_months",
                    browser,
                    base,
                    f"#cost?{history}&by=Meter&context=tenant:{subscription}",
                    TENANT_USAGE.format(subscription),
                    usage_params(shape.history_first, shape.month_last),
                    token_for(issuer, tenant),
                    pairs,
                    replay,
                )
        finally:
            browser.quit()
    worse = max(statistics.median(admin.ratios), statistics.median(one.ratios))
    return {
        "tenants": shape.tenants,
        "month_window": f"{MONTH_FIRST:%Y-%m-%d}/{shape.last_day}",
        "subscription_window": f"{shape.history_from}/{shape.last_day}",
        "store_rows": built.rows,
        "store_hours": built.hours,
        "store_build_s": round(built.seconds, 1),
        "pairs": pairs,
        "admin_month": admin.figures(),
        "subscription_3_months": one.figures(),
        "cost_view_ratio_to_usage_read": round(worse, 4),
        "target": 0.5,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench portal", description=__doc__)
    parser.add_argument("--tenants", type=int, default=300, help="directory tenants")
    parser.add_argument("--days", type=int, default=1, help="days of December 2026 collected")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per view")
    parser.add_argument("--quick", action="store_true", help="3 tenants, 6 hours, 8 days")
    args = parser.parse_args(argv)
    if args.quick:
        last = MONTH_FIRST + 5 * HOUR
        shape = Shape(3, last, MONTH_FIRST - timedelta(days=7))
        pairs = 3
    else:
        if not 1 <= args.days <= 31:
            parser.error("--days is between 1 and 31")
        last = MONTH_FIRST + timedelta(days=args.days) - HOUR
        first = (last.replace(hour=0) - timedelta(days=90)).replace(hour=0)
        shape = Shape(args.tenants, last, first)
        pairs = args.pairs
    finish(run(shape, pairs))
    return 0
