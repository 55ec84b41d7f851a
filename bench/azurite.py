"""What the local Azurite holds: ``python -m bench azurite [--quick] [--hours N]``.

Azurite with its data on disk (as the run command keeps it, Node's heap as the run command
sizes it) takes the usage rows of a 300-tenant fleet one reported hour (~20,000 entities)
at a time, as a catch-up writes them: the app's own transactions, 8 partitions at once.
After each hour: Azurite's resident and peak memory (``/proc``) and its saved table store.

Figures (``devstack/capacity.py`` sizes the run command with them):

- characters of the saved store per entity, and so the entities at V8's longest string
  (the string Azurite saves the whole table store as: past it, Node aborts);
- memory per 100,000 entities at rest (a least-squares slope over the hours) and at peak
  (the process's high-water mark), beside the empty Azurite's memory (the baseline);
- the seconds an hour took to write, first and last, and their ratio: the whole store is
  serialised every 5 seconds, so writes slow down as it grows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient, UpdateMode

from bench.collect import HOUR, PARALLELISM, Partition, entities_at
from bench.common import finish
from devstack.azurite import Azurite
from devstack.capacity import available_memory_mb, node_heap_mb, node_max_string_length
from devstack.fleet import FleetOptions, SimulatedFleet
from shared.core.retry import RetryPolicy, call_with_retry
from shared.storage.transport import tables_transport

TENANTS = 300
# A loaded Azurite answers slowly while it saves: retry as the app does, for longer.
PATIENT = RetryPolicy(max_attempts=20, max_total_seconds=600)


def write_hour(service: TableServiceClient, partitions: list[Partition], hour: datetime) -> None:
    """The hour's entities (one hour's rows, under this hour's partition key)."""
    key = f"H{hour:%Y%m%d%H}"
    transport = tables_transport("direct")  # the app's default, as bench collect's ceiling

    def write(partition: Partition) -> None:
        table, entities = partition
        client = service.get_table_client(table)
        for start in range(0, len(entities), 100):
            batch = [{**entity, "PartitionKey": key} for entity in entities[start : start + 100]]
            operations: list[Any] = [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch]
            call_with_retry(
                lambda ops=operations: transport.submit_transaction(client, ops),
                what=f"write {table}",
                policy=PATIENT,
            )

    with ThreadPoolExecutor(PARALLELISM) as pool:
        list(pool.map(write, partitions))


def saved_after(azurite: Azurite, moment: float, deadline_seconds: float = 600) -> int:
    """The table store's saved size once Azurite has saved it after ``moment``."""
    assert azurite.location is not None
    path = azurite.location / "__azurite_db_table__.json"
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime > moment:
            return azurite.table_store_chars()
        time.sleep(0.5)
    raise TimeoutError("Azurite did not save its table store")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench azurite")
    parser.add_argument("--quick", action="store_true", help="3 hours (~60,000 entities)")
    parser.add_argument("--hours", type=int, help="hours of the fleet to write (default 15)")
    args = parser.parse_args(argv)
    hours = args.hours or (3 if args.quick else 15)
    heap_mb = node_heap_mb(available_memory_mb())
    fleet = SimulatedFleet(FleetOptions(tenants=TENANTS))
    with (
        tempfile.TemporaryDirectory() as folder,
        Azurite(location=Path(folder) / "azurite", heap_mb=heap_mb) as azurite,
    ):
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        partitions = entities_at(fleet, "bench", HOUR)
        for table in {table for table, _ in partitions}:
            service.create_table(table)
        empty_mb, _ = azurite.memory_mb()
        empty_chars = saved_after(azurite, 0)
        per_hour = sum(len(entities) for _, entities in partitions)
        print(
            f"azurite: {hours} hours of {TENANTS} tenants, {per_hour:,} entities an hour, "
            f"Node heap {heap_mb:,} MB"
        )
        entities: list[int] = []
        resident: list[int] = []
        seconds: list[float] = []
        for n in range(hours):
            started = time.monotonic()
            write_hour(service, partitions, HOUR + timedelta(hours=n + 1))
            seconds.append(time.monotonic() - started)
            entities.append(per_hour * (n + 1))
            resident.append(azurite.memory_mb()[0])
            print(f"  {entities[-1]:>9,} entities  {resident[-1]:>6,} MB  {seconds[-1]:6.1f} s")
        written = time.time()
        chars = saved_after(azurite, written)
        _, peak_mb = azurite.memory_mb()
    total = entities[-1]
    chars_per_entity = (chars - empty_chars) / total
    max_string = node_max_string_length()
    slope = statistics.linear_regression(entities, resident).slope if hours > 1 else 0.0
    finish(
        {
            "entities": total,
            "store_chars": chars,
            "chars_per_entity": round(chars_per_entity, 1),
            "max_string_length": max_string,
            "entities_at_string_wall": int(max_string / chars_per_entity),
            "empty_rss_mb": empty_mb,
            "rss_mb": resident[-1],
            "peak_rss_mb": peak_mb,
            "rss_mb_per_100k": round(slope * 100_000, 1),
            "peak_mb_per_100k": round((peak_mb - empty_mb) / total * 100_000, 1),
            "first_hour_s": round(seconds[0], 1),
            "last_hour_s": round(seconds[-1], 1),
            "slowdown": round(seconds[-1] / seconds[0], 2),
            "heap_mb": heap_mb,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return 0
