"""Load: concurrent API clients while collection and billing run, through a storage outage.

``python -m bench load [--quick] [--clients N] [--seconds S]``

A simulated fleet's day is collected into an on-disk Azurite (not timed) and served by the
real ``query_usage`` entry point behind the local Functions host, over real HTTP. Then:

- a baseline: ONE client alone pages through the day, to give the same run's p50;
- N clients at once (threads, one ``requests.Session`` each): the admin, every provider
  (the default and the delegated ones) and tenant owners, each paging through the whole
  day on its route again and again;
- meanwhile a collector thread collects the following hours (the real ``Collector`` with
  the work-item enqueuer) and a billing thread reports the work items to the commerce
  emulator (``report_message``), as the timer and the queue trigger would;
- halfway, storage goes away: Azurite is stopped (gracefully: see ``bench/chaos.py``) for
  a few seconds and started again on the same folder.

Every response is checked: its status must be 200, or 503 with ``Retry-After`` (anything
else counts in ``errors`` and ``non_2xx_by_code``); every row's subscription must be in
the caller's scope (``rows_outside_scope``, must be 0). A client that gets a 503 waits its
``Retry-After`` (capped at 1 s here) and asks for the same page again.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from bench.common import finish
from devstack.azurite import REPO_ROOT, Azurite
from devstack.commerce_emulator import CommerceEmulator
from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.host import LocalFunctionsHost
from devstack.local_settings import local_values
from devstack.tokens import LocalIssuer
from shared.billing.reporter import report_message
from shared.billing.work_items import WorkItem, work_item_enqueuer
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import HOUR
from shared.storage.account import StorageAccount
from shared.storage.queues import ensure_queue, queue_client

DAY = datetime(2026, 11, 20, tzinfo=UTC)
API_VERSION = "2015-06-01-preview"
TENANT_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/usageAggregates"
PROVIDER_PATH = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
OUTAGE_SECONDS = 4.0


@dataclass(frozen=True)
class Caller:
    role: str
    path: str
    token: str
    scope: frozenset[str] | None  # None: everything (the admin)


@dataclass
class Tally:
    """What every client saw; one lock, updated once per response."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    rows: int = 0
    outside: int = 0
    runs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, status: int, ok: bool, rows: int, outside: int) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] += 1
            self.errors += 0 if ok else 1
            self.rows += rows
            self.outside += outside


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def page_run(session: requests.Session, base_url: str, caller: Caller, tally: Tally,
             stop: threading.Event) -> None:  # fmt: skip
    """One paging run through the day; every response checked."""
    query = "&".join(
        f"{name}={quote(value, safe='')}"
        for name, value in (
            ("api-version", API_VERSION),
            ("reportedStartTime", DAY.isoformat()),
            ("reportedEndTime", (DAY + timedelta(days=1)).isoformat()),
            ("aggregationGranularity", "Hourly"),
        )
    )
    url: str | None = f"{base_url}{caller.path}?{query}"
    headers = {"Authorization": f"Bearer {caller.token}"}
    while url is not None and not stop.is_set():
        started = time.perf_counter()
        try:
            response = session.get(url, headers=headers, timeout=60)
        except requests.RequestException:
            tally.record(time.perf_counter() - started, 0, False, 0, 0)
            continue
        seconds = time.perf_counter() - started
        if response.status_code == 503 and response.headers.get("Retry-After"):
            tally.record(seconds, 503, True, 0, 0)
            stop.wait(min(1.0, float(response.headers["Retry-After"])))
            continue
        if response.status_code != 200:
            tally.record(seconds, response.status_code, False, 0, 0)
            return
        body = response.json()
        rows = body.get("value", [])
        outside = 0
        if caller.scope is not None:
            outside = sum(
                1 for row in rows if row["properties"]["subscriptionId"] not in caller.scope
            )
        tally.record(seconds, 200, True, len(rows), outside)
        url = body.get("nextLink")
    with tally.lock:
        tally.runs += 1


def client_loop(base_url: str, caller: Caller, tally: Tally, stop: threading.Event) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            page_run(session, base_url, caller, tally, stop)


class Load:
    def __init__(self, folder: Path, clients: int, seconds: float) -> None:
        self.folder = folder
        self.clients = clients
        self.seconds = seconds
        self.azurite = Azurite(location=folder / "azurite")
        self.issuer = LocalIssuer(folder / "auth")
        self.hours_collected = 0
        self.items_reported = 0
        self.background_failures = 0

    def prepare(self) -> None:
        self.azurite.start()
        self.emulator = CommerceEmulator(clock=lambda: self._billing_now)
        self.emulator.start()
        self._billing_now = DAY
        self.values = local_values(
            self.azurite.connection_string,
            USAGE_TABLE_PREFIX="l" + uuid.uuid4().hex[:10],
            USAGE_QUEUE_NAME="l" + uuid.uuid4().hex[:10],
            AUTH_JWKS_URI=str(self.issuer.jwks_path),
            COMMERCE_BASE_URL=self.emulator.base_url,
            FLEET_SEED="7",
            FLEET_TENANTS="12",
            FLEET_SCALE="0.6",
            FLEET_LATE_SHARE="0.3",
            COLLECT_LOOKBACK_HOURS="24",
            FUNCTIONS_WORKER_RUNTIME="python",
            **{
                "AzureWebJobs.collect_usage.Disabled": "true",
                "AzureWebJobs.collect_slice.Disabled": "true",
                "AzureWebJobs.report_to_azure.Disabled": "true",
            },
        )
        self.settings = Settings.from_environ(self.values)
        self.fleet = SimulatedFleet(FleetOptions(seed=7, tenants=12, scale=0.6, late_share=0.3))
        self.collector = Collector(
            self.settings,
            StorageAccount(self.settings),
            self.fleet,
            after_hour_written=work_item_enqueuer(self.settings),
        )
        self.collector.collect_due_hours(DAY + timedelta(days=1, minutes=30))

    def callers(self) -> list[Caller]:
        listed = {}
        for hour in range(0, 24, 6):
            for s in self.fleet.subscriptions(DAY + hour * HOUR):
                listed[s.subscription_id.lower()] = s
        admin = self.issuer.mint(str(uuid.UUID(int=1)), roles=(self.settings.auth_admin_role,))
        providers = [self.fleet.default_provider, *self.fleet.delegated_providers]
        everyone = [
            Caller("admin", PROVIDER_PATH.format(providers[0].subscription_id), admin, None)
        ]
        for provider in providers:
            scope = frozenset(
                sid
                for sid, s in listed.items()
                if (s.provider_subscription_id or "").lower() == provider.subscription_id.lower()
            )
            everyone.append(
                Caller(
                    "provider",
                    PROVIDER_PATH.format(provider.subscription_id),
                    self.issuer.mint(provider.owners[0]),
                    scope,
                )
            )
        tenants = sorted(
            (
                s
                for s in self.fleet.subscriptions(DAY + 23 * HOUR)
                if not s.is_provider and s.owners and s.state.value == "active"
            ),
            key=lambda s: s.subscription_id,
        )
        for tenant in tenants:
            everyone.append(
                Caller(
                    "tenant",
                    TENANT_PATH.format(tenant.subscription_id),
                    self.issuer.mint(tenant.owners[0]),
                    frozenset({tenant.subscription_id.lower()}),
                )
            )
        return [everyone[n % len(everyone)] for n in range(self.clients)]

    # -- background work ---------------------------------------------------------------------

    def collect_later_hours(self, stop: threading.Event) -> None:
        hour = DAY + timedelta(days=1)
        while not stop.is_set():
            try:
                self.collector.collect_hour(hour)
                self.hours_collected += 1
                hour += HOUR
            except Exception:
                self.background_failures += 1  # storage away: the next run redoes the hour
                stop.wait(0.5)

    def report_items(self, stop: threading.Event) -> None:
        queue = queue_client(self.settings, self.settings.usage_queue_name)
        while not stop.is_set():
            try:
                batch = list(queue.receive_messages(max_messages=8, visibility_timeout=30))
            except Exception:
                self.background_failures += 1
                stop.wait(0.5)
                continue
            if not batch:
                stop.wait(0.2)
                continue
            for message in batch:
                body = base64.b64decode(message.content)
                hour = WorkItem.from_body(body).hour
                self._billing_now = hour + timedelta(minutes=70)
                try:
                    report_message(body, self.settings, clock=lambda: self._billing_now)
                    queue.delete_message(message)
                    self.items_reported += 1
                except Exception:
                    self.background_failures += 1  # redelivered after its visibility timeout

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.prepare()
        ensure_queue(queue_client(self.settings, self.settings.usage_queue_name))
        callers = self.callers()
        host = LocalFunctionsHost(REPO_ROOT, self.values, run_timers_at_start=False)
        try:
            with host:
                base = self._baseline(host.base_url, callers)
                figures = self._load(host.base_url, callers)
        finally:
            self.emulator.stop()
            self.azurite.stop()
        figures["baseline_p50_ms"] = round(base, 2)
        figures["p50_ratio_to_baseline"] = round(figures["p50_ms"] / base, 2) if base else 0.0
        return figures

    def _baseline(self, base_url: str, callers: list[Caller]) -> float:
        """p50 of one client alone (the admin's provider route) paging through the day."""
        tally = Tally()
        never = threading.Event()
        with requests.Session() as session:
            for _ in range(2):
                page_run(session, base_url, callers[0], tally, never)
        return percentile(tally.latencies, 0.5) * 1000

    def _load(self, base_url: str, callers: list[Caller]) -> dict[str, Any]:
        tally = Tally()
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(base_url, c, tally, stop), daemon=True)
            for c in callers
        ]
        background = [
            threading.Thread(target=self.collect_later_hours, args=(stop,), daemon=True),
            threading.Thread(target=self.report_items, args=(stop,), daemon=True),
        ]
        started = time.monotonic()
        for thread in [*threads, *background]:
            thread.start()
        stop.wait(self.seconds / 2)
        self.azurite.stop()  # the outage
        outage_started = time.monotonic()
        stop.wait(OUTAGE_SECONDS)
        self.azurite.start()
        outage = time.monotonic() - outage_started
        stop.wait(max(0.0, self.seconds - (time.monotonic() - started)))
        stop.set()
        for thread in [*threads, *background]:
            thread.join(timeout=90)
        elapsed = time.monotonic() - started
        non_2xx = {str(code): n for code, n in sorted(tally.statuses.items()) if code != 200}
        return {
            "clients": len(callers),
            "callers_by_role": dict(Counter(c.role for c in callers)),
            "requests": len(tally.latencies),
            "errors": tally.errors,
            "p50_ms": round(percentile(tally.latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 2),
            "rows_per_s": round(tally.rows / elapsed, 1),
            "non_2xx_by_code": non_2xx,
            "rows_outside_scope": tally.outside,
            "paging_runs": tally.runs,
            "outage_seconds": round(outage, 1),
            "hours_collected_meanwhile": self.hours_collected,
            "work_items_billed_meanwhile": self.items_reported,
            "background_failures": self.background_failures,
            "seconds": round(elapsed, 1),
        }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load")
    parser.add_argument("--quick", action="store_true", help="8 clients, 30 s")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args(argv)
    clients = args.clients or (8 if args.quick else 16)
    seconds = args.seconds or (30.0 if args.quick else 90.0)
    with tempfile.TemporaryDirectory(prefix="load-") as folder:
        figures = Load(Path(folder), clients, seconds).run()
    print(f"load: {clients} clients for {seconds:.0f} s, storage down {OUTAGE_SECONDS:.0f} s")
    finish(figures)
    ok = figures["rows_outside_scope"] == 0 and figures["errors"] == 0
    return 0 if ok else 1
