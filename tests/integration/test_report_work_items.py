"""Work items: enqueued by the collector before the watermark moves; the ops commands."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator
from ops.__main__ import main as ops_main
from shared.app import FunctionApp
from shared.billing.events import UsageEvent
from shared.billing.reporter import report_message
from shared.billing.work_items import WorkItem, work_item_enqueuer
from shared.collection.collector import Collector
from shared.core.errors import TransientError
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import HourEntry, read_manifest
from shared.storage.queues import POISON_SUFFIX, ensure_queue, queue_client
from shared.storage.watermark import Watermark
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_report_support import (
    HOUR,
    PLAN,
    T0,
    accepted_by_key,
    drain,
    fast_client,
)
from tests.scripted_source import TENANT_A, TENANT_B, ScriptedSource, vm_record


def source_for(hours: list[datetime]) -> ScriptedSource:
    return ScriptedSource(
        by_hour={h: [vm_record(TENANT_A, h), vm_record(TENANT_B, h, name="b")] for h in hours}
    )


def test_items_are_enqueued_before_the_watermark_moves(make_settings) -> None:
    """The callback runs with the watermark still behind; a failed enqueue keeps it there,
    and the redone hour's duplicate items bill nothing twice."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    enqueue = work_item_enqueuer(settings)
    seen: list[datetime | None] = []
    failures = [TransientError("the queue went away after the send")]

    def after_hour_written(hour: datetime, entries: list[HourEntry]) -> None:
        seen.append(Watermark(account, "scripted").read())
        enqueue(hour, entries)
        if failures:
            raise failures.pop()

    collector = Collector(
        settings, account, source_for([T0]), after_hour_written=after_hour_written
    )
    with pytest.raises(TransientError):
        collector.collect_hour(T0)
    assert Watermark(account, "scripted").read() is None
    collector.collect_hour(T0)  # the next run redoes the hour
    assert seen == [None, None]
    assert Watermark(account, "scripted").read() == T0
    bodies = drain(settings)
    assert len(bodies) == 2
    assert WorkItem.from_body(bodies[0]) == WorkItem(T0, ("registration-local",))
    clock = SettableClock(T0 + 2 * HOUR)
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        for body in bodies:
            report_message(body, settings, clock=clock, client=client)
        assert len(accepted_by_key(emulator)) == 1
        assert accepted_by_key(emulator)[("registration-local", *_windows_at(T0))]["quantity"] == 16


def _windows_at(hour: datetime) -> tuple[str, datetime]:
    return ("azs-9cd92d4c-bafd-4492-b278-bedc2de8232a", hour)


def test_timer_wiring_enqueues_every_billing_resource_of_every_hour(make_settings) -> None:
    """collect_due_hours (the timer's path) enqueues items covering each hour's resources."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=2, FLEET_TENANTS=3)
    now = T0 + timedelta(minutes=5)
    run = FunctionApp(settings).collect_due_hours(now)
    assert len(run.hours) == 2
    items = [WorkItem.from_body(body) for body in drain(settings)]
    manifest = read_manifest(StorageAccount(settings), T0 - 2 * HOUR, T0 - HOUR)
    expected = {(hour, "registration-local") for hour, _ in manifest}
    assert {(i.hour, r) for i in items for r in i.billing_resource_ids} == expected


def test_ops_reconcile_and_requeue_commands(
    make_settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """reconcile exits 1 listing a difference, 0 once in order; bad input is one line, exit 2;
    requeue-poison moves poison messages back unchanged."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    Collector(
        settings, account, source_for([T0]), after_hour_written=work_item_enqueuer(settings)
    ).collect_hour(T0)
    now = T0 + 2 * HOUR
    with CommerceEmulator(clock=lambda: now) as emulator, fast_client(emulator) as client:
        for name, value in {
            **LOCAL_VALUES,
            "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
            "USAGE_TABLE_PREFIX": settings.table_prefix,
            "USAGE_QUEUE_NAME": settings.usage_queue_name,
            "COMMERCE_BASE_URL": emulator.base_url,
        }.items():
            monkeypatch.setenv(name, value)
        window = ["--from", "2026-11-20T09", "--to", "2026112009"]
        assert ops_main(["reconcile", *window]) == 1
        assert "unreported" in capsys.readouterr().out

        (body,) = drain(settings)
        report_message(body, settings, clock=lambda: now, client=client)
        assert ops_main(["reconcile", *window]) == 0
        assert "in order" in capsys.readouterr().out

        client.post_batch([UsageEvent("stray", PLAN, "azs-x", 1.0, T0)])
        assert ops_main(["reconcile", *window]) == 1
        assert "unexpected-at-endpoint" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        ops_main(["reconcile", "--from", "2026-11-20T09:30", "--to", "2026-11-20T10"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert ops_main(["reconcile", "--from", "2026-11-20T10", "--to", "2026-11-20T09"]) == 2

    poison = queue_client(settings, settings.usage_queue_name + POISON_SUFFIX)
    ensure_queue(poison)
    poison.send_message(WorkItem(T0, ("a",)).to_message_text())
    assert ops_main(["requeue-poison"]) == 0
    assert "moved 1 message(s)" in capsys.readouterr().out
    assert [WorkItem.from_body(b) for b in drain(settings)] == [WorkItem(T0, ("a",))]
