"""Rating and statements: ``python -m bench rating [--quick] [--hours N] [--tenants N]``.

The simulated fleet's last ``--hours`` reported hours of November 2026 (all of it without
``--quick``; 8 hours with it) are collected into Azurite by the real collector, with the
example price sheets loaded, so November is closed. Then, in the same run and the same
Azurite:

- ``raw_read``: every subscription's rows of the month read with the raw table SDK (the
  same range query, every entity materialised), no domain logic: the baseline;
- ``rate``: every subscription's statements computed as the finaliser computes them
  (read through ``read_hourly_rows``, rated at both levels, lines built), not stored;
- ``finalise``: the real ``finalise_due`` (rate + store every statement, close the month);
- ``rate_in_memory``: the rating alone, over rows already read.

``ratio_to_read`` = rows rated per second (read + rate) / rows read per second (raw): the
target is >= 0.5, i.e. rating costs at most as much as reading. Memory: the tracemalloc peak
of a second ``rate`` pass, per 100,000 rows. Timings are medians of alternating runs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableServiceClient

from bench.common import finish, median, timed
from devstack.azurite import Azurite
from devstack.example_prices import load_example_prices
from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.local_settings import local_values
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import HOUR
from shared.core.meters import catalogue
from shared.rating.engine import Level, Month
from shared.rating.statement_store import Statements
from shared.rating.statements import StatementBuilder
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_manifest
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import hourly_partition, read_hourly_rows, usage_table_name

MONTH = Month(2026, 11)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rating")
    parser.add_argument("--quick", action="store_true", help="8 hours, under a minute")
    parser.add_argument("--hours", type=int, help="reported hours at the end of the month")
    parser.add_argument(
        "--tenants",
        type=int,
        default=100,
        help="directory tenants (~1.1 subscriptions with usage each)",
    )
    parser.add_argument("--scale", type=float, default=0.1, help="resources per subscription")
    args = parser.parse_args(argv)
    hours = args.hours or (8 if args.quick else 24 * 30)
    repeats = 2 if args.quick else 3
    with Azurite() as azurite:
        values = local_values(
            azurite.connection_string,
            USAGE_TABLE_PREFIX="r" + uuid.uuid4().hex[:10],
            FLEET_TENANTS=str(args.tenants),
            FLEET_SCALE=str(args.scale),
            FLEET_SEED="1",
        )
        settings = Settings.from_environ(values)
        account = StorageAccount(settings)
        fleet = SimulatedFleet(FleetOptions(seed=1, tenants=args.tenants, scale=args.scale))
        collector = Collector(settings, account, fleet)
        collector.account.ensure_tables()
        started = time.perf_counter()
        last = MONTH.last_hour
        for hour in range(hours - 1, -1, -1):
            collector.collect_hour(last - hour * HOUR)
        collect_seconds = time.perf_counter() - started
        load_example_prices(settings)
        first = last - (hours - 1) * HOUR
        subscriptions = sorted({e.subscription_id for _, e in read_manifest(account, first, last)})
        print(
            f"rating: {len(subscriptions)} subscriptions, {hours} reported hours of {MONTH} "
            f"collected in {collect_seconds:.0f}s"
        )
        statements = Statements(account, catalogue(), [settings.source_name])
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

        def rate() -> tuple[int, int]:
            book = statements.price_book()
            built = rows = 0
            for subscription_id in subscriptions:
                documents = statements.compute(
                    subscription_id, MONTH, list(Level), known, book, last
                )
                built += len(documents)
                rows += documents[0]["rows"]
            return built, rows

        rows = raw_read()
        built, rated_rows = rate()  # warm-up: connections, caches
        assert rated_rows == rows, (rated_rows, rows)
        read_times, rate_times = [], []
        for _ in range(repeats):
            read_times.append(timed(raw_read))
            rate_times.append(timed(rate))

        in_memory = in_memory_rows_per_s(statements, account, subscriptions, known, last)
        tracemalloc.start()
        rate()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        finalise_seconds = timed(lambda: statements.finalise_due(3600))
        stored = len(statements.store.stored_keys(MONTH)) - 1  # less the closed marker

    read_rows_per_s = rows / median(read_times)
    rated_rows_per_s = rows / median(rate_times)
    figures: dict[str, Any] = {
        "subscriptions": len(subscriptions),
        "hours": hours,
        "rows": rows,
        "statements": built,
        "statements_stored": stored,
        "raw_read_rows_per_s": round(read_rows_per_s, 1),
        "rows_rated_per_s": round(rated_rows_per_s, 1),
        "ratio_to_read": round(rated_rows_per_s / read_rows_per_s, 3),
        "statements_per_s": round(built / median(rate_times), 1),
        "finalise_statements_per_s": round(stored / finalise_seconds, 1),
        "rate_in_memory_rows_per_s": round(in_memory, 1),
        "peak_mb_per_100k_rows": round(peak / 2**20 * 100_000 / max(rows, 1), 2),
        "repeats": repeats,
    }
    finish(figures)
    return 0


def in_memory_rows_per_s(
    statements: Statements,
    account: StorageAccount,
    subscriptions: list[str],
    known: dict[str, Any],
    last: datetime,
) -> float:
    """Rows per second through the rater and line building alone (rows read beforehand)."""
    book = statements.price_book()
    rows = {s: read_hourly_rows(account, s, MONTH.first_hour, last) for s in subscriptions}
    started = time.perf_counter()
    count = 0
    for subscription_id, items in rows.items():
        count += len(items)  # each row rated at every level that applies to it
        for level in Level:
            pricing = book.pricing(subscription_id, known, level)
            if pricing is None:
                continue
            builder = StatementBuilder(pricing, MONTH)
            for _, row in items:
                builder.add(row)
            builder.build(
                statements.meters,
                status="provisional",
                collected_through=last,
                at=datetime.now(UTC),
            )
    return count / max(time.perf_counter() - started, 1e-9)
