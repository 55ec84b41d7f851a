"""Billing throughput: ``python -m bench report [--quick] [--rows N]``.

One reported hour of a simulated fleet is collected into Azurite (not timed), with the
production wiring: the collector enqueues the hour's work items. Then the hour's billing
work is forwarded to the commerce emulator through the real ``Reporter`` (the hour's
summary read, ledger pending/settle transactions, batches of 25 filled across the item's
billing resources), the items processed 8 at a time as the Functions host would
(host.json batchSize), on long-lived threads, through one commerce client, storage account
and ledger pool, as the function app keeps them between invocations. Beside it, in the same
run, the naive way: the same pipeline posting one event per call (its ledger writes are
the same transactions); and the batched pipeline again on the SDK's tables transport
(``TABLES_TRANSPORT=sdk``, same tables), so ``sdk_ratio`` (direct events/s over the SDK
path's) shows what the direct transport gains, measured again in every run. Between
repeats the emulator forgets what it accepted and the ledger table is emptied, so every
repeat bills the whole hour again. Medians of alternating repeats are reported.

The endpoint is remote in production (marketplaceapi.microsoft.com), so the emulator runs
in a process of its own (``devstack.emulator_process``: its work never holds this process's
interpreter lock), and since loopback has no round trip, it adds ``--latency-ms``
(default 25 ms, a short Internet round trip) before every answer. Batching exists to save
those round trips; with 0 ms the figure measures only our own storage work, which both
sides share.

Metrics: the batched run with the app's telemetry on (the OpenTelemetry SDK recording what
``shared.app`` records after each item, collected by a reader every run) and off, in
adjacent pairs of alternating order; the endpoint's calls are the same either way, so
``telemetry_overhead`` is median CPU seconds of this process on / off (target <= 1.05),
``telemetry_overhead_wall`` the same for wall time; ``null_ratio`` and ``null_ratio_wall``
pair the batched run with itself (metrics off on both sides), the noise those ratios are
read against; ``telemetry_record_us`` times the recording alone per work item and
``telemetry_record_share`` divides the hour's recording by the hour's billing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableServiceClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bench.common import finish, map_to_shared_resources, median, paired_runs, timed
from devstack.azurite import Azurite
from devstack.emulator_process import EmulatorProcess
from devstack.fleet import SimulatedFleet, options_for_rows
from devstack.local_settings import local_values
from shared.billing.commerce import CommerceClient
from shared.billing.events import MAX_BATCH
from shared.billing.reporter import (
    COMMERCE_CONNECTIONS,
    LEDGER_PARALLELISM,
    Reporter,
    commerce_client,
)
from shared.billing.work_items import WorkItem, work_item_enqueuer
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.meters import catalogue
from shared.core.telemetry import Telemetry
from shared.storage.account import StorageAccount
from shared.storage.queues import ensure_queue, queue_client

HOUR = datetime(2026, 11, 2, 14, tzinfo=UTC)  # a Monday afternoon: VMs running
NOW = HOUR + timedelta(minutes=40)
WORKERS = 8  # host.json batchSize


def settings_for(connection_string: str, base_url: str) -> Settings:
    overrides = ";".join(f"{meter.meter_id}=true" for meter in catalogue())
    return Settings.from_environ(
        local_values(
            connection_string,
            USAGE_TABLE_PREFIX="r" + uuid.uuid4().hex[:10],
            USAGE_QUEUE_NAME="r" + uuid.uuid4().hex[:10],
            COMMERCE_BASE_URL=base_url,
            BILLING_CHARGEABLE_OVERRIDES=overrides,
            TABLES_TRANSPORT="direct",
        )
    )


def prepare(settings: Settings, fleet: SimulatedFleet) -> list[WorkItem]:
    """Map subscriptions to billing resources, collect the hour, return its work items."""
    account = StorageAccount(settings)
    map_to_shared_resources(account, fleet, HOUR, resource_digits=4)
    Collector(
        settings, account, fleet, after_hour_written=work_item_enqueuer(settings)
    ).collect_hour(HOUR)
    client = queue_client(settings, settings.usage_queue_name)
    ensure_queue(client)
    items = []
    while batch := list(client.receive_messages(messages_per_page=32, max_messages=32)):
        for message in batch:
            items.append(WorkItem.from_body(base64.b64decode(message.content)))
            client.delete_message(message)
    return items


@dataclass(frozen=True)
class Pools:
    """The function app's threads: the host's invocation threads, and billing's ledger pool."""

    items: Executor
    ledger: Executor


def forward(
    client: CommerceClient,
    account: StorageAccount,
    pools: Pools,
    items: list[WorkItem],
    max_batch: int,
    telemetry: Telemetry | None = None,
) -> int:
    """Report every item, WORKERS at a time, as the function app does: on its long-lived
    invocation threads, through its one commerce client, storage account and ledger pool
    (and, with ``telemetry``, recording each item's outcomes as ``shared.app`` does)."""

    def one(item: WorkItem) -> int:
        reporter = Reporter(
            account, client, pool=pools.ledger, clock=lambda: NOW, max_batch=max_batch
        )
        result = reporter.report(item)
        if telemetry is not None:
            telemetry.billing_reported(result.states)
        return result.posted

    return sum(pools.items.map(one, items))


def reset(emulator: EmulatorProcess, service: TableServiceClient, settings: Settings) -> None:
    """Forget what was billed: the emulator's events and every ledger entity."""
    emulator.reset()
    table = service.get_table_client(settings.table_name("ledger"))
    by_partition: dict[str, list[dict[str, str]]] = {}
    for entity in table.list_entities(select=["PartitionKey", "RowKey"]):
        by_partition.setdefault(entity["PartitionKey"], []).append(
            {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}
        )
    for entities in by_partition.values():
        for start in range(0, len(entities), 100):
            table.submit_transaction([("delete", e) for e in entities[start : start + 100]])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench report")
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--rows", type=int, help="usage rows in the benchmarked hour")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=25.0,
        help="round trip added to every emulator answer (default 25: a short Internet hop)",
    )
    args = parser.parse_args(argv)
    target = args.rows or (3_000 if args.quick else 12_000)
    repeats = 3 if args.quick else 5

    latency = args.latency_ms / 1000
    with contextlib.ExitStack() as stack:
        azurite = stack.enter_context(Azurite())
        emulator = stack.enter_context(EmulatorProcess(now=NOW, latency=latency))
        settings = settings_for(azurite.connection_string, emulator.base_url)
        print(
            f"report: one reported hour of ~{target:,} rows, {WORKERS} items at a time, "
            f"{args.latency_ms:g} ms endpoint round trip"
        )
        items = prepare(settings, SimulatedFleet(options_for_rows(target)))
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        account = StorageAccount(settings)
        sdk_account = StorageAccount(settings.model_copy(update={"tables_transport": "sdk"}))
        client = stack.enter_context(commerce_client(settings, pool_size=COMMERCE_CONNECTIONS))
        pools = Pools(
            items=stack.enter_context(ThreadPoolExecutor(WORKERS)),
            ledger=stack.enter_context(ThreadPoolExecutor(LEDGER_PARALLELISM)),
        )

        def run(max_batch: int, on: StorageAccount = account) -> Callable[[], int]:
            return lambda: forward(client, on, pools, items, max_batch)

        reader = InMemoryMetricReader()
        telemetry = Telemetry(MeterProvider(metric_readers=[reader]))

        def with_metrics() -> None:
            forward(client, account, pools, items, MAX_BATCH, telemetry)
            reader.get_metrics_data()

        run(MAX_BATCH)()  # warm-up: connections, tables, caches
        reset(emulator, service, settings)
        run(MAX_BATCH, sdk_account)()
        events = len(emulator.accepted_events())
        per_resource = Counter(e["resourceId"] for e in emulator.accepted_events())
        batched_times, naive_times, sdk_times, calls = [], [], [], 0
        for _ in range(repeats):
            reset(emulator, service, settings)
            batched_times.append(timed(run(MAX_BATCH)))
            calls = emulator.total_calls
            assert len(emulator.accepted_events()) == events
            reset(emulator, service, settings)
            naive_times.append(timed(run(1)))
            assert len(emulator.accepted_events()) == events
            reset(emulator, service, settings)
            sdk_times.append(timed(run(MAX_BATCH, sdk_account)))
            assert len(emulator.accepted_events()) == events
        paired = paired_runs(
            run(MAX_BATCH),
            with_metrics,
            pairs=6 * repeats,
            before_each=lambda: reset(emulator, service, settings),
        )
        assert len(emulator.accepted_events()) == events
        # The same pairing with metrics off on both sides: the noise the ratio is read against.
        null = paired_runs(
            run(MAX_BATCH),
            run(MAX_BATCH),
            pairs=6 * repeats,
            before_each=lambda: reset(emulator, service, settings),
        )
        states = Counter({"accepted": events // len(items)})

        def record_only() -> None:
            for _ in range(1000):
                telemetry.billing_reported(states)
                reader.get_metrics_data()

        record_seconds = median([timed(record_only) for _ in range(3)]) / 1000

    seconds = median(batched_times)
    naive_seconds = median(naive_times)
    sdk_seconds = median(sdk_times)
    finish(
        {
            "events": events,
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1),
            "naive_events_per_s": round(events / naive_seconds, 1),
            "ratio_to_naive": round(naive_seconds / seconds, 2),
            "metrics_off_events_per_s": round(events / median(paired.off_seconds), 1),
            "metrics_on_events_per_s": round(events / median(paired.on_seconds), 1),
            "telemetry_overhead": round(paired.cpu_ratio, 3),
            "telemetry_overhead_wall": round(paired.wall_ratio, 3),
            "null_ratio": round(null.cpu_ratio, 3),
            "null_ratio_wall": round(null.wall_ratio, 3),
            "telemetry_record_us": round(record_seconds * 1e6, 1),
            "telemetry_record_share": round(record_seconds * len(items) / seconds, 6),
            "sdk_events_per_s": round(events / sdk_seconds, 1),
            "sdk_ratio": round(sdk_seconds / seconds, 2),
            "calls": calls,
            "events_per_call": round(events / calls, 2),
            "work_items": len(items),
            "billing_resources": len(per_resource),
            "min_events_per_resource": min(per_resource.values()),
            "mean_events_per_resource": round(events / len(per_resource), 1),
            "endpoint_latency_ms": args.latency_ms,
            "repeats": repeats,
        }
    )
    return 0
