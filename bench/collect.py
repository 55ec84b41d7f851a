"""Collection throughput and memory: ``python -m bench collect [--quick] [--rows N]``.

One reported hour of a simulated fleet sized to about N rows is collected into Azurite
through the real ``Collector.collect_hour`` (source, validation, keys, parallel
transactions, manifest, watermark). Beside it, in the same run and the same Azurite:

- the ceiling: the same entities written as bare transactions (``submit_transaction``, the
  app's own encoder, which is faster than the SDK's), batches of 100 per partition, the same
  parallelism, no domain logic;
- the naive way: a loop of one upsert per entity (a sample of 300).

Timings alternate pipeline and ceiling and report medians, so a noisy machine moves both.
Metrics: the same pipeline with the app's telemetry on (the OpenTelemetry SDK recording
what ``shared.app`` records after each hour, collected by a reader every run, where
production's exporter collects once a minute) and off, in adjacent pairs of alternating
order. Telemetry adds no request to storage or the endpoint, only this process's CPU, so
``telemetry_overhead`` is median CPU seconds of this process on / off (target <= 1.05);
``telemetry_overhead_wall`` is the same for wall time, which on a loaded machine carries
the noise of whole runs; ``null_ratio`` and ``null_ratio_wall`` pair the pipeline with
itself, metrics off on both sides, so they show that noise; ``telemetry_record_us`` times
the recording alone (the calls ``shared.app`` makes per hour, and a collection) and
``telemetry_record_share`` divides it by an hour's collection.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableServiceClient, UpdateMode
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bench.common import finish, median, paired_runs, peak_rss_mb, timed
from devstack.azurite import Azurite
from devstack.fleet import SimulatedFleet, options_for_rows
from devstack.local_settings import local_values
from shared.collection.collector import Collector
from shared.collection.validation import validate
from shared.core.config import Settings
from shared.core.meters import catalogue
from shared.core.telemetry import Telemetry
from shared.storage.account import StorageAccount
from shared.storage.transactions import submit_transaction
from shared.storage.usage_rows import (
    UsageRow,
    hourly_partition,
    hourly_row_key,
    usage_table_name,
)

HOUR = datetime(2026, 11, 2, 14, tzinfo=UTC)  # a Monday afternoon: VMs running
PARALLELISM = 8


def settings_for(connection_string: str) -> Settings:
    return Settings.from_environ(
        local_values(
            connection_string,
            USAGE_TABLE_PREFIX="b" + uuid.uuid4().hex[:10],
            STORAGE_WRITE_PARALLELISM=str(PARALLELISM),
        )
    )


def collect_once(connection_string: str, rows: int) -> tuple[int, float]:
    """Collect HOUR of a fleet of about ``rows`` rows into fresh tables: (rows, seconds)."""
    settings = settings_for(connection_string)
    fleet = SimulatedFleet(options_for_rows(rows))
    collector = Collector(settings, StorageAccount(settings), fleet)
    collector.account.ensure_tables()
    result = collector.collect_hour(HOUR)
    return result.rows, result.seconds


Partition = tuple[str, list[dict[str, Any]]]  # (table name, entities of one partition)


def entities_at(fleet: SimulatedFleet, table_prefix: str, hour: datetime) -> list[Partition]:
    """The hour's entities by table and partition, computed up front (the ceiling's input)."""
    known = {subscription.subscription_id.lower() for subscription in fleet.subscriptions(hour)}
    tables: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    partition = hourly_partition(hour)
    for record in fleet.usage(hour):
        row = validate(record, hour, catalogue(), known)
        assert isinstance(row, UsageRow)
        key = hourly_row_key(row.usage_start, row.meter_id.lower(), row.resource_uri)
        table = usage_table_name(table_prefix, row.subscription_id)
        tables[table][key] = row.to_entity(partition, key)
    return [(table, list(entities.values())) for table, entities in tables.items()]


def raw_batches(
    service: TableServiceClient, partitions: Sequence[Partition], parallelism: int = PARALLELISM
) -> None:
    """The ceiling: batches of 100 per partition, ``parallelism`` partitions at once."""

    def write(partition: Partition) -> None:
        table, entities = partition
        client = service.get_table_client(table)
        for start in range(0, len(entities), 100):
            batch = entities[start : start + 100]
            submit_transaction(client, [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    with ThreadPoolExecutor(parallelism) as pool:
        list(pool.map(write, partitions))


def raw_single_upserts(service: TableServiceClient, sample: list[tuple[str, Any]]) -> None:
    """The naive way: a loop of one upsert per entity."""
    for table, entity in sample:
        service.get_table_client(table).upsert_entity(entity, mode=UpdateMode.REPLACE)


def child_peak_rss(connection_string: str, rows: int) -> dict[str, float]:
    """Collect ``rows`` in a fresh process; its rows and peak RSS."""
    output = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [
            sys.executable,
            "-m",
            "bench",
            "collect",
            "--child",
            str(rows),
            "--conn",
            connection_string,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench collect")
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--rows", type=int, help="rows in the benchmarked hour")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--conn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows, seconds = collect_once(args.conn, args.child)
        print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
        return 0

    from bench.fanout import SLICES, STAMPS, WORKERS, measure  # it builds on this module

    target = args.rows or (2_000 if args.quick else 20_000)
    memory_rows = 1_000 if args.quick else 10_000
    repeats = 3 if args.quick else 5
    with Azurite() as azurite:
        conn = azurite.connection_string
        print(f"collect: one reported hour of ~{target:,} rows, parallelism {PARALLELISM}")
        settings = settings_for(conn)
        fleet = SimulatedFleet(options_for_rows(target))
        account = StorageAccount(settings)
        account.ensure_tables()
        collector = Collector(settings, account, fleet)
        partitions = entities_at(fleet, settings.table_prefix, HOUR)
        rows = sum(len(entities) for _, entities in partitions)
        service = TableServiceClient.from_connection_string(conn)

        # Warm-up: connections, the subscriptions' tables, caches. Every later write of the
        # pipeline, the ceiling and the naive loop is then an upsert over existing rows.
        collector.collect_hour(HOUR)
        raw_batches(service, partitions)
        reader = InMemoryMetricReader()
        telemetry = Telemetry(MeterProvider(metric_readers=[reader]))

        def with_metrics() -> None:
            result = collector.collect_hour(HOUR)
            stamp, quarantined = settings.source_name, result.quarantined_by_reason
            telemetry.hour_collected(stamp, result.rows, quarantined)
            reader.get_metrics_data()

        pipeline_times, ceiling_times = [], []
        for _ in range(repeats):
            pipeline_times.append(timed(lambda: collector.collect_hour(HOUR)))
            ceiling_times.append(timed(lambda: raw_batches(service, partitions)))

        def collect() -> None:
            collector.collect_hour(HOUR)

        paired = paired_runs(collect, with_metrics, pairs=4 * repeats)
        # The same pairing with metrics off on both sides: how far apart two identical
        # runs are on this machine now (the noise the ratio above is read against).
        null = paired_runs(collect, collect, pairs=4 * repeats)
        recorded = collector.collect_hour(HOUR)

        def record_only() -> None:
            for _ in range(1000):
                telemetry.hour_collected("bench", recorded.rows, recorded.quarantined_by_reason)
                reader.get_metrics_data()

        record_seconds = median([timed(record_only) for _ in range(3)]) / 1000
        sample = [(table, entity) for table, entities in partitions for entity in entities][:300]
        naive_times = [timed(lambda: raw_single_upserts(service, sample)) for _ in range(3)]

        rss_1x = child_peak_rss(conn, memory_rows)
        rss_10x = child_peak_rss(conn, memory_rows * 10)

        print(f"collect: fan-out, {len(STAMPS)} stamps x {SLICES} slices, {WORKERS} workers")
        fanout = measure(conn, target, HOUR, PARALLELISM, repeats)

    rows_per_s = rows / median(pipeline_times)
    ceiling = rows / median(ceiling_times)
    naive = len(sample) / median(naive_times)
    finish(
        {
            "rows": rows,
            "seconds": round(median(pipeline_times), 3),
            "rows_per_s": round(rows_per_s, 1),
            "ceiling_rows_per_s": round(ceiling, 1),
            "ratio_to_ceiling": round(rows_per_s / ceiling, 3),
            "naive_rows_per_s": round(naive, 1),
            "ratio_to_naive": round(rows_per_s / naive, 2),
            "metrics_off_rows_per_s": round(rows / median(paired.off_seconds), 1),
            "metrics_on_rows_per_s": round(rows / median(paired.on_seconds), 1),
            "telemetry_overhead": round(paired.cpu_ratio, 3),
            "telemetry_overhead_wall": round(paired.wall_ratio, 3),
            "null_ratio": round(null.cpu_ratio, 3),
            "null_ratio_wall": round(null.wall_ratio, 3),
            "telemetry_record_us": round(record_seconds * 1e6, 1),
            "telemetry_record_share": round(record_seconds / median(pipeline_times), 6),
            "rows_1x": int(rss_1x["rows"]),
            "peak_rss_mb": round(rss_1x["peak_rss_mb"], 1),
            "peak_rss_mb_10x": round(rss_10x["peak_rss_mb"], 1),
            "rows_10x": int(rss_10x["rows"]),
            "rss_growth": round(rss_10x["peak_rss_mb"] / rss_1x["peak_rss_mb"], 3),
            # What 10,000 more rows in one hour cost in peak memory (streaming: near 0).
            "mb_per_10k_rows": round(
                (rss_10x["peak_rss_mb"] - rss_1x["peak_rss_mb"])
                / ((rss_10x["rows"] - rss_1x["rows"]) / 10_000),
                2,
            ),
            **fanout,
            "repeats": repeats,
        }
    )
    return 0
