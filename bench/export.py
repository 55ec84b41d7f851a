"""Export throughput and memory: ``python -m bench export [--quick]``.

A month (November 2026; ``--quick``: its first 2 days) of a simulated fleet is collected
into Azurite by the real ``Collector`` and priced by the example sheets
(``devstack/prices/``). Then, in the same run and the same Azurite, alternating:

- the export: ``Exporter.run`` for the admin's Parquet export of the month (read every
  subscription's hourly rows, rate them, sum them into FOCUS rows, write Parquet by row
  groups, upload the parts and the manifest, remove the previous run);
- the raw read: the same rows straight from the table SDK (the same range queries),
  nothing else: the floor any export pays.

``ratio_to_read`` = export rows/s / raw read rows/s over the same stored rows (target
>= 0.6). Memory: a child process exports the month when half of it is collected and again
when all of it is; streaming by row groups keeps its peak RSS flat as the month grows
(``rss_growth`` near 1; ``rss_mb_per_100k_rows``: what the second half's rows added to the
peak, per 100k stored rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from bench.common import finish, median, peak_rss_mb, timed
from devstack.azurite import Azurite
from devstack.example_prices import load_example_prices
from devstack.fleet import fleet_from_settings
from devstack.local_settings import local_values
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.export.configs import make_config
from shared.export.exporter import Exporter
from shared.rating.engine import Month
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import hourly_partition, usage_table_name

MONTH = Month(2026, 11)
HOUR = timedelta(hours=1)


def settings_for(connection_string: str, prefix: str, quick: bool) -> Settings:
    return Settings.from_environ(
        local_values(
            connection_string,
            USAGE_TABLE_PREFIX=prefix,
            FLEET_TENANTS="3" if quick else "6",
            FLEET_SCALE="0.3" if quick else "0.5",
            FLEET_LATE_SHARE="0.1",
        )
    )


def collect(settings: Settings, first: datetime, last: datetime) -> None:
    account = StorageAccount(settings)
    collector = Collector(settings, account, fleet_from_settings(settings))
    hour = first
    while hour <= last:
        collector.collect_hour(hour)
        hour += HOUR


def raw_read(service: TableServiceClient, settings: Settings, last: datetime) -> int:
    """The month's hourly rows of every subscription, with the SDK and nothing else."""
    rows = 0
    for subscription_id in sorted(SubscriptionStore(StorageAccount(settings)).all()):
        table = service.get_table_client(usage_table_name(settings.table_prefix, subscription_id))
        entities = table.query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={
                "first": hourly_partition(MONTH.first_hour),
                "last": hourly_partition(last),
            },
        )
        with contextlib.suppress(ResourceNotFoundError):  # no usage table: nothing to read
            rows += sum(1 for _ in entities)
    return rows


def export_once(settings: Settings, container: str) -> dict[str, Any]:
    account = StorageAccount(settings)
    exporter = Exporter(account, BlobStore(settings))
    run = exporter.run(make_config("bench", "admin", container=container), MONTH)
    return {"rows": run.rows, "blobs": len(run.blobs)}


def child_peak_rss(connection_string: str, prefix: str, quick: bool) -> dict[str, float]:
    """Export the month in a fresh process; its FOCUS rows and peak RSS."""
    argv = [sys.executable, "-m", "bench", "export", "--child", prefix, "--conn", connection_string]
    output = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [*argv, *(["--quick"] if quick else [])], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export")
    parser.add_argument("--quick", action="store_true", help="2 days of a small fleet")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--conn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        settings = settings_for(args.conn, args.child, args.quick)
        figures = export_once(settings, "bench-memory")
        print(json.dumps({**figures, "peak_rss_mb": peak_rss_mb()}))
        return 0

    days = 2 if args.quick else 30
    repeats = 2 if args.quick else 3
    last = MONTH.first_hour + timedelta(days=days) - HOUR
    half = MONTH.first_hour + timedelta(days=days // 2) - HOUR
    with Azurite() as azurite:
        conn = azurite.connection_string
        prefix = "x" + uuid.uuid4().hex[:10]
        settings = settings_for(conn, prefix, args.quick)
        StorageAccount(settings).ensure_tables()
        print(f"export: collecting {days} days of the simulated fleet ...", flush=True)
        collect(settings, MONTH.first_hour, half)
        load_example_prices(settings)
        service = TableServiceClient.from_connection_string(conn)
        stored_half = raw_read(service, settings, half)
        rss_half = child_peak_rss(conn, prefix, args.quick)
        collect(settings, half + HOUR, last)
        rss_full = child_peak_rss(conn, prefix, args.quick)
        stored = raw_read(service, settings, last)
        export_once(settings, "bench")  # warm-up: connections, container
        export_times, read_times = [], []
        runs: dict[str, Any] = {}
        for _ in range(repeats):
            export_times.append(timed(lambda: runs.update(export_once(settings, "bench"))))
            read_times.append(timed(lambda: raw_read(service, settings, last)))

    export_rate = stored / median(export_times)
    read_rate = stored / median(read_times)
    finish(
        {
            "days": days,
            "stored_rows": stored,
            "focus_rows": int(runs["rows"]),
            "files": int(runs["blobs"]),
            "seconds": round(median(export_times), 3),
            "rows_per_s": round(export_rate, 1),
            "read_rows_per_s": round(read_rate, 1),
            "ratio_to_read": round(export_rate / read_rate, 3),
            "focus_rows_half": int(rss_half["rows"]),
            "peak_rss_mb_half": round(rss_half["peak_rss_mb"], 1),
            "focus_rows_full": int(rss_full["rows"]),
            "peak_rss_mb_full": round(rss_full["peak_rss_mb"], 1),
            "rss_growth": round(rss_full["peak_rss_mb"] / rss_half["peak_rss_mb"], 3),
            # What another 100k stored rows add to the peak (the second half of the month
            # over the first): near 0 when the export streams.
            "rss_mb_per_100k_rows": round(
                (rss_full["peak_rss_mb"] - rss_half["peak_rss_mb"])
                / max(stored - stored_half, 1)
                * 100_000,
                1,
            ),
            "repeats": repeats,
        }
    )
    return 0
