"""The fan-out part of ``python -m bench collect``: several stamps, concurrent workers.

Four simulated stamps (each its own fleet and watermark, ``USAGE_STAMPS``), each reported
hour cut into ``SLICES`` slices, collected from the collection queue by ``WORKERS`` worker
threads through the app's own ``collect_slice_message`` (as queue-trigger instances would:
receive, collect, delete), against one Azurite. Beside it, in the same run:

- the same work items drained by ONE worker (what fan-out buys);
- the ceiling: the same entities written as bare transactions (as ``bench collect``'s
  ceiling), batches of 100 per partition, the same total parallelism (workers x
  ``STORAGE_WRITE_PARALLELISM``), no domain logic.

Each repeat re-collects the hour (its parts' durable markers are removed, the work items
sent again), so every timed write is an upsert over existing rows, like the ceiling's. After
the runs, every row of the hour is counted: each stamp's rows are stored exactly once.
"""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from azure.data.tables import TableServiceClient

from bench.collect import entities_at, raw_batches
from bench.common import median, timed
from devstack.clock import SettableClock
from devstack.fleet import fleet_from_settings, options_for_rows
from devstack.local_settings import local_values
from shared.app import FunctionApp
from shared.collection.slices import CollectionSlice
from shared.collection.sources import SourceRegistry
from shared.core.config import Settings
from shared.storage.hour_manifest import read_hour
from shared.storage.queues import ensure_queue, queue_client
from shared.storage.usage_rows import hourly_partition, usage_table_name
from shared.storage.watermark import DONE_PARTITION, ROLE

STAMPS = ("east", "west", "north", "south")
SLICES = 1
WORKERS = 4

Partition = tuple[str, list[dict[str, Any]]]  # (table name, entities of one partition)


def fanout_settings(connection_string: str, rows: int, parallelism: int) -> Settings:
    """Four stamps of about ``rows / 4`` rows per hour each, seeds of their own."""
    tenants = options_for_rows(max(rows // len(STAMPS), 1)).tenants
    values = {
        "USAGE_TABLE_PREFIX": "f" + uuid.uuid4().hex[:10],
        "COLLECT_QUEUE_NAME": "f" + uuid.uuid4().hex[:10],
        "USAGE_QUEUE_NAME": "g" + uuid.uuid4().hex[:10],
        "STORAGE_WRITE_PARALLELISM": str(parallelism),
        "USAGE_STAMPS": ",".join(STAMPS),
        "COLLECT_SLICES": str(SLICES),
        "COLLECT_LOOKBACK_HOURS": "1",
        "FLEET_TENANTS": str(tenants),
    }
    for n, stamp in enumerate(STAMPS):
        values[f"STAMP_{stamp.upper()}__FLEET_SEED"] = str(11 + n)
    return Settings.from_environ(local_values(connection_string, **values))


def stamp_partitions(settings: Settings, hour: datetime) -> list[Partition]:
    """Every stamp's entities of ``hour`` by table and partition (the ceiling's input)."""
    partitions: list[Partition] = []
    for stamp in settings.stamps():
        partitions += entities_at(fleet_from_settings(stamp), settings.table_prefix, hour)
    return partitions


def drain(app: FunctionApp, workers: int) -> int:
    """Workers receive, collect and delete until the collection queue is empty."""
    settings = app.settings
    collected = [0]
    lock = threading.Lock()

    def work() -> None:
        client = queue_client(settings, settings.collect_queue_name)
        while messages := list(client.receive_messages(max_messages=1, visibility_timeout=300)):
            for message in messages:
                app.collect_slice_message(base64.b64decode(message.content))
                client.delete_message(message)
                with lock:
                    collected[0] += 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return collected[0]


def send_hour(app: FunctionApp, hour: datetime) -> None:
    """Make ``hour`` due again: forget its parts were durable, send every slice."""
    settings = app.settings
    state = app.account.table(ROLE)
    for entity in list(
        state.query_entities("PartitionKey eq @pk", parameters={"pk": DONE_PARTITION})
    ):
        state.delete_entity(DONE_PARTITION, entity["RowKey"])
    client = queue_client(settings, settings.collect_queue_name)
    for stamp in STAMPS:
        for index in range(SLICES):
            client.send_message(CollectionSlice(stamp, hour, index, SLICES).to_message_text())


def stored_rows(app: FunctionApp, hour: datetime) -> tuple[int, int]:
    """(rows in the usage tables' partitions of ``hour``, rows the manifest says)."""
    entries = read_hour(app.account, hour)
    stored = 0
    for entry in entries:
        table = app.account.table_named(
            usage_table_name(app.settings.table_prefix, entry.subscription_id)
        )
        stored += sum(
            1
            for _ in table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": hourly_partition(hour)}, select=["RowKey"]
            )
        )
    return stored, sum(entry.rows for entry in entries)


def measure(
    connection_string: str, rows: int, hour: datetime, parallelism: int, repeats: int
) -> dict[str, Any]:
    """The fan-out figures (see the module docstring)."""
    settings = fanout_settings(connection_string, rows, parallelism)
    registry = SourceRegistry()
    registry.register("simulated", fleet_from_settings)
    app = FunctionApp(
        settings, sources=registry, clock=SettableClock(hour + timedelta(hours=1, minutes=10))
    )
    app.plan_collection()  # creates the tables and queues, sends the hour's slices
    ensure_queue(queue_client(settings, settings.usage_queue_name))
    drain(app, WORKERS)  # warm-up: tables created, rows exist
    partitions = stamp_partitions(settings, hour)
    expected = sum(len(entities) for _, entities in partitions)
    service = TableServiceClient.from_connection_string(connection_string)
    raw_batches(service, partitions, parallelism=WORKERS * parallelism)
    fanned, single, ceiling = [], [], []
    for _ in range(repeats):
        send_hour(app, hour)
        fanned.append(timed(lambda: drain(app, WORKERS)))
        send_hour(app, hour)
        single.append(timed(lambda: drain(app, 1)))
        ceiling.append(
            timed(lambda: raw_batches(service, partitions, parallelism=WORKERS * parallelism))
        )
    stored, manifest = stored_rows(app, hour)
    fanned_rate = expected / median(fanned)
    ceiling_rate = expected / median(ceiling)
    return {
        "fanout_stamps": len(STAMPS),
        "fanout_workers": WORKERS,
        "fanout_rows": expected,
        "fanout_rows_per_s": round(fanned_rate, 1),
        "fanout_single_worker_rows_per_s": round(expected / median(single), 1),
        "fanout_speedup": round(median(single) / median(fanned), 2),
        "fanout_ceiling_rows_per_s": round(ceiling_rate, 1),
        "fanout_ratio_to_ceiling": round(fanned_rate / ceiling_rate, 3),
        "fanout_exactly_once": stored == manifest == expected,
    }
