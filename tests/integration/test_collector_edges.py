"""The collector at the edges that would otherwise stop it for good, against a real Azurite:
storage size limits, sources that do not group, reruns that see a changed answer, watermark
races, and stamps that publish an hour late.

Azurite enforces Azure Table storage's limits on a string property (32,768 UTF-16 code units,
64 KiB: ``PropertyValueTooLarge``) and on a transaction's body (4 MiB:
``413 RequestBodyTooLarge``), so those refusals here are the real ones. It does not enforce
the 1 MiB entity limit; the collector's rows cannot reach it (every property is capped).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import hour_key
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import read_hour
from shared.storage.usage_rows import usage_table_name
from shared.storage.watermark import Watermark
from tests.scripted_source import (
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


def collector(settings: Settings, source: ScriptedSource) -> Collector:
    return Collector(settings, StorageAccount(settings), source)


def hour_rows(account: StorageAccount, subscription: str, hour: datetime) -> list[dict]:
    """The stored hourly rows of one subscription and reported hour, as the SDK reads them."""
    table = account.table_named(usage_table_name(account.settings.table_prefix, subscription))
    return list(
        table.query_entities("PartitionKey eq @pk", parameters={"pk": f"H{hour_key(hour)}"})
    )


def non_empty(tables: dict[str, list]) -> dict[str, list]:
    return {name: rows for name, rows in tables.items() if rows}


# --- item 1: storage limits and ungrouped sources never stop collection ------------------


def test_a_row_with_200_kb_of_additional_info_is_stored_with_that_info_cut(make_settings) -> None:
    """A 200 KB additionalInfo key is dropped (reason recorded on the row); the usage is kept."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    bulky = replace(
        vm_record(TENANT_A, T0, name="bulky", quantity=5.0),
        additional_info={"ServiceType": "Standard_A4", "Blob": "x" * 200_000},
    )
    source = ScriptedSource({T0: [vm_record(TENANT_A, T0, name="vm0"), bulky]})
    run = collector(settings, source).collect_due_hours(T0 + HOUR)

    account = StorageAccount(settings)
    assert Watermark(account, source.name).read() == T0
    assert run.hours[0].quarantined == 0
    assert run.hours[0].truncated == 1
    stored = {row["ResourceUri"].rsplit("/", 1)[1]: row for row in hour_rows(account, TENANT_A, T0)}
    assert set(stored) == {"vm0", "bulky"}
    assert stored["bulky"]["Quantity"] == 5.0
    assert json.loads(stored["bulky"]["AdditionalInfo"]) == {"ServiceType": "Standard_A4"}
    assert "additionalInfo" in stored["bulky"]["InstanceDataTruncated"]
    assert "Blob" in stored["bulky"]["InstanceDataTruncated"]
    assert "InstanceDataTruncated" not in stored["vm0"]


def test_a_partition_of_101_rows_of_60_kb_is_written_in_batches_under_4_mib(
    make_settings,
) -> None:
    """101 rows of ~60 KB each (6 MB, over a transaction's 4 MiB) are all stored."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    records = [
        replace(
            vm_record(TENANT_A, T0, name=f"vm{index}"),
            tags={"note": "t" * 30_000},
            additional_info={"detail": "i" * 30_000},
        )
        for index in range(101)
    ]
    source = ScriptedSource({T0: records})
    run = collector(settings, source).collect_due_hours(T0 + HOUR)

    account = StorageAccount(settings)
    assert Watermark(account, source.name).read() == T0
    assert run.hours[0].rows == 101
    rows = hour_rows(account, TENANT_A, T0)
    assert len(rows) == 101
    assert all(len(row["Tags"]) > 30_000 and len(row["AdditionalInfo"]) > 30_000 for row in rows)


def test_a_subscription_in_two_groups_is_merged_into_one_partition(make_settings) -> None:
    """A source that yields A, B, A stores A's records summed per identity, idempotently."""
    ungrouped = ScriptedSource(
        {
            T0: [
                vm_record(TENANT_A, T0, name="vm1", quantity=1.0),
                vm_record(TENANT_A, T0, name="vm2", quantity=2.0),
                vm_record(TENANT_B, T0, name="vm1", quantity=4.0),
                vm_record(TENANT_A, T0, name="vm1", quantity=8.0),
                vm_record(TENANT_A, T0, name="vm3", quantity=16.0),
            ]
        }
    )
    grouped = ScriptedSource(
        {
            T0: [
                vm_record(TENANT_A, T0, name="vm1", quantity=9.0),
                vm_record(TENANT_A, T0, name="vm2", quantity=2.0),
                vm_record(TENANT_A, T0, name="vm3", quantity=16.0),
                vm_record(TENANT_B, T0, name="vm1", quantity=4.0),
            ]
        }
    )
    clean = make_settings(COLLECT_LOOKBACK_HOURS=1)
    collector(clean, grouped).collect_due_hours(T0 + HOUR)

    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    run = collector(settings, ungrouped).collect_due_hours(T0 + HOUR)
    account = StorageAccount(settings)
    assert Watermark(account, ungrouped.name).read() == T0
    assert run.hours[0].rows == 4
    assert snapshot(account, *USAGE_KINDS) == snapshot(StorageAccount(clean), *USAGE_KINDS)
    entries = {entry.subscription_id: entry for entry in read_hour(account, T0)}
    assert entries[TENANT_A].rows == 3

    collector(settings, ungrouped).collect_hour(T0)  # again: nothing changes
    assert snapshot(account, *USAGE_KINDS) == snapshot(StorageAccount(clean), *USAGE_KINDS)


def test_large_bad_records_that_differ_late_are_quarantined_separately(make_settings) -> None:
    """Quarantine keys hash the whole record, not the stored (cut) text: none is lost."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    bad = [
        replace(
            vm_record(TENANT_A, T0, name="vm1"),
            meter_id="not-a-meter",
            additional_info={"a": "x" * 20_000, "z": index},
        )
        for index in range(3)
    ]
    run = collector(settings, ScriptedSource({T0: bad})).collect_due_hours(T0 + HOUR)
    assert run.hours[0].quarantined_by_reason == {"UnknownMeter": 3}
    stored = list(StorageAccount(settings).table("quarantine").list_entities())
    assert len(stored) == 3


# --- item 3: a rerun leaves exactly the source's current answer ----------------------------


def test_a_rerun_after_the_source_shrank_leaves_exactly_its_current_answer(
    make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows, quarantine, manifest and daily rows of a failed attempt that the source no
    longer reports are gone after the rerun; the rerun equals a clean collection."""
    last = T0 + 23 * HOUR  # closes the day: its daily rows are built too
    before = [
        vm_record(TENANT_A, last, name="vm1", quantity=1.0),
        vm_record(TENANT_A, last, name="vm2"),
        vm_record(TENANT_A, last - 3 * HOUR, name="late"),
        replace(vm_record(TENANT_A, last, name="vm9"), meter_id="not-a-meter"),
        vm_record(TENANT_B, last, name="vm1"),
    ]
    after = [vm_record(TENANT_A, last, name="vm1", quantity=2.0)]
    now = last + HOUR + timedelta(minutes=5)

    clean = make_settings(COLLECT_LOOKBACK_HOURS=1)
    collector(clean, ScriptedSource({last: after})).collect_due_hours(now)

    settings = make_settings(COLLECT_LOOKBACK_HOURS=1)
    source = ScriptedSource({last: before})
    failing = collector(settings, source)

    def storage_down(self: Watermark, hour: datetime) -> None:
        raise ConnectionError("storage unreachable")

    # The attempt fails at its very last step: rows, daily rows and billing work are written.
    with monkeypatch.context() as patched:
        patched.setattr(Watermark, "advance", storage_down)
        with pytest.raises(ConnectionError):
            failing.collect_due_hours(now)
    account = StorageAccount(settings)
    assert Watermark(account, source.name).read() == last - HOUR
    assert len(usage_entities(account)) > 5  # hourly and daily rows of the first answer

    source.by_hour[last] = after
    run = collector(settings, source).collect_due_hours(now)
    assert run.hours[0].stale_removed == 3  # A's vm2 and late row, B's row
    assert Watermark(account, source.name).read() == last
    expected = non_empty(snapshot(StorageAccount(clean), *USAGE_KINDS))
    assert non_empty(snapshot(account, *USAGE_KINDS)) == expected  # B's table stays, empty

    collector(settings, source).collect_hour(last)  # a backfill of the finished hour
    assert non_empty(snapshot(account, *USAGE_KINDS)) == expected


# --- item 4: the watermark's answer is acted on --------------------------------------------


def test_hours_another_run_already_covered_are_not_collected_again(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A concurrent run moved the watermark past this run's next hours: they are skipped."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=4)
    source = ScriptedSource({T0 + n * HOUR: [vm_record(TENANT_A, T0 + n * HOUR)] for n in range(4)})
    run = collector(settings, source)
    account = StorageAccount(settings)

    def concurrent_run(hour: datetime, entries: list) -> None:
        if hour == T0:  # meanwhile another run finished T0..T0+2
            other = Watermark(account, source.name)
            for done in (T0, T0 + HOUR, T0 + 2 * HOUR):
                other.advance(done)

    run.after_hour_written = concurrent_run
    caplog.set_level(logging.WARNING)
    result = run.collect_due_hours(T0 + 4 * HOUR)
    assert [hour.hour for hour in result.hours] == [T0, T0 + 3 * HOUR]
    assert Watermark(account, source.name).read() == T0 + 3 * HOUR
    assert "another run already moved the watermark" in caplog.text


def test_a_watermark_moved_back_stops_the_run_instead_of_writing_uncounted_hours(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The watermark set back behind the hour just written: the run stops, says so, and the
    next run collects from the watermark."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=4)
    source = ScriptedSource({T0 + n * HOUR: [vm_record(TENANT_A, T0 + n * HOUR)] for n in range(4)})
    run = collector(settings, source)
    account = StorageAccount(settings)
    reset_to = T0 - 3 * HOUR

    def operator_reset(hour: datetime, entries: list) -> None:
        if hour == T0:
            account.table("state").upsert_entity(
                {"PartitionKey": "watermark", "RowKey": source.name, "LastHour": reset_to}
            )

    run.after_hour_written = operator_reset
    caplog.set_level(logging.ERROR)
    result = run.collect_due_hours(T0 + 4 * HOUR)
    assert [hour.hour for hour in result.hours] == [T0]
    assert result.stopped_by_watermark
    assert "watermark is at" in caplog.text
    assert Watermark(account, source.name).read() == reset_to

    again = collector(settings, source).collect_due_hours(T0 + 4 * HOUR)
    assert [hour.hour for hour in again.hours] == [reset_to + n * HOUR for n in range(1, 7)]


def test_racing_advances_agree_on_one_watermark(make_settings) -> None:
    """Eight threads moving one watermark hour by hour: it ends on the last hour, and each
    hour was moved exactly once (the others saw it covered, after a lost race or not)."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    Watermark(account, "race").start_at(T0 - HOUR)
    outcomes: list[str] = []
    lock = threading.Lock()

    def advance_all() -> None:
        mark = Watermark(account, "race")
        for n in range(6):
            outcome = mark.advance(T0 + n * HOUR)
            with lock:
                outcomes.append(f"{n}:{outcome}")

    threads = [threading.Thread(target=advance_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Watermark(account, "race").read() == T0 + 5 * HOUR
    assert sorted(o for o in outcomes if o.endswith("moved")) == [f"{n}:moved" for n in range(6)]


# --- item 2: an hour is collected once the source has finished it --------------------------


def test_hours_are_collected_only_after_the_publishing_delay(make_settings) -> None:
    """COLLECT_DELAY_HOURS=2: at 05:05 the newest hour collected is 02:00, not 04:00."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=3, COLLECT_DELAY_HOURS=2)
    source = ScriptedSource({T0 + n * HOUR: [vm_record(TENANT_A, T0 + n * HOUR)] for n in range(5)})
    run = collector(settings, source).collect_due_hours(T0 + 5 * HOUR + timedelta(minutes=5))
    assert [hour.hour for hour in run.hours] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert Watermark(StorageAccount(settings), source.name).read() == T0 + 2 * HOUR
