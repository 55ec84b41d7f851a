"""What it costs to run: ``python -m bench cost [--tenants N] [--quick]``.

In Azure the bill is storage requests, function executions and their memory-time; those are
exact counts, so this benchmark counts them instead of timing anything. A simulated fleet of
``--tenants`` directory tenants (about 7 subscriptions each, a quarter of them with usage in
an hour: 13 make ~100 subscriptions, 128 ~1,000, 640 ~5,000) runs through every stage of
the function app, in process, through its entry points (``shared.app.FunctionApp``), on a
fresh in-memory Azurite with the commerce emulator, on the default tables transport
(``TABLES_TRANSPORT`` unset: ``direct`` where the installed SDK is the proved one). Every
storage request (tables, queues and blobs) is counted by the account's one request hook
(``shared.storage.request_count``), per kind; the Functions host's own queue reads (one
receive and one delete per message it hands a queue trigger) are made here through the same
account, so they are counted too. Commerce calls are counted at the emulator; executions
are the entry point calls.

The fleet's last two reported hours of November 2026 are collected: 22:00 into new tables
(``collect_new_tables``), 23:00 warm (``collect``); 23:00 closes the day (daily rows) and the
month (statements, export). The stages and their units:

- ``plan``: one ``collect_usage`` timer run (per run, every hour);
- ``collect``: the warm hour's ``collect_slice`` executions, hour close and billing work
  included, daily rows excluded (per subscription-hour with rows);
- ``daily``: the day's daily rows, rebuilt as the hour close builds them (idempotent, the
  same requests) (per subscription-day);
- ``bill``: the warm hour's ``report_to_azure`` executions (per billing resource-hour);
- ``rate``: the ``rate_usage`` run that rates the warm hour (per subscription-hour), and
  ``rate_idle``: a run that finds nothing new (five of its six runs an hour);
- ``statements``: one ``finalise_statements`` run freezing November, October being final
  already (per month entity frozen);
- ``export``: the admin's FOCUS export of November (per 10,000 exported rows);
- ``api_tenant_page``, ``api_provider_page``: one page each through ``query_usage``;
- ``api_cost_query_tenant``, ``api_cost_query_provider``: one page each of the Cost
  Management Query route (``query_usage``): November's cost per day and resource type, of
  the busiest tenant and of the default provider's tenants;
- ``observe``: one ``observe_pipeline`` run without the daily reconciliation (288 a day),
  and ``observe_reconcile``: the day's first, which reconciles the previous day.

Each stage's ``budget_ratio`` is its storage requests over its ideal (``bench.cost_model``,
written down in ``docs/scale.md``); ``tests/integration/test_cost_budget.py`` holds the
counts of a small fleet to recorded budgets.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import cost_bill as prices
from bench import cost_model as model
from bench.common import finish, map_to_shared_resources
from bench.cost_model import Ideal
from devstack.azurite import Azurite
from devstack.commerce_emulator import CommerceEmulator
from devstack.example_prices import load_example_prices
from devstack.fleet import fleet_from_settings
from devstack.local_settings import local_values
from devstack.tokens import LocalIssuer
from shared.app import FunctionApp
from shared.collection.daily import build_daily_rows
from shared.core.config import Settings
from shared.core.hours import hour_key
from shared.core.meters import catalogue
from shared.export.configs import ExportConfigs, make_config
from shared.query.usage_api import HttpCall
from shared.rating.cost_lines import months_between
from shared.rating.engine import Month
from shared.rating.ledger import ChargeLedger
from shared.rating.marks import RatingMarks
from shared.status.reader import RECENT_HOURS
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_hour, read_manifest
from shared.storage.request_count import (
    BLOB_KINDS,
    QUEUE_KINDS,
    TABLE_KINDS,
    RequestKind,
    StorageRequests,
)
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import daily_partition, usage_table_name

FIRST_HOUR = datetime(2026, 11, 30, 22, tzinfo=UTC)  # into new tables
WARM_HOUR = FIRST_HOUR + timedelta(hours=1)  # closes the day and the month
MONTH = Month(2026, 11)
VERSION = "api-version=2015-06-01-preview"
HOST_BATCH = 8  # host.json's queues.batchSize: messages the host fetches per receive


@dataclass
class Stage:
    """What one stage sent: storage requests per kind, commerce calls, executions."""

    name: str
    unit: str
    units: int
    requests: Counter[RequestKind] = field(default_factory=Counter)
    commerce_calls: int = 0
    executions: int = 0
    ideal: Ideal | None = None

    @property
    def storage_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def budget_ratio(self) -> float | None:
        if self.ideal is None or self.ideal.requests == 0:
            return None
        return self.storage_requests / self.ideal.requests

    def figures(self) -> dict[str, Any]:
        per = self.units or 1
        shown: dict[str, Any] = {
            "unit": self.unit,
            "units": self.units,
            "storage_requests": self.storage_requests,
            "per_unit": round(self.storage_requests / per, 4),
            "tables": {k.value: self.requests[k] for k in TABLE_KINDS if self.requests[k]},
            "queues": {k.value: self.requests[k] for k in QUEUE_KINDS if self.requests[k]},
            "blobs": {k.value: self.requests[k] for k in BLOB_KINDS if self.requests[k]},
            "commerce_calls": self.commerce_calls,
            "executions": self.executions,
        }
        if self.ideal is not None:
            shown["ideal"] = self.ideal.requests
            shown["ideal_per_unit"] = round(self.ideal.requests / per, 4)
            ratio = self.budget_ratio
            shown["budget_ratio"] = None if ratio is None else round(ratio, 3)
        return shown


@dataclass
class CountedRun:
    """The app under count: its storage hook, the endpoint's call counter, the stages."""

    app: FunctionApp
    counter: StorageRequests
    emulator: CommerceEmulator
    traced: list[str]
    trace: str | None
    # The app's and the endpoint's clock.
    now: datetime = FIRST_HOUR
    stages: dict[str, Stage] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, unit: str, units: int = 0) -> Iterator[Stage]:
        stage = Stage(name, unit, units)
        before = self.counter.snapshot()
        calls = self.emulator.total_calls
        self.traced.clear()
        yield stage
        if self.trace == name:
            print("\n".join(self.traced))
        stage.requests = self.counter.since(before)
        stage.commerce_calls = self.emulator.total_calls - calls
        self.stages[name] = stage
        # As it goes, so a long run (5,000 subscriptions) shows what it measured so far.
        print(f"{name}: {stage.storage_requests} storage requests", file=sys.stderr, flush=True)

    def drain(self, queue_name: str, handle: Callable[[str], object]) -> int:
        """Every message of ``queue_name`` handed to ``handle`` as the Functions host does:
        up to ``HOST_BATCH`` messages per receive, one delete per message once its execution
        returns (both counted); returns how many executions. The receive that finds the
        queue empty is the host's idle polling, which the monthly bill counts apart
        (docs/scale.md), so it is not counted here."""
        client = self.app.account.queue(queue_name)
        executions = 0
        while True:
            before = self.counter.snapshot()
            pager = client.receive_messages(messages_per_page=HOST_BATCH)
            messages = list(next(pager.by_page(), []))
            if not messages:
                self.counter.forget(self.counter.since(before))
                return executions
            for message in messages:
                handle(base64.b64decode(message.content).decode("utf-8"))
                client.delete_message(message)
                executions += 1


def settings_for(connection_string: str, tenants: int, commerce_url: str, jwks: Path) -> Settings:
    overrides = ";".join(f"{meter.meter_id}=true" for meter in catalogue())
    return Settings.from_environ(
        local_values(
            connection_string,
            USAGE_TABLE_PREFIX="c" + uuid.uuid4().hex[:10],
            USAGE_QUEUE_NAME="c" + uuid.uuid4().hex[:10],
            COLLECT_QUEUE_NAME="k" + uuid.uuid4().hex[:10],
            COMMERCE_BASE_URL=commerce_url,
            BILLING_CHARGEABLE_OVERRIDES=overrides,
            AUTH_JWKS_URI=str(jwks),
            FLEET_TENANTS=str(tenants),
            COLLECT_LOOKBACK_HOURS="1",
        )
    )


def collect(run: CountedRun, hour: datetime, name: str) -> None:
    """One hour: the timer's plan (its own stage), then every slice it sent."""
    app = run.app
    run.now = hour + timedelta(hours=1 + app.settings.collect_delay_hours, minutes=5)
    with run.stage(f"plan_{name}", "timer run", 1) as stage:
        app.plan_collection(run.now)
        stage.executions = 1
    with run.stage(name, "subscription-hour") as stage:
        stage.executions = run.drain(app.settings.collect_queue_name, app.collect_slice_message)
    stage.units = len(read_hour(StorageAccount(app.settings), hour))


def bill(run: CountedRun, name: str, hour: datetime) -> None:
    app = run.app
    with run.stage(name, "billing resource-hour") as stage:
        stage.executions = run.drain(app.settings.usage_queue_name, app.report_message)
    entries = read_hour(StorageAccount(app.settings), hour)
    stage.units = len({entry.billing_resource_id for entry in entries})


def api_call(app: FunctionApp, token: str, path: str, query: str) -> int:
    """One request through ``query_usage``; returns how many subscriptions its page holds."""
    url = f"https://usage.example{path}?{query}"
    call = HttpCall(
        method="GET",
        url=url,
        route_path=urlsplit(url).path.removeprefix("/subscriptions"),
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = app.answer_usage_request(call)
    if answer.status != 200:
        raise RuntimeError(f"{path}: {answer.status} {answer.body[:300]!r}")
    rows = json.loads(answer.body)["value"]
    return len({row["properties"]["subscriptionId"] for row in rows})


def cost_definition(month: Month) -> bytes:
    """A Cost Management query of ``month``'s cost per day and resource type (what Azure's
    cost analysis asks for a month's chart)."""
    last = month.next.first_hour - timedelta(days=1)
    return json.dumps(
        {
            "type": "ActualCost",
            "timeframe": "Custom",
            "timePeriod": {
                "from": f"{month.first_hour:%Y-%m-%dT00:00:00Z}",
                "to": f"{last:%Y-%m-%dT23:59:59Z}",
            },
            "dataset": {
                "granularity": "Daily",
                "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
                "grouping": [{"type": "Dimension", "name": "ResourceType"}],
            },
        }
    ).encode()


def cost_query(app: FunctionApp, token: str, scope: str, body: bytes) -> int:
    """One page of the Cost Management Query route through ``query_usage``; returns how
    many rows it holds."""
    url = f"https://usage.example{scope}/providers/Microsoft.CostManagement/query?api-version=2023-11-01"
    call = HttpCall(
        method="POST",
        url=url,
        route_path=urlsplit(url).path.removeprefix("/subscriptions"),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        body=body,
    )
    answer = app.answer_usage_request(call)
    if answer.status != 200:
        raise RuntimeError(f"{scope}: {answer.status} {answer.body[:300]!r}")
    return len(json.loads(answer.body)["properties"]["rows"])


def usage_rows(account: StorageAccount, first: datetime, last: datetime) -> dict[str, int]:
    """Hourly rows reported ``first``..``last`` per subscription that has any (uncounted),
    from the hour manifest, whose entries count each subscription's rows of an hour: one
    range read instead of a query of every stored subscription's table."""
    found: Counter[str] = Counter()
    for _, entry in read_manifest(account, first, last):
        found[entry.subscription_id] += entry.rows
    return {subscription_id: rows for subscription_id, rows in found.items() if rows}


def daily_rows(account: StorageAccount, subscription_id: str, day: datetime) -> int:
    table = account.table_named(usage_table_name(account.settings.table_prefix, subscription_id))
    entities = table.query_entities(
        "PartitionKey eq @p", parameters={"p": daily_partition(day)}, select=["RowKey"]
    )
    return sum(1 for _ in entities)


def recent_hours(account: StorageAccount, through: datetime) -> tuple[int, int]:
    """How many summary entities and ledger entities the status reader's recent hours
    (``RECENT_HOURS`` through ``through``) hold: what its two window reads page through."""
    first = through - (RECENT_HOURS - 1) * timedelta(hours=1)
    summaries = account.table("summaries").query_entities(
        "PartitionKey ge @low and PartitionKey le @high",
        parameters={"low": hour_key(first), "high": hour_key(through)},
        select=["RowKey"],
    )
    ledger = account.table("ledger").query_entities(
        "RowKey ge @low and RowKey lt @high",
        parameters={"low": hour_key(first), "high": hour_key(through) + "`"},
        select=["RowKey"],
    )
    return sum(1 for _ in summaries), sum(1 for _ in ledger)


def entity_bytes(account: StorageAccount, subscription_id: str, hour: datetime) -> float:
    """The mean billed size of one hourly row (Table storage's formula: 4 bytes, the keys
    as UTF-16, and per property 8 bytes, its name as UTF-16 and its value's size)."""
    table = account.table_named(usage_table_name(account.settings.table_prefix, subscription_id))
    sizes = []
    for entity in table.query_entities(
        "PartitionKey eq @p", parameters={"p": f"H{hour_key(hour)}"}
    ):
        size = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
        for name, value in entity.items():
            if name in ("PartitionKey", "RowKey"):
                continue
            if isinstance(value, str):
                value_bytes = 4 + 2 * len(value)
            elif isinstance(value, bool):
                value_bytes = 1
            else:
                value_bytes = 8
            size += 8 + 2 * len(name) + value_bytes
        sizes.append(size)
    return sum(sizes) / len(sizes)


def measure(
    tenants: int, trace: str | None = None, azurite: Azurite | None = None
) -> tuple[dict[str, Stage], dict[str, Any]]:
    """Every stage's counts for a fleet of ``tenants`` directory tenants, on ``azurite`` (its
    own fresh one when None; the tables and queues of a run are its own either way)."""
    runs: list[CountedRun] = []

    def clock() -> datetime:
        return runs[0].now if runs else FIRST_HOUR

    with (
        contextlib.nullcontext(azurite) if azurite is not None else Azurite() as azurite,
        CommerceEmulator(clock=lambda: clock()) as emulator,
        tempfile.TemporaryDirectory() as scratch,
    ):
        issuer = LocalIssuer(Path(scratch) / "auth")
        settings = settings_for(
            azurite.connection_string, tenants, emulator.base_url, issuer.jwks_path
        )
        fleet = fleet_from_settings(settings)
        map_to_shared_resources(StorageAccount(settings), fleet, FIRST_HOUR, resource_digits=5)
        load_example_prices(settings)
        ExportConfigs(StorageAccount(settings)).put(make_config("focus-admin", "admin"))
        # October is final already, as in any month after a deployment's first: the first
        # finalisation's look-back for the oldest month with charges (once in a deployment's
        # life) is not what a month-end costs.
        RatingMarks(StorageAccount(settings)).record_finalised(MONTH.previous)
        counter = StorageRequests()
        traced: list[str] = []

        def hook(request: Any) -> None:
            counter(request)
            if trace is not None:
                http = request.http_request
                parts = urlsplit(http.url)
                traced.append(f"{http.method} {parts.path} {parts.query}")

        app = FunctionApp(settings, request_hook=hook, clock=clock)
        run = CountedRun(app, counter, emulator, traced, trace)
        runs.append(run)
        stored = StorageAccount(settings)  # uncounted: what the ideals are computed from

        collect(run, FIRST_HOUR, "collect_new_tables")
        bill(run, "bill_new_ledger", FIRST_HOUR)
        with run.stage("rate_new_month", "subscription-hour") as stage:
            stage.units = app.rate_usage().subscription_batches
            stage.executions = 1
        collect(run, WARM_HOUR, "collect_closing_day")
        bill(run, "bill", WARM_HOUR)
        with run.stage("rate", "subscription-hour") as stage:
            stage.units = app.rate_usage().subscription_batches
            stage.executions = 1
        with run.stage("rate_idle", "timer run", 1) as stage:
            app.rate_usage()  # every 10 minutes; most runs find nothing new
            stage.executions = 1

        day = WARM_HOUR.replace(hour=0)
        with run.stage("daily", "subscription-day") as daily:
            daily.units = build_daily_rows(app.account, day, parallelism=settings.write_parallelism)
        closing = run.stages.pop("collect_closing_day")
        warm = Stage("collect", closing.unit, closing.units, closing.requests - daily.requests)
        warm.executions = closing.executions
        run.stages["collect"] = warm
        run.stages["plan"] = run.stages.pop("plan_collect_closing_day")
        del run.stages["plan_collect_new_tables"]

        with run.stage("statements", "statement") as stage:
            stage.units = app.finalise_statements().statements_frozen
            stage.executions = 1
        config = ExportConfigs(stored).get("focus-admin")
        assert config is not None
        with run.stage("export", "10,000 exported rows") as stage:
            exported = app.exporter().run(config, MONTH)
            stage.executions = 1
        stage.units = exported.rows / 10_000  # type: ignore[assignment]

        entries = sorted(read_hour(stored, WARM_HOUR), key=lambda e: -e.rows)
        tenant = entries[0].subscription_id
        listed = {s.subscription_id.lower(): s for s in fleet.subscriptions(WARM_HOUR)}
        window = (
            f"{VERSION}&reportedStartTime={FIRST_HOUR:%Y-%m-%dT%H:%M:%SZ}"
            f"&reportedEndTime={WARM_HOUR + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"
            "&aggregationGranularity=Hourly"
        )
        with run.stage("api_tenant_page", "page", 1) as stage:
            tenant_page = api_call(
                app,
                issuer.mint(listed[tenant].owners[0]),
                f"/subscriptions/{tenant}/providers/Microsoft.Commerce/usageAggregates",
                window,
            )
            stage.executions = 1
        provider = fleet.default_provider
        with run.stage("api_provider_page", "page", 1) as stage:
            provider_page = api_call(
                app,
                issuer.mint(provider.owners[0]),
                f"/subscriptions/{provider.subscription_id}/providers/"
                "Microsoft.Commerce.Admin/subscriberUsageAggregates",
                window,
            )
            stage.executions = 1
        month_body = cost_definition(MONTH)
        with run.stage("api_cost_query_tenant", "page", 1) as stage:
            cost_query(
                app, issuer.mint(listed[tenant].owners[0]), f"/subscriptions/{tenant}", month_body
            )
            stage.executions = 1
        with run.stage("api_cost_query_provider", "page", 1) as stage:
            cost_query(
                app,
                issuer.mint(provider.owners[0]),
                f"/subscriptions/{provider.subscription_id}/providers/Microsoft.Commerce.Admin",
                month_body,
            )
            stage.executions = 1

        run.now = WARM_HOUR + timedelta(hours=1, minutes=10)
        with run.stage("observe_reconcile", "timer run", 1) as stage:
            app.observe_pipeline()
            stage.executions = 1
        with run.stage("observe", "timer run", 1) as stage:
            app.observe_pipeline()
            stage.executions = 1

        # The ideals, from what is stored (uncounted reads).
        stages = run.stages
        store = SubscriptionStore(stored)
        subscriptions = store.all()
        providers = Counter(
            subscriptions[e.subscription_id].provider_subscription_id for e in entries
        )
        summary_entities = sum(
            1
            for e in stored.table("summaries").query_entities(
                "PartitionKey eq @p", parameters={"p": hour_key(WARM_HOUR)}, select=["RowKey"]
            )
            if "~" not in e["RowKey"]
        )
        stages["collect"].ideal = model.collect(
            [e.rows for e in entries],
            providers.values(),
            summary_entities,
            len(subscriptions),
            len(store.indexed()),
            stages["collect"].requests[RequestKind.QUEUE_SEND],
            stages["collect"].executions,
        )
        stages["plan"].ideal = model.plan(1, stages["plan"].requests[RequestKind.QUEUE_SEND])
        day_rows = usage_rows(stored, day, day + timedelta(hours=23))
        manifest = sum(1 for _ in read_manifest(stored, day, day + timedelta(hours=23)))
        stages["daily"].ideal = model.daily(
            manifest, day_rows.values(), [daily_rows(stored, sid, day) for sid in day_rows]
        )
        stages["bill"].ideal = model.bill(stages["bill"].executions, stages["bill"].units)
        month_rows = usage_rows(stored, MONTH.first_hour, MONTH.last_hour)
        stages["rate"].ideal = model.rate(stages["rate"].units)
        stages["rate_idle"].ideal = model.rate_idle()
        finalised = {s for tenants in ChargeLedger(stored).indexed(MONTH).values() for s in tenants}
        stages["statements"].ideal = model.statements(stages["statements"].units, len(finalised))
        stages["export"].ideal = model.export(
            len(month_rows), len(exported.blobs), exported.removed
        )
        stages["api_tenant_page"].ideal = model.tenant_page(tenant_page)
        stages["api_provider_page"].ideal = model.provider_page(provider_page, days=1)
        # The route reads the statements of the query's first month through the one now.
        months = len(months_between(MONTH, Month.of(run.now)))
        stages["api_cost_query_tenant"].ideal = model.cost_query(1, months, provider=False)
        charged = {
            subscription
            for month in months_between(MONTH, Month.of(run.now))
            for subscription in ChargeLedger(stored)
            .indexed(month, provider.subscription_id.lower())
            .get(provider.subscription_id.lower(), set())
        }
        stages["api_cost_query_provider"].ideal = model.cost_query(
            len(charged), months, provider=True
        )
        summaries, ledger = recent_hours(stored, WARM_HOUR)
        stages["observe"].ideal = model.observe(1, 1, summaries, ledger)
        stages["observe_reconcile"].ideal = model.observe_reconcile(
            1, 1, day_rows.values(), summaries, ledger
        )
        stages["collect_new_tables"].ideal = None  # once per subscription's life: not budgeted
        facts = {
            "subscriptions": len(subscriptions),
            "active_subscriptions": len(entries),
            "rows_per_active_hour": sum(e.rows for e in entries) / len(entries),
            "entity_bytes": entity_bytes(stored, entries[0].subscription_id, WARM_HOUR),
            "statements_per_active": stages["statements"].units / len(month_rows),
            "resources_per_active": stages["bill"].units / len(entries),
        }
        return stages, facts


def monthly(stages: dict[str, Stage], facts: dict[str, Any], active: int) -> prices.Monthly:
    """A month of the pipeline for ``active`` subscriptions with usage every hour, from the
    stages' per-unit counts (how often each unit happens is docs/scale.md's; the assumptions
    are named). The API's pages are priced apart (``api_per_1000_pages``): users, not the
    pipeline, decide how many there are."""
    n = Decimal(active)
    zero = Decimal(0)

    def per_unit(name: str, kinds: tuple[RequestKind, ...]) -> Decimal:
        stage = stages[name]
        sent = Decimal(sum(stage.requests[k] for k in kinds))
        return sent / Decimal(str(stage.units or 1))

    other = QUEUE_KINDS + BLOB_KINDS
    resources = n * Decimal(str(facts["resources_per_active"]))
    rows_hour = Decimal(str(facts["rows_per_active_hour"]))
    units = {  # how many of each stage's unit a month holds
        "collect": n * prices.HOURS,
        "plan": prices.HOURS,
        "daily": n * prices.DAYS,
        "bill": resources * prices.HOURS,
        "statements": n * Decimal(str(facts["statements_per_active"])),
        "observe": 288 * prices.DAYS,
        "observe_reconcile": prices.DAYS,
        "rate": n * prices.HOURS,
        "rate_idle": 5 * prices.HOURS,  # RATING_SCHEDULE every 10 minutes: 5 of 6 find nothing
    }
    table_requests = sum((per_unit(k, TABLE_KINDS) * u for k, u in units.items()), zero)
    other_requests = sum((per_unit(k, other) * u for k, u in units.items()), zero)
    # The daily export: per subscription one read of its month's charge lines.
    export_run = per_unit("export", TABLE_KINDS) * Decimal(str(stages["export"].units))
    export_per_subscription = (export_run - model.EXPORT_CONSTANTS) / Decimal(
        str(facts["active_subscriptions"])
    )
    table_requests += prices.DAYS * (n * export_per_subscription + model.EXPORT_CONSTANTS)
    # Executions: one slice per 100,000 rows an hour, the billing items, the timers, pages.
    slices = max(Decimal(1), -(-(n * rows_hour) // 100_000))
    bill_stage = stages["bill"]
    items = Decimal(bill_stage.executions) / Decimal(bill_stage.units or 1) * resources
    per_item = Decimal(bill_stage.storage_requests) / Decimal(bill_stage.executions or 1)
    posts = Decimal(bill_stage.commerce_calls) / Decimal(bill_stage.executions or 1)
    seconds = prices.execution_seconds
    runs = [  # (executions a month, seconds each)
        (slices * prices.HOURS, seconds(per_unit("collect", TABLE_KINDS) * n / slices, zero)),
        (prices.HOURS, seconds(per_unit("plan", TABLE_KINDS), zero)),
        (items * prices.HOURS, seconds(per_item, posts)),
        (prices.HOURS, prices.EXECUTION_FLOOR_SECONDS),  # finalise_statements, hourly
        (288 * prices.DAYS, seconds(per_unit("observe", TABLE_KINDS), zero)),
        (prices.DAYS, seconds(n * export_per_subscription, zero)),
        (prices.HOURS, seconds(per_unit("rate", TABLE_KINDS) * n, zero)),
        (5 * prices.HOURS, seconds(per_unit("rate_idle", TABLE_KINDS), zero)),
    ]
    stored_rows = n * rows_hour * prices.HOURS * Decimal("1.04")  # and daily rows (~1/24)
    return prices.Monthly(
        table_requests=table_requests,
        queue_blob_requests=other_requests,
        executions=sum((count for count, _ in runs), zero),
        gb_seconds=sum((count * each for count, each in runs), zero) * prices.INSTANCE_GB,
        stored_gb=stored_rows * Decimal(str(facts["entity_bytes"])) / Decimal(1024**3),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cost", description=__doc__)
    parser.add_argument(
        "--tenants", type=int, default=13, help="directory tenants (~7 subscriptions each)"
    )
    parser.add_argument("--quick", action="store_true", help="a fleet of 10 directory tenants")
    parser.add_argument("--trace", help="print every request of this stage")
    args = parser.parse_args(argv)
    tenants = 10 if args.quick else args.tenants
    stages, facts = measure(tenants, args.trace)
    figures: dict[str, Any] = {"tenants": tenants, "transport": "default", **facts}
    for name, stage in stages.items():
        figures[name] = stage.figures()
    page = stages["api_tenant_page"]
    figures["api_per_1000_pages_usd"] = str(
        (
            Decimal(page.storage_requests)
            * 1000
            / prices.TABLE_TRANSACTIONS.per
            * prices.TABLE_TRANSACTIONS.usd
            + 1000 / prices.FLEX_EXECUTIONS.per * prices.FLEX_EXECUTIONS.usd
            + 1000
            * prices.execution_seconds(Decimal(page.storage_requests), Decimal(0))
            * prices.INSTANCE_GB
            * prices.FLEX_GB_SECONDS.usd
        ).quantize(Decimal("0.0001"))
    )
    for active in (1_000, 10_000, 100_000):
        month = monthly(stages, facts, active)
        lines = month.lines()
        figures[f"monthly_usd_{active}"] = {
            **{name: str(value.quantize(Decimal("0.01"))) for name, value in lines.items()},
            "total": str(sum(lines.values(), Decimal(0)).quantize(Decimal("0.01"))),
            "table_requests": int(month.table_requests),
            "queue_blob_requests": int(month.queue_blob_requests),
            "executions": int(month.executions),
            "gb_seconds": int(month.gb_seconds),
            "stored_gb_added": float(round(month.stored_gb, 1)),
        }
    finish(figures)
    return 0
