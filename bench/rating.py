"""Rating and statements: ``python -m bench rating [--quick] [--hours N] [--tenants N]``.

**Throughput.** The simulated fleet's last ``--hours`` reported hours of November 2026 (all
of it without ``--quick``; 8 hours with it) are collected into Azurite by the real
collector, with the example price sheets loaded first. Then, in the same run and the same
Azurite:

- ``raw_read``: every subscription's rows of the month read with the raw table SDK (the
  same range query, every entity materialised), no domain logic: the baseline;
- ``rate``: every subscription's month rated from its rows into the ledger, as the
  ``rate_usage`` timer does when it rates a month from scratch (read the rows, rate them
  at every level, write the month's charge lines and statement lines);
  ``ratio_to_read`` = rows per second through ``rate`` / rows per second of ``raw_read``
  (target >= 0.5: rating costs at most as much as reading);
- ``rate_in_memory``: the rating alone, over rows already read;
- ``requests_per_subscription_hour``: the storage requests one ``rate_usage`` run makes to
  rate one more reported hour (the steady state: one hour per run), per subscription with
  rows in it (``docs/scale.md``);
- ``statements_per_s`` (every statement read from the ledger) and
  ``finalise_statements_per_s`` (the month's ledger frozen).

**Statements read lines, not rows** (``statement_ms_ratio``). One subscription's month
(the busiest of a small fleet; ``--statement-days`` days of it, all 30 without
``--quick``, 10 with it) is written as the collector writes rows, and served by the local
Functions host in its own process, with a real token: the time of its statement through
the HTTP route when only the month's first day is rated (``day_one_statement_ms``), then
when every day is (``month_end_statement_ms``), medians of alternating-free repeated
requests. ``statement_ms_ratio`` = month-end / day-one (target <= 1.5: a statement reads
the ledger's month state, whatever the month holds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from azure.data.tables import TableServiceClient

from bench.common import finish, median, timed
from bench.query import fill, functions_host
from devstack.azurite import Azurite
from devstack.example_prices import load_example_prices
from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.local_settings import local_values
from devstack.tokens import LocalIssuer
from shared.app import FunctionApp
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import HOUR
from shared.core.meters import catalogue
from shared.rating.engine import Level, Month
from shared.rating.finaliser import Finaliser
from shared.rating.rater import Rater
from shared.rating.statements import Statements, rate_in_memory
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import HourEntry, read_manifest, write_manifest
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import hourly_partition, read_hourly_rows, usage_table_name
from shared.storage.watermark import Watermark

MONTH = Month(2026, 11)
STATEMENT_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/statements/2026-11"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rating")
    parser.add_argument("--quick", action="store_true", help="8 hours; 10 statement days")
    parser.add_argument("--hours", type=int, help="reported hours at the end of the month")
    parser.add_argument(
        "--tenants",
        type=int,
        default=100,
        help="directory tenants (~1.1 subscriptions with usage each)",
    )
    parser.add_argument("--scale", type=float, default=0.1, help="resources per subscription")
    parser.add_argument("--statement-days", type=int, help="days of the statement's month")
    args = parser.parse_args(argv)
    hours = args.hours or (8 if args.quick else 24 * 30)
    repeats = 2 if args.quick else 3
    days = args.statement_days or (10 if args.quick else 30)
    with Azurite() as azurite:
        figures = throughput(azurite, hours, args.tenants, args.scale, repeats)
        figures |= statement_ratio(azurite, days, 15 if args.quick else 40)
    finish(figures)
    return 0


def throughput(
    azurite: Azurite, hours: int, tenants: int, scale: float, repeats: int
) -> dict[str, Any]:
    values = local_values(
        azurite.connection_string,
        USAGE_TABLE_PREFIX="r" + uuid.uuid4().hex[:10],
        FLEET_TENANTS=str(tenants),
        FLEET_SCALE=str(scale),
        FLEET_SEED="1",
    )
    settings = Settings.from_environ(values)
    counted: Counter[str] = Counter()
    account = StorageAccount(settings, request_hook=lambda request: counted.update(["request"]))
    fleet = SimulatedFleet(FleetOptions(seed=1, tenants=tenants, scale=scale))
    collector = Collector(settings, account, fleet)
    collector.account.ensure_tables()
    load_example_prices(settings, subscriptions_first=True)
    # Built on the counting account: every storage request rating makes is counted.
    rater = Rater(account, settings.source_names())
    statements = Statements(account, catalogue())
    started = time.perf_counter()
    last = MONTH.last_hour
    for hour in range(hours - 1, -1, -1):
        collector.collect_hour(last - hour * HOUR)
        if hour == 1:  # every hour but the last rated: the last one is the counted step
            rater.rate_due(3600)
    collect_seconds = time.perf_counter() - started
    first = last - (hours - 1) * HOUR
    subscriptions = sorted({e.subscription_id for _, e in read_manifest(account, first, last)})
    in_last = {e.subscription_id for _, e in read_manifest(account, last, last)}
    counted.clear()
    rater.rate_due(3600)  # one more reported hour, as one rate_usage run
    step_requests = counted["request"]
    print(
        f"rating: {len(subscriptions)} subscriptions, {hours} reported hours of {MONTH} "
        f"collected in {collect_seconds:.0f}s"
    )
    known = SubscriptionStore(account).all()
    service = TableServiceClient.from_connection_string(azurite.connection_string)

    def raw_read() -> int:
        rows = 0
        for subscription_id in subscriptions:
            table = service.get_table_client(
                usage_table_name(settings.table_prefix, subscription_id)
            )
            rows += sum(
                1
                for _ in table.query_entities(
                    "PartitionKey ge @first and PartitionKey le @last",
                    parameters={
                        "first": hourly_partition(MONTH.first_hour),
                        "last": hourly_partition(last),
                    },
                )
            )
        return rows

    def rate() -> int:
        prices = rater.prices()
        return sum(rater.rerate_month(s, MONTH, last, prices) for s in subscriptions)

    rows = raw_read()
    rated_rows = rate()  # warm-up: connections, caches
    assert rated_rows == rows, (rated_rows, rows)
    read_times, rate_times = [], []
    for _ in range(repeats):
        read_times.append(timed(raw_read))
        rate_times.append(timed(rate))
    in_memory = in_memory_rows_per_s(account, statements, subscriptions, known, last)
    tracemalloc.start()
    rate()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    status = statements.status()

    def read_statements() -> int:
        read = 0
        for subscription_id in subscriptions:
            for level in Level:
                found = statements.statement(subscription_id, MONTH, level, known, status=status)
                read += found is not None
        return read

    statements_read = read_statements()
    statement_seconds = timed(read_statements)
    finaliser = Finaliser(account, rater)
    started = time.perf_counter()
    frozen = finaliser.finalise_due(3600).statements_frozen
    finalise_seconds = time.perf_counter() - started
    read_rows_per_s = rows / median(read_times)
    rated_rows_per_s = rows / median(rate_times)
    return {
        "subscriptions": len(subscriptions),
        "hours": hours,
        "rows": rows,
        "raw_read_rows_per_s": round(read_rows_per_s, 1),
        "rows_rated_per_s": round(rated_rows_per_s, 1),
        "ratio_to_read": round(rated_rows_per_s / read_rows_per_s, 3),
        "rate_in_memory_rows_per_s": round(in_memory, 1),
        "peak_mb_per_100k_rows": round(peak / 2**20 * 100_000 / max(rows, 1), 2),
        "subscriptions_in_last_hour": len(in_last),
        "requests_last_hour": step_requests,
        "requests_per_subscription_hour": round(step_requests / max(len(in_last), 1), 2),
        "statements": statements_read,
        "statements_per_s": round(statements_read / statement_seconds, 1),
        "finalise_statements_per_s": round(frozen / finalise_seconds, 1),
        "repeats": repeats,
    }


def in_memory_rows_per_s(
    account: StorageAccount,
    statements: Statements,
    subscriptions: list[str],
    known: dict[str, Any],
    last: datetime,
) -> float:
    """Rows per second through the rater's statement-line state alone (rows read first)."""
    book = statements.price_book()
    rows = {s: read_hourly_rows(account, s, MONTH.first_hour, last) for s in subscriptions}
    started = time.perf_counter()
    count = 0
    for subscription_id, items in rows.items():
        count += len(items)
        for level in Level:
            pricing = book.pricing(subscription_id, known, level)
            if pricing is not None:
                rate_in_memory(pricing, MONTH, (row for _, row in items))
    return count / max(time.perf_counter() - started, 1e-9)


def statement_ratio(azurite: Azurite, days: int, rounds: int) -> dict[str, Any]:
    """The statement route's time on day one, then with ``days`` days rated (see above)."""
    with tempfile.TemporaryDirectory() as scratch:
        issuer = LocalIssuer(Path(scratch) / "auth")
        values = local_values(
            azurite.connection_string,
            USAGE_TABLE_PREFIX="s" + uuid.uuid4().hex[:10],
            AUTH_JWKS_URI=str(issuer.jwks_path),
            FLEET_TENANTS="2",
            FLEET_SCALE="1.0",
            FLEET_SEED="3",
            **{f"AzureWebJobs.{name}.Disabled": "true" for name in TIMERS},
        )
        settings = Settings.from_environ(values)
        account = StorageAccount(settings)
        account.ensure_tables()
        fleet = SimulatedFleet(FleetOptions(seed=3, tenants=2, scale=1.0))
        store = SubscriptionStore(account)
        store.sync(fleet.subscriptions(MONTH.first_hour), store.all())
        load_example_prices(settings)
        hours = [MONTH.first_hour + n * HOUR for n in range(24 * days)]
        busiest = Counter(r.subscription_id.lower() for r in fleet.usage(hours[12]))
        subscription = busiest.most_common(1)[0][0]
        written = write_month(account, fleet, hours, subscription)
        app = FunctionApp(settings)
        app.rater.rate_due(3600, until=hours[23])
        day_one_rows = app.statements.statement(subscription, MONTH, Level.RETAIL, {})
        admin = issuer.mint(fleet.admin_object_id, roles=[settings.auth_admin_role])
        with functions_host(values, Path(scratch)) as base_url:
            link = f"{base_url}{STATEMENT_PATH.format(subscription)}?api-version=2015-06-01-preview"
            day_one = statement_times(link, admin, rounds)
            app.rater.rate_due(3600)
            month_end = statement_times(link, admin, rounds)
        month_rows = app.statements.statement(subscription, MONTH, Level.RETAIL, {})
    assert day_one_rows is not None
    assert month_rows is not None
    assert month_rows["rows"] == written, (month_rows["rows"], written)
    return {
        "statement_days": days,
        "day_one_statement_rows": day_one_rows["rows"],
        "month_end_statement_rows": month_rows["rows"],
        "day_one_statement_ms": round(median(day_one) * 1000, 1),
        "month_end_statement_ms": round(median(month_end) * 1000, 1),
        "statement_ms_ratio": round(median(month_end) / median(day_one), 3),
    }


TIMERS = ("collect_usage", "collect_slice", "report_to_azure", "rate_usage",
          "finalise_statements", "export_usage")  # fmt: skip


def write_month(
    account: StorageAccount, fleet: SimulatedFleet, hours: list[datetime], subscription: str
) -> int:
    """The subscription's rows of ``hours`` as the collector writes them (rows, manifest
    entries, watermark), without the collector's per-hour bookkeeping; rows written."""
    written = fill(account, fleet, hours, lambda s: s == subscription)
    for hour in hours:
        rows = read_hourly_rows(account, subscription, hour, hour)
        if rows:
            write_manifest(account, hour, [HourEntry(subscription, len(rows), 0)])
    Watermark(account, account.settings.source_name).start_at(hours[-1])
    return written


def statement_times(link: str, token: str, rounds: int) -> list[float]:
    """Seconds per statement request (after one warm-up request)."""
    headers = {"Authorization": f"Bearer {token}"}
    requests.get(link, headers=headers, timeout=60).raise_for_status()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = requests.get(link, headers=headers, timeout=60)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times
