"""The collector against a real Azurite: idempotency, catch-up, budget, faults, late usage."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from devstack.azurite import Azurite
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.errors import TransientError
from shared.core.hours import hour_key
from shared.core.usage import UsageRecord
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import usage_table_name
from shared.storage.watermark import Watermark
from tests.app_settings import LOCAL_VALUES
from tests.scripted_source import (
    STATIC_IP,
    TENANT_A,
    TENANT_B,
    ScriptedSource,
    snapshot,
    usage_entities,
    vm_record,
)

HOUR = timedelta(hours=1)
T0 = datetime(2026, 11, 20, 0, tzinfo=UTC)
USAGE_KINDS = ("usage", "hours", "quarantine")


def two_tenants_source(hours: int, *, vms: int = 150) -> ScriptedSource:
    """Two tenants, ``vms`` VMs each (so partitions span several batches), one late VM per hour."""
    source = ScriptedSource()
    for offset in range(hours):
        hour = T0 + offset * HOUR
        records = []
        for tenant in (TENANT_A, TENANT_B):
            records += [vm_record(tenant, hour, name=f"vm{index}") for index in range(vms)]
            if offset >= 2:  # usage of two hours ago, reported late, with its true window
                records.append(vm_record(tenant, hour - 2 * HOUR, name="late", quantity=3.0))
        source.by_hour[hour] = records
    return source


def collector(settings: Settings, source: ScriptedSource) -> Collector:
    return Collector(settings, StorageAccount(settings), source)


def test_collecting_an_hour_twice_leaves_identical_tables(make_settings) -> None:
    """Invariant 1: a second collection of the same hours changes no key and no value."""
    settings = make_settings()
    source = two_tenants_source(3)
    run = collector(settings, source)
    run.account.ensure_tables()
    for hour in source.by_hour:
        run.collect_hour(hour)
    first = snapshot(run.account, *USAGE_KINDS)
    for hour in source.by_hour:
        collector(settings, source).collect_hour(hour)
    assert snapshot(run.account, *USAGE_KINDS) == first
    assert len(usage_entities(run.account)) == 3 * 2 * 150 + 2


def test_watermark_thirty_hours_behind_is_caught_up_in_order(make_settings) -> None:
    """Invariant 2: a run collects every closed hour after the watermark, oldest first."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=30)
    source = two_tenants_source(30, vms=3)
    now = T0 + 30 * HOUR + timedelta(minutes=5)
    run = collector(settings, source).collect_due_hours(now)
    assert [result.hour for result in run.hours] == [T0 + n * HOUR for n in range(30)]
    assert run.pending_hours == 0
    assert Watermark(StorageAccount(settings), source.name).read() == T0 + 29 * HOUR
    # Nothing left: the next run in the same hour does nothing.
    assert collector(settings, source).collect_due_hours(now).hours == []


def test_time_budget_stops_between_hours_and_next_run_continues(make_settings) -> None:
    """A tiny budget collects one hour per run; successive runs continue in order."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=3, COLLECT_TIME_BUDGET_SECONDS=0.001)
    source = two_tenants_source(3, vms=2)
    now = T0 + 3 * HOUR
    collected = []
    for _ in range(3):
        run = collector(settings, source).collect_due_hours(now)
        assert len(run.hours) == 1
        collected.append(run.hours[0].hour)
    assert collected == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert run.pending_hours == 0


def test_source_failure_mid_hour_then_rerun_equals_clean_run(make_settings) -> None:
    """A run that dies after some batches keeps the watermark; the rerun equals a clean run."""
    source = two_tenants_source(1)

    def explode(index: int) -> None:
        if index == 250:  # after tenant A's partition (150 rows, two batches) was queued
            raise ConnectionError("provider went away")

    clean = make_settings(COLLECT_LOOKBACK_HOURS=1)
    collector(clean, source).collect_due_hours(T0 + HOUR)

    faulty = make_settings(COLLECT_LOOKBACK_HOURS=1)
    source.on_record = explode
    with pytest.raises(ConnectionError):
        collector(faulty, source).collect_due_hours(T0 + HOUR)
    account = StorageAccount(faulty)
    assert Watermark(account, source.name).read() == T0 - HOUR  # where the first run started
    assert usage_entities(account)  # partial writes happened

    source.on_record = None
    collector(faulty, source).collect_due_hours(T0 + HOUR)
    assert (snapshot(account, *USAGE_KINDS)) == (snapshot(StorageAccount(clean), *USAGE_KINDS))


def test_storage_killed_mid_hour_then_rerun_equals_clean_run(tmp_path, make_settings) -> None:
    """Azurite going down mid-hour fails the run without moving the watermark; rerun completes.

    Azurite is stopped, not SIGKILLed: its on-disk mode only persists on a timer, so a kill
    would lose writes it had acknowledged, which real storage never does.
    """
    source = two_tenants_source(2)
    clean = make_settings(COLLECT_LOOKBACK_HOURS=2)
    collector(clean, source).collect_due_hours(T0 + 2 * HOUR)

    with Azurite(location=tmp_path / "azurite") as own:
        settings = Settings.from_environ(
            {
                **LOCAL_VALUES,
                "AzureWebJobsStorage": own.connection_string,
                "USAGE_TABLE_PREFIX": "killed",
                "COLLECT_LOOKBACK_HOURS": "2",
            }
        )

        def kill(index: int) -> None:
            if index == 200:
                own.stop()

        source.on_record = None
        run = collector(settings, source)
        run.account.ensure_tables()
        run.collect_hour(T0)
        source.on_record = kill
        with pytest.raises(TransientError):
            collector(settings, source).collect_due_hours(T0 + 2 * HOUR)
        own.start()
        account = StorageAccount(settings)
        assert Watermark(account, source.name).read() == T0
        source.on_record = None
        collector(settings, source).collect_due_hours(T0 + 2 * HOUR)
        assert (snapshot(account, *USAGE_KINDS)) == (snapshot(StorageAccount(clean), *USAGE_KINDS))


def test_late_usage_lands_in_later_hour_with_its_true_window(make_settings) -> None:
    """Invariant 3: late rows sit in the reported hour they arrived in, with the old window."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=3)
    source = two_tenants_source(3, vms=1)
    collector(settings, source).collect_due_hours(T0 + 3 * HOUR)
    account = StorageAccount(settings)
    table = account.table_named(usage_table_name(settings.table_prefix, TENANT_A))
    rows = list(
        table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": f"H{hour_key(T0 + 2 * HOUR)}"}
        )
    )
    windows = sorted((row["UsageStartTime"], row["UsageEndTime"], row["Quantity"]) for row in rows)
    assert windows == [(T0, T0 + HOUR, 3.0), (T0 + 2 * HOUR, T0 + 3 * HOUR, 8.0)]


def test_closed_reported_hours_do_not_change(make_settings) -> None:
    """Collecting later hours (with late usage for earlier ones) never rewrites closed hours."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=2)
    source = two_tenants_source(6, vms=2)
    collector(settings, source).collect_due_hours(T0 + 2 * HOUR)
    account = StorageAccount(settings)
    before = snapshot(account, "usage")
    collector(settings, source).collect_due_hours(T0 + 6 * HOUR)
    after = snapshot(account, "usage")
    closed = f"H{hour_key(T0 + 2 * HOUR)}"
    early = {table: [e for e in rows if e[0] < closed] for table, rows in after.items()}
    assert early == before
    assert sum(map(len, after.values())) > sum(map(len, before.values()))


def test_daily_rows_equal_the_sum_of_hourly_rows(make_settings) -> None:
    """When a reported day closes, its daily rows are the sums of its hourly rows."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=26)
    source = two_tenants_source(26, vms=2)
    start = T0 - 2 * HOUR  # the first two hours belong to the previous reported day
    source.by_hour = {hour - 2 * HOUR: records for hour, records in source.by_hour.items()}
    collector(settings, source).collect_due_hours(start + 26 * HOUR)
    account = StorageAccount(settings)

    rows = usage_entities(account)
    expected: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for entity in rows:
        if entity["PartitionKey"].startswith("H"):
            reported_day = entity["PartitionKey"][1:9]
            usage_day = entity["UsageStartTime"].strftime("%Y%m%d")
            key = (entity["SubscriptionId"], reported_day, usage_day, entity["ResourceUri"])
            expected[key] += entity["Quantity"]
    # Reported days 2026-11-19 (hours 22, 23) and 2026-11-20 closed; 11-21 is still open.
    expected = {key: value for key, value in expected.items() if key[1] <= "20261120"}

    daily_rows = [entity for entity in rows if entity["PartitionKey"].startswith("D")]
    daily = {
        (
            entity["SubscriptionId"],
            entity["PartitionKey"][1:],
            entity["RowKey"][:8],
            entity["ResourceUri"],
        ): entity["Quantity"]
        for entity in daily_rows
    }
    assert daily.keys() == expected.keys()
    for key, quantity in expected.items():
        assert math.isclose(daily[key], quantity, rel_tol=1e-12)
    for entity in daily_rows:
        assert entity["UsageEndTime"] - entity["UsageStartTime"] == timedelta(days=1)


def test_every_kind_of_bad_record_is_quarantined_and_nothing_else_changes(make_settings) -> None:
    """Bad records go to the quarantine with their reason; the good rows are as without them."""
    good = two_tenants_source(1, vms=3)
    clean = make_settings(COLLECT_LOOKBACK_HOURS=1)
    collector(clean, good).collect_due_hours(T0 + HOUR)

    uri = f"/subscriptions/{TENANT_A}/resourceGroups/rg/providers/Microsoft.Network/x/ip"
    base = UsageRecord(TENANT_A, STATIC_IP, T0, T0 + HOUR, 1.0, uri, "local")
    cases = {
        "InvalidQuantity": [_with(base, quantity=-1.0), _with(base, quantity=float("nan"))],
        "UnknownMeter": [_with(base, meter_id="not-a-meter")],
        "UnknownSubscription": [
            _with(base, subscription_id="99999999-9999-9999-9999-999999999999")
        ],
        "MalformedSubscriptionId": [_with(base, subscription_id="../../etc")],
        "MalformedResourceUri": [
            _with(base, resource_uri="vm1"),
            _with(base, resource_uri=f"/subscriptions/{TENANT_B}/providers/x/y"),
        ],
        "UsageWindowNotOnHour": [
            _with(base, usage_start=T0 + timedelta(minutes=5), usage_end=T0 + HOUR),
            _with(base, usage_end=T0 + 2 * HOUR),
        ],
        "UsageInFuture": [_with(base, usage_start=T0 + 5 * HOUR, usage_end=T0 + 6 * HOUR)],
        "InvalidInstanceData": [_with(base, tags="not a dict")],  # type: ignore[arg-type]
        "MalformedRecord": [_with(base, quantity="lots")],  # type: ignore[arg-type]
    }
    noisy = two_tenants_source(1, vms=3)
    records = noisy.by_hour[T0]
    # Sources group records by subscription: tenant A's bad records go inside A's group,
    # records of other (unknown or malformed) subscriptions form groups of their own.
    own, foreign = [], []
    for batch in cases.values():
        for record in batch:
            (own if record.subscription_id == TENANT_A else foreign).append(record)
    records[1:1] = own
    records.extend(foreign)
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    run = collector(settings, noisy).collect_due_hours(T0 + HOUR)

    expected_counts = {reason: len(batch) for reason, batch in cases.items()}
    assert run.hours[0].quarantined_by_reason == expected_counts
    account = StorageAccount(settings)
    stored = defaultdict(int)
    for entity in account.table("quarantine").list_entities():
        stored[entity["Reason"]] += 1
        assert entity["Record"]
    assert stored == expected_counts
    assert snapshot(account, "usage") == snapshot(StorageAccount(clean), "usage")


def test_subscriptions_are_synced_and_operator_billing_mapping_is_kept(make_settings) -> None:
    """The collector writes source fields and never overwrites an operator's billing mapping."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    source = two_tenants_source(2, vms=1)
    collector(settings, source).collect_due_hours(T0 + HOUR)
    account = StorageAccount(settings)
    table = account.table("subscriptions")
    table.update_entity(
        {"PartitionKey": "subscription", "RowKey": TENANT_A, "BillingResourceId": "res-A"}
    )
    source.listed[1] = replace(source.listed[1], display_name="renamed")
    collector(settings, source).collect_due_hours(T0 + 2 * HOUR)
    stored = SubscriptionStore(account).all()
    assert stored[TENANT_A].display_name == "renamed"
    assert stored[TENANT_A].billing_resource_id == "res-A"
    assert set(stored) == {sub.subscription_id for sub in source.listed}


def _with(record: UsageRecord, **changes: object) -> UsageRecord:
    return replace(record, **changes)  # type: ignore[arg-type]


def test_recollecting_a_later_hour_never_jumps_the_watermark(make_settings) -> None:
    """A backfill of hour W+3 leaves the watermark at W: hours W+1, W+2 are still missing."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    source = two_tenants_source(5, vms=1)
    collector(settings, source).collect_due_hours(T0 + HOUR)
    account = StorageAccount(settings)
    assert Watermark(account, source.name).read() == T0
    collector(settings, source).collect_hour(T0 + 3 * HOUR)
    assert Watermark(account, source.name).read() == T0
    run = collector(settings, source).collect_due_hours(T0 + 5 * HOUR)
    assert [result.hour for result in run.hours] == [T0 + n * HOUR for n in range(1, 5)]
    assert Watermark(account, source.name).read() == T0 + 4 * HOUR


def test_a_failed_first_run_does_not_lose_its_first_hour(make_settings) -> None:
    """The first run's starting point is stored before it collects: a rerun an hour later
    still starts at the hour that failed, not an hour after it."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=2)
    source = two_tenants_source(3, vms=1)

    def explode(index: int) -> None:
        raise ConnectionError("provider went away")

    source.on_record = explode
    with pytest.raises(ConnectionError):
        collector(settings, source).collect_due_hours(T0 + 2 * HOUR)
    source.on_record = None
    run = collector(settings, source).collect_due_hours(T0 + 3 * HOUR)
    assert [result.hour for result in run.hours] == [T0, T0 + HOUR, T0 + 2 * HOUR]
