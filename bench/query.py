"""Query latency, overhead and isolation: ``python -m bench query [--quick]``.

Fills an in-memory Azurite with a simulated fleet's hourly usage (full: 24 reported hours
of a fleet sized to ~8,500 rows per hour, over 200,000 rows across ~125 directory tenants;
``--quick``: 6 hours of ~3,500 rows). The fill writes the entities the collector would
write (same validation, keys and entity shape) with ``PartitionWriter`` batches of 100,
several partitions in flight, skipping the collector's manifest and daily rollup (hourly
queries do not read them); subscriptions and the watermark are written as the collector
writes them.

Measured through the real ``query_usage`` entry point behind the local Functions host (in
its own process, as the Functions worker is), over real HTTP, with a real bearer token
validated on every call:

- ``page_ms_p50``/``page_ms_p99``: the first 1,000-row page of the tenant with the most
  rows (tenant route, hourly, the whole filled window), token validation included;
- ``raw_page_ms_p50``: the same 1,000 entities read straight from the table SDK (same
  filter), in the same run, alternating with the pages; ``overhead_ratio`` = page / raw;
- ``isolation_ratio``: that tenant's page time after the other tenants' rows grew tenfold
  (the fill runs in two phases: the tenant and a tenth of the others first, then the rest),
  divided by the time before;
- ``provider_day_s``: the admin reading the whole filled window (a full day unless
  ``--quick``), hourly, all tenants (the default provider's and every delegated
  provider's direct tenants), all pages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from bench.common import finish, median
from devstack.azurite import REPO_ROOT, Azurite, free_port, wait_for_port
from devstack.fleet import SimulatedFleet, options_for_rows
from devstack.local_settings import local_values
from devstack.tokens import LocalIssuer
from shared.collection.validation import validate
from shared.core.config import Settings
from shared.core.meters import catalogue
from shared.query.reader import DETAILED_ROW_FIELDS
from shared.storage.account import StorageAccount
from shared.storage.activity import record_activity
from shared.storage.subscriptions import Subscription, SubscriptionState, SubscriptionStore
from shared.storage.table_writer import PartitionWriter
from shared.storage.usage_rows import (
    UsageRow,
    hourly_partition,
    hourly_row_key,
    usage_table_name,
)
from shared.storage.watermark import Watermark

FIRST_HOUR = datetime(2026, 11, 2, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
PARALLELISM = 8
IDLE_TENANTS = 5_000
TENANT_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/usageAggregates"
PROVIDER_PATH = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"


def fill(
    account: StorageAccount,
    fleet: SimulatedFleet,
    hours: list[datetime],
    keep: Callable[[str], bool],
) -> int:
    """Write the hourly rows of ``hours`` for subscriptions ``keep`` accepts, and their
    activity entries, as the collector would; rows written."""
    provider_of = {
        s.subscription_id.lower(): s.provider_subscription_id
        for s in fleet.subscriptions(hours[-1])
    }
    meters = catalogue()
    written = 0
    with PartitionWriter(account, parallelism=PARALLELISM) as writer:
        for hour in hours:
            known = {s.subscription_id.lower() for s in fleet.subscriptions(hour)}
            partition = hourly_partition(hour)
            tables: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
            for record in fleet.usage(hour):
                row = validate(record, hour, meters, known)
                if not isinstance(row, UsageRow) or not keep(row.subscription_id.lower()):
                    continue
                key = hourly_row_key(row.usage_start, row.meter_id.lower(), row.resource_uri)
                table = usage_table_name(account.settings.table_prefix, row.subscription_id)
                tables[table][key] = row.to_entity(partition, key)
            active: set[str] = set()
            for table, entities in tables.items():
                writer.write_partition(table, list(entities.values()))
                written += len(entities)
                active.add(next(iter(entities.values()))["SubscriptionId"].lower())
            record_activity(account, hour, ((sid, provider_of.get(sid)) for sid in active))
    return written


def idle_subscriptions(provider_id: str, count: int) -> list[Subscription]:
    """``count`` direct tenants of ``provider_id`` that never report usage."""
    return [
        Subscription(
            subscription_id=str(uuid.UUID(int=(n + 1) << 64 | 0xB00C)),
            display_name=f"idle {n}",
            tenant_id=str(uuid.UUID(int=0xB00C)),
            provider_subscription_id=provider_id,
            owners=(),
            state=SubscriptionState.ACTIVE,
        )
        for n in range(count)
    ]


def provider_page_ms(link: str, token: str, rounds: int) -> list[float]:
    """Milliseconds of ``rounds`` reads of one provider page (after one warm-up)."""
    get_page(link, token)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        get_page(link, token)
        timings.append(1000 * (time.perf_counter() - started))
    return timings


def rows_per_subscription(fleet: SimulatedFleet, hours: list[datetime]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for hour in hours:
        for record in fleet.usage(hour):
            counts[str(record.subscription_id).lower()] += 1
    return counts


def page_tenant(counts: Counter[str], by_id: dict[str, Subscription]) -> tuple[int, str]:
    """(rows, id) of the active, owned subscription with the most rows: its owner's first
    page is the benchmarks' normal 1,000-row page (RuntimeError if none fills one)."""
    tenant_rows, tenant = max(
        (count, sid)
        for sid, count in counts.items()
        if by_id.get(sid) is not None
        and by_id[sid].owners
        and by_id[sid].state is SubscriptionState.ACTIVE
    )
    if tenant_rows < 1000:
        raise RuntimeError(f"no tenant fills a page ({tenant_rows} rows at most)")
    return tenant_rows, tenant


def url(base: str, path: str, params: dict[str, str]) -> str:
    return base + path + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def get_page(link: str, token: str) -> dict[str, Any]:
    response = requests.get(link, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


@contextlib.contextmanager
def functions_host(values: dict[str, str], scratch: Path) -> Iterator[str]:
    """The local Functions host in its own process (as the Functions worker is): base URL."""
    settings_file = scratch / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    port = free_port()
    process = subprocess.Popen(  # noqa: S603  # fixed argv, no shell
        [
            sys.executable,
            "-m",
            "devstack.host",
            "--app-root",
            str(REPO_ROOT),
            "--settings-file",
            str(settings_file),
            "--port",
            str(port),
            "--no-startup-timers",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure_pages(
    link: str, token: str, raw: Callable[[], int], rounds: int
) -> tuple[list[float], list[float]]:
    """Alternate full pages through HTTP and raw 1,000-entity reads; seconds of each."""
    pages, raws = [], []
    get_page(link, token)  # warm: imports, JWKS file, client caches
    raw()
    for _ in range(rounds):
        started = time.perf_counter()
        body = get_page(link, token)
        pages.append(time.perf_counter() - started)
        if len(body["value"]) != 1000:
            raise RuntimeError(f"expected a full page, got {len(body['value'])} rows")
        started = time.perf_counter()
        count = raw()
        raws.append(time.perf_counter() - started)
        if count != 1000:
            raise RuntimeError(f"raw read returned {count} entities")
    return pages, raws


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench query")
    parser.add_argument("--quick", action="store_true", help="6 hours of ~3,500 rows")
    args = parser.parse_args(argv)
    # Quick: fewer, larger tenants (scale 3) so one tenant still fills a 1,000-row page.
    hours_count, per_hour, scale, rounds = (
        (6, 3_500, 3.0, 15) if args.quick else (24, 8_500, 1.0, 40)
    )
    hours = [FIRST_HOUR + n * HOUR for n in range(hours_count)]
    fleet = SimulatedFleet(options_for_rows(per_hour, scale=scale, at=FIRST_HOUR + 14 * HOUR))
    started = time.monotonic()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as scratch:
        issuer = LocalIssuer(Path(scratch) / "auth")
        values = local_values(
            azurite.connection_string,
            USAGE_TABLE_PREFIX="bq" + uuid.uuid4().hex[:8],
            AUTH_JWKS_URI=str(issuer.jwks_path),
            FLEET_TENANTS=str(fleet.options.tenants),
            FLEET_SCALE=str(scale),
            **{"AzureWebJobs.collect_usage.Disabled": "true"},
            **{"AzureWebJobs.collect_slice.Disabled": "true"},
            **{"AzureWebJobs.report_to_azure.Disabled": "true"},
        )
        settings = Settings.from_environ(values)
        account = StorageAccount(settings)
        account.ensure_tables()
        store = SubscriptionStore(account)
        listed = fleet.subscriptions(hours[-1])
        store.sync(listed, store.all())
        by_id = {s.subscription_id.lower(): s for s in listed}
        counts = rows_per_subscription(fleet, hours)
        tenant_rows, tenant = page_tenant(counts, by_id)
        others = sorted(sid for sid in counts if sid != tenant)
        first_share = set(others[: max(1, len(others) // 11)])
        print(
            f"fleet: {fleet.options.tenants} directory tenants, {len(counts)} subscriptions "
            f"with usage, {sum(counts.values()):,} hourly rows over {hours_count} hours"
            + (" (--quick: fewer rows than the full run's 200,000+)" if args.quick else "")
        )
        print(f"tenant measured: {tenant} with {tenant_rows:,} rows in the window")

        fill_started = time.monotonic()
        phase_a = fill(account, fleet, hours, lambda sid: sid == tenant or sid in first_share)
        for hour in hours:
            Watermark(account, "simulated").advance(hour)
        print(f"phase 1 fill: {phase_a:,} rows in {time.monotonic() - fill_started:.1f}s")

        token = issuer.mint(by_id[tenant].owners[0])
        admin = issuer.mint(fleet.admin_object_id, roles=[settings.auth_admin_role])
        params = {
            "api-version": "2015-06-01-preview",
            "reportedStartTime": hours[0].isoformat(),
            "reportedEndTime": (hours[-1] + HOUR).isoformat(),
            "aggregationGranularity": "Hourly",
        }
        table = account.table_named(usage_table_name(settings.table_prefix, tenant))

        def raw() -> int:
            # Exactly the fields the API selects for a detailed row: a fair reference.
            entities = table.query_entities(
                "PartitionKey ge @first and PartitionKey le @last",
                parameters={
                    "first": hourly_partition(hours[0]),
                    "last": hourly_partition(hours[-1]),
                },
                results_per_page=1000,
                select=DETAILED_ROW_FIELDS,
            ).by_page()
            return sum(1 for _ in next(iter(entities)))

        with functions_host(values, Path(scratch)) as base_url:
            link = url(base_url, TENANT_PATH.format(tenant), params)
            before, _ = measure_pages(link, token, raw, rounds)

            fill_started = time.monotonic()
            phase_b = fill(
                account, fleet, hours, lambda sid: sid != tenant and sid not in first_share
            )
            growth = (phase_a + phase_b - tenant_rows) / max(1, phase_a - tenant_rows)
            print(
                f"phase 2 fill: {phase_b:,} rows in {time.monotonic() - fill_started:.1f}s "
                f"(other tenants' rows x{growth:.1f})"
            )
            pages, raws = measure_pages(link, token, raw, rounds)

            # A provider's page, then the same page once 5,000 idle tenants join it.
            busiest = max(
                fleet.delegated_providers,
                key=lambda p: sum(
                    counts[s.subscription_id.lower()]
                    for s in listed
                    if s.provider_subscription_id == p.subscription_id
                ),
            )
            provider_link = url(base_url, PROVIDER_PATH.format(busiest.subscription_id), params)
            quiet = provider_page_ms(provider_link, admin, rounds)
            idle = idle_subscriptions(busiest.subscription_id, IDLE_TENANTS)
            store.sync(idle, store.all())
            crowded = provider_page_ms(provider_link, admin, rounds)

            day_started = time.perf_counter()
            provider_rows = 0
            for provider in (fleet.default_provider, *fleet.delegated_providers):
                next_link: str | None = url(
                    base_url, PROVIDER_PATH.format(provider.subscription_id), params
                )
                while next_link is not None:
                    body = get_page(next_link, admin)
                    provider_rows += len(body["value"])
                    next_link = body.get("nextLink")
            provider_day_s = time.perf_counter() - day_started

    page_ms = [1000 * value for value in pages]
    raw_ms = [1000 * value for value in raws]
    figures = {
        "mode": "quick" if args.quick else "full",
        "rows_total": phase_a + phase_b,
        "tenants": fleet.options.tenants,
        "hours": hours_count,
        "tenant_rows": tenant_rows,
        "page_rows": 1000,
        "page_ms_p50": median(page_ms),
        "page_ms_p99": p99(page_ms),
        "raw_page_ms_p50": median(raw_ms),
        "overhead_ratio": median(page_ms) / median(raw_ms),
        "provider_page_ms_p50": median(quiet),
        "provider_page_ms_p50_idle": median(crowded),
        "idle_tenants": IDLE_TENANTS,
        "idle_ratio": median(crowded) / median(quiet),
        "isolation_ratio": median(pages) / median(before),
        "page_ms_p50_before_growth": 1000 * median(before),
        "page_ms_stdev": statistics.pstdev(page_ms),
        "provider_day_rows": provider_rows,
        "provider_day_s": provider_day_s,
        "seconds_total": time.monotonic() - started,
    }
    finish(figures)
    return 0
