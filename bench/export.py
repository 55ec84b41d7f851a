"""Export throughput and memory: ``python -m bench export [--quick]``.

A month (November 2026; ``--quick``: its first 2 days) of a simulated fleet is collected
into Azurite by the real ``Collector``, priced by the example sheets (``devstack/prices/``)
and rated into the ledger by the real ``Rater`` (``Rater.rate_due``, what ``rate_usage``
runs), untimed: since the ledger of money an export never rates, it reads charge lines.
Then, in the same run and the same Azurite, alternating:

- the export: ``Exporter.run`` for the admin's Parquet export of the month (read the
  charges index, each indexed subscription's charge days of the month at its level, sum
  them into FOCUS rows, write Parquet by row groups, upload the parts and the manifest,
  remove the previous run);
- the ledger read: every query the export sent through the tables transport (recorded
  during the warm-up export: the month's adjustments, the charges index and one range of
  charge days per subscription at its level), sent again through the same transport with
  nothing else: the floor any export of the ledger pays. The export's few small reads
  outside the transport (the rating mark, the subscriptions, the sheets) are not in it.

``ratio_to_read`` = ledger read seconds / export seconds (the same entities read; 1 would
mean the export costs nothing beyond its reads). ``requests`` / ``read_requests`` are the
table requests of one export and of the ledger read (blob uploads are not table requests).
Memory: a child process exports the month when half of it is collected and rated, and
again when all of it is; streaming by row groups keeps its peak RSS flat as the month
grows (``rss_growth`` near 1; ``rss_mb_per_100k_rows``: what the second half's rows added
to the peak, per 100k stored usage rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

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
from shared.rating.rater import Rater
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.transport import Operation, TablesTransport

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


def rate(settings: Settings) -> int:
    """Rate every collected hour into the ledger, as ``rate_usage`` does; the rows rated."""
    return Rater(StorageAccount(settings), settings.source_names()).rate_due(3600).rows


@dataclass(frozen=True)
class Query:
    """One query an export sent through the tables transport."""

    table: str
    query_filter: str
    parameters: Mapping[str, Any] | None
    select: Sequence[str] | None
    plain: bool


class RecordingTransport(TablesTransport):
    """The account's transport, noting every query sent through it (the export's reads)."""

    name = "recording"

    def __init__(self, inner: TablesTransport) -> None:
        self.inner = inner
        self.queries: list[Query] = []

    def _commit(self, table: TableClient, operations: list[Operation]) -> list[dict[str, str]]:
        return self.inner.submit_transaction(table, operations)

    def query_entities(
        self,
        table: TableClient,
        query_filter: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        plain: bool = False,
    ) -> list[dict[str, Any]]:
        self.queries.append(Query(table.table_name, query_filter, parameters, select, plain))
        return self.inner.query_entities(
            table, query_filter, parameters=parameters, select=select, plain=plain
        )


def ledger_read(account: StorageAccount, queries: list[Query]) -> int:
    """The export's recorded queries, sent again through the transport and nothing else;
    the entities they return."""
    entities = 0
    for query in queries:
        with contextlib.suppress(ResourceNotFoundError):  # no table: nothing to read
            entities += len(
                account.transport.query_entities(
                    account.table_named(query.table),
                    query.query_filter,
                    parameters=query.parameters,
                    select=query.select,
                    plain=query.plain,
                )
            )
    return entities


def export_once(account: StorageAccount, blobs: BlobStore, container: str) -> dict[str, Any]:
    run = Exporter(account, blobs).run(make_config("bench", "admin", container=container), MONTH)
    return {"rows": run.rows, "blobs": len(run.blobs), "subscriptions": run.subscriptions}


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
        figures = export_once(StorageAccount(settings), BlobStore(settings), "bench-memory")
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
        print(f"export: collecting and rating {days} days of the simulated fleet ...", flush=True)
        collect(settings, MONTH.first_hour, half)
        load_example_prices(settings)
        stored_half = rate(settings)
        rss_half = child_peak_rss(conn, prefix, args.quick)
        collect(settings, half + HOUR, last)
        stored = stored_half + rate(settings)
        rss_full = child_peak_rss(conn, prefix, args.quick)

        requests: Counter[str] = Counter()
        account = StorageAccount(settings, request_hook=lambda _: requests.update(["table"]))
        recording = RecordingTransport(account.transport)
        account.transport = recording
        blobs = BlobStore(settings)
        export_once(account, blobs, "bench")  # warm-up: connections, container; its queries
        queries = recording.queries
        account.transport = recording.inner
        export_times, read_times = [], []
        runs: dict[str, Any] = {}
        for _ in range(repeats):
            requests.clear()
            export_times.append(timed(lambda: runs.update(export_once(account, blobs, "bench"))))
            export_requests = requests["table"]
            requests.clear()
            read_times.append(timed(lambda: runs.update(entities=ledger_read(account, queries))))
            read_requests = requests["table"]

    seconds, read_seconds = median(export_times), median(read_times)
    finish(
        {
            "days": days,
            "stored_rows": stored,
            "subscriptions": int(runs["subscriptions"]),
            "focus_rows": int(runs["rows"]),
            "files": int(runs["blobs"]),
            "ledger_queries": len(queries),
            "ledger_entities": int(runs["entities"]),
            "requests": export_requests,
            "read_requests": read_requests,
            "seconds": round(seconds, 3),
            "read_seconds": round(read_seconds, 3),
            "focus_rows_per_s": round(runs["rows"] / seconds, 1),
            "ratio_to_read": round(read_seconds / seconds, 3),
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
