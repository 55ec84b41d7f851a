"""Operators see the pipeline: real scenarios against Azurite and the commerce emulator, read
back through the OpenTelemetry SDK's in-memory reader, ``ops status`` and the status reader
(docs/operations.md). Each breach is caused for real and cleared for real."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator, Fault
from devstack.fleet import register_simulated_source
from devstack.host import LocalFunctionsHost
from ops.__main__ import main as ops_main
from shared.app import FunctionApp
from shared.billing.reconcile import Difference, Reconciliation
from shared.billing.reporter import report_message
from shared.collection.sources import SourceRegistry
from shared.core.config import Settings
from shared.core.errors import TransientError
from shared.core.hours import DAY, floor_day, hour_key, last_closed_hour, utc_now
from shared.core.telemetry import Telemetry
from shared.export.configs import ExportConfigs, make_config
from shared.rating.engine import Month
from shared.status.history import latest_reconciliation
from shared.status.objectives import Objective, State
from shared.status.observer import record_gauges, remember
from shared.status.view import History, document, screen
from shared.storage.account import StorageAccount
from shared.storage.queues import POISON_SUFFIX, queue_client
from shared.storage.usage_rows import usage_table_name
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_report_daily_sums import kill
from tests.integration.test_report_ledger import prepared
from tests.integration.test_report_poison import app_root
from tests.integration.test_report_support import (
    HOUR,
    T0,
    TOKEN,
    Killed,
    collect,
    drain,
    fast_client,
)
from tests.loopback import wait_for
from tests.scripted_source import TENANT_A, ScriptedSource, vm_record

MINUTES_10 = timedelta(minutes=10)


class InMemoryTelemetry:
    """A ``Telemetry`` over the SDK with an in-memory reader, and its last values by name."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry(MeterProvider(metric_readers=[self.reader]))

    def values(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], float]:
        """Every data point's value (a gauge's last, a counter's sum), by name and labels."""
        found: dict[tuple[str, frozenset[tuple[str, Any]]], float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:  # a histogram: its count
                            value = point.count
                        found[(metric.name, frozenset(point.attributes.items()))] = value
        return found

    def value(self, name: str, **labels: str) -> float | None:
        return self.values().get((name, frozenset(labels.items())))


class OutageSource(ScriptedSource):
    """The scripted source, which can be taken down: every read then fails."""

    down: bool = False

    def usage(self, reported_hour, within=None):  # type: ignore[no-untyped-def]
        if self.down:
            raise TransientError("the stamp's usage API is unreachable")
        return super().usage(reported_hour, within)


def _write_settings(settings: Settings, path: Path, **extra: str) -> Path:
    values = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
        "USAGE_TABLE_PREFIX": settings.table_prefix,
        "USAGE_QUEUE_NAME": settings.usage_queue_name,
        "COLLECT_QUEUE_NAME": settings.collect_queue_name,
        **extra,
    }
    path.write_text(json.dumps({"Values": values}))
    return path


@pytest.fixture
def metrics() -> InMemoryTelemetry:
    """A fresh in-memory meter per test (nothing process-wide)."""
    return InMemoryTelemetry()


def test_a_source_outage_breaches_freshness_and_recovery_clears_it(
    make_settings, metrics: InMemoryTelemetry
) -> None:
    """The stamp's usage API goes down for three hours: the lag gauge and the status report
    freshness breached (130 minutes behind); once the source answers again, one collection
    run catches up and the same reads report it met, lag 0."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS="2")
    source = OutageSource(by_hour={T0 + n * HOUR: [vm_record(TENANT_A, T0 + n * HOUR)]
                                   for n in range(6)})  # fmt: skip
    sources = SourceRegistry()
    sources.register("simulated", lambda _: source)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    app = FunctionApp(settings, sources=sources, clock=clock, telemetry=metrics.telemetry)

    app.collect_due_hours()  # through T0
    status = app.observe_pipeline(reconcile=False)
    assert status.observation(Objective.FRESHNESS).state is State.MET
    assert metrics.value("usage.collection.lag", stamp="simulated") == 0
    assert metrics.value("usage.collection.rows", stamp="simulated") >= 1

    source.down = True
    clock.set(T0 + 4 * HOUR + MINUTES_10)
    with pytest.raises(TransientError):
        app.collect_due_hours()
    status = app.observe_pipeline(reconcile=False)
    freshness = status.observation(Objective.FRESHNESS)
    assert freshness.state is State.BREACHED
    assert freshness.value == 130.0  # T0+1h became collectable at T0+2h
    assert Objective.FRESHNESS in status.breached
    assert metrics.value("usage.collection.lag", stamp="simulated") == 130.0
    assert metrics.value("usage.objective.breached", objective="freshness") == 1

    source.down = False
    app.collect_due_hours()  # the three missed hours
    status = app.observe_pipeline(reconcile=False)
    assert status.observation(Objective.FRESHNESS).state is State.MET
    assert status.stamps[0].watermark == T0 + 3 * HOUR
    assert metrics.value("usage.collection.lag", stamp="simulated") == 0
    assert metrics.value("usage.objective.breached", objective="freshness") == 0
    # The hour's bucket kept every observation: met, breached, met.
    day = History.read(app.account, clock()).last_24h[Objective.FRESHNESS]
    assert (day.met, day.breached, day.worst) == (2, 1, 130.0)


def test_the_days_reconciliation_waits_until_its_last_hour_is_billed(
    make_settings, metrics: InMemoryTelemetry
) -> None:
    """Ten minutes after midnight the day's last hour is collected and its work item not run
    yet: the timer's run leaves the day unreconciled and correctness is not breached. Once
    the item is billed, the next run reconciles the day with no difference, correctness met.
    (The old run reconciled at once: "unreported", correctness breached for the day.)"""
    midnight = floor_day(T0) + DAY
    last = midnight - HOUR
    settings = make_settings(COLLECT_LOOKBACK_HOURS="1")
    source = ScriptedSource(by_hour={last: [vm_record(TENANT_A, last)]}, name="simulated")
    sources = SourceRegistry()
    sources.register("simulated", lambda _: source)
    clock = SettableClock(midnight + MINUTES_10)
    with CommerceEmulator(clock=clock) as emulator:
        settings = settings.model_copy(update={"commerce_base_url": emulator.base_url})
        app = FunctionApp(settings, sources=sources, clock=clock, telemetry=metrics.telemetry)
        app.collect_due_hours()
        status = app.observe_pipeline()
        assert status.collected_through == last
        assert [hour.hour for hour in status.waiting] == [last]
        assert latest_reconciliation(app.account) is None
        assert status.observation(Objective.CORRECTNESS).state is not State.BREACHED

        for body in drain(settings):
            app.report_message(body)
        clock.set(midnight + 2 * MINUTES_10)
        status = app.observe_pipeline()
    record = latest_reconciliation(app.account)
    assert record is not None
    assert (record.first, record.last, record.differences) == (midnight - DAY, last, 0)
    assert record.keys > 0
    assert status.observation(Objective.CORRECTNESS).state is State.MET
    assert metrics.value("usage.reconciliation.differences", kind="total") == 0


def test_ops_status_is_healthy_until_a_planted_difference_turns_correctness_red(
    make_settings, tmp_path: Path, capsys
) -> None:
    """The last closed hour collected, billed and reconciled: ``ops status`` exits 0 with every
    stored-state objective met. A stored row changed afterwards (a difference planted in
    storage): ``ops reconcile`` exits 1 and records it, and ``ops status`` exits 1 with
    correctness breached, the difference named by kind in ``--json``."""
    hour = last_closed_hour(utc_now())
    settings = make_settings(COLLECT_LOOKBACK_HOURS="1")
    # Named as the settings' source, so its watermark is the one the status reads.
    source = ScriptedSource(by_hour={hour: [vm_record(TENANT_A, hour)]}, name="simulated")
    with CommerceEmulator() as emulator:
        settings_file = _write_settings(
            settings, tmp_path / "local.settings.json", COMMERCE_BASE_URL=emulator.base_url
        )
        settings = settings.model_copy(update={"commerce_base_url": emulator.base_url})
        collect(settings, source, [hour])
        for body in drain(settings):
            report_message(body, settings)
        span = ["--from", f"{hour:%Y-%m-%dT%H}", "--to", f"{hour:%Y-%m-%dT%H}"]
        assert ops_main(["reconcile", "--settings-file", str(settings_file), *span]) == 0
        capsys.readouterr()
        assert ops_main(["status", "--settings-file", str(settings_file), "--json"]) == 0
        states = {o["name"]: o["state"] for o in json.loads(capsys.readouterr().out)["objectives"]}
        assert states == {
            **dict.fromkeys(("freshness", "billing-latency", "correctness"), "met"),
            **dict.fromkeys(("coverage", "exports", "statements"), "met"),
            "api-availability": "unknown",  # Azure Monitor's, not stored state's
            "api-latency": "unknown",
        }

        account = StorageAccount(settings)
        table = account.table_named(usage_table_name(settings.table_prefix, TENANT_A))
        (row,) = list(
            table.query_entities("PartitionKey eq @pk", parameters={"pk": "H" + hour_key(hour)})
        )
        row["Quantity"] = float(row["Quantity"]) + 1.0
        table.upsert_entity(row)
        assert ops_main(["reconcile", "--settings-file", str(settings_file), *span]) == 1

    assert ops_main(["status", "--settings-file", str(settings_file)]) == 1
    assert ops_main(["status", "--settings-file", str(settings_file), "--json"]) == 1


def test_status_json_names_the_planted_difference(make_settings, tmp_path: Path, capsys) -> None:
    """``ops status --json`` prints the status route's document: correctness breached, the
    latest reconciliation's differences by kind, and a ``breached`` list scripts can read."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    hour = last_closed_hour(utc_now())
    result = Reconciliation(hour, hour, keys=3)
    result.differences.append(Difference("storage-differs", "saas-1", "dim", hour, "planted"))
    remember(account, result, utc_now())
    settings_file = _write_settings(settings, tmp_path / "local.settings.json")
    capsys.readouterr()
    assert ops_main(["status", "--settings-file", str(settings_file), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["breached"] == ["correctness"]
    assert doc["reconciliation"]["byKind"] == {"storage-differs": 1}
    (correctness,) = [o for o in doc["objectives"] if o["name"] == "correctness"]
    assert correctness["state"] == "breached"
    assert correctness["value"] == 1


def test_a_poisoned_billing_item_shows_in_the_poison_depth_until_requeued(
    make_settings, tmp_path: Path, metrics: InMemoryTelemetry
) -> None:
    """A work item the endpoint refuses every time ends in the poison queue after the host's
    maxDequeueCount deliveries: the status and the poison-depth gauge show 1 there; after
    ``ops requeue-poison`` (the credential fixed, the item billed) they show 0."""
    settings = make_settings()
    hour = last_closed_hour(utc_now())
    collect(settings, ScriptedSource(by_hour={hour: [vm_record(TENANT_A, hour)]}), [hour])
    root, _ = app_root(tmp_path)
    poison = queue_client(settings, settings.usage_queue_name + POISON_SUFFIX)
    app = FunctionApp(settings, telemetry=metrics.telemetry)
    with CommerceEmulator(token="rotated-elsewhere") as emulator:
        values = {
            **LOCAL_VALUES,
            "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
            "USAGE_TABLE_PREFIX": settings.table_prefix,
            "USAGE_QUEUE_NAME": settings.usage_queue_name,
            "COMMERCE_BASE_URL": emulator.base_url,
        }
        with LocalFunctionsHost(root, values, run_timers_at_start=False):

            def poisoned() -> bool:
                return app.status_reader.read().queues["billing"]["poison"] == 1

            wait_for(poisoned, "the item in the poison queue")
            app.observe_pipeline(reconcile=False)
            assert metrics.value("usage.queue.poison_depth", queue="billing") == 1
            assert metrics.value("usage.queue.poison_depth", queue="collection") == 0

            emulator.token = TOKEN
            settings_file = _write_settings(
                settings, tmp_path / "local.settings.json", COMMERCE_BASE_URL=emulator.base_url
            )
            assert ops_main(["requeue-poison", "--settings-file", str(settings_file)]) == 0
            wait_for(emulator.accepted_events, "the requeued item to be billed")
    assert not poison.peek_messages(max_messages=1)
    status = app.observe_pipeline(reconcile=False)
    assert status.queues["billing"]["poison"] == 0
    assert metrics.value("usage.queue.poison_depth", queue="billing") == 0


def test_an_answer_lost_that_the_sums_cannot_decide_shows_as_unresolved(
    make_settings, metrics: InMemoryTelemetry
) -> None:
    """Two events of one day with equal quantities, one accepted with its answer lost, the
    other never accepted: once their day can no longer change (its midnight + 47 h 15 min +
    the 24 h processing horizon) they are recorded unresolved; the status counts them and
    the gauge says so, and a day after they became unresolved correctness is breached."""
    hours = [T0, T0 + HOUR]
    settings, _account, source, _mapping = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock) as emulator,
        fast_client(emulator, max_attempts=2) as client,
    ):
        collect(settings, source, [T0])
        (first,) = drain(settings)
        with pytest.raises(Killed):  # accepted, answer lost
            report_message(first, settings, clock=clock, client=client, after_post=kill)
        clock.set(T0 + 2 * HOUR + MINUTES_10)
        collect(settings, source, [T0 + HOUR])
        (second,) = drain(settings)
        emulator.fail_next(Fault.SERVER_ERROR, times=2)  # posted, never accepted
        with pytest.raises(TransientError):
            report_message(second, settings, clock=clock, client=client)
        clock.set(T0 - 9 * HOUR + timedelta(hours=71, minutes=16))  # T0 is 09:00
        for body in (first, second):
            report_message(body, settings, clock=clock, client=client)

    app = FunctionApp(settings, clock=clock, telemetry=metrics.telemetry)
    status = app.status_reader.read()
    assert status.unresolved == 4
    assert status.unresolved_overdue == 0  # unresolved just now: the operator has a day
    record_gauges(status, metrics.telemetry)
    assert metrics.value("usage.billing.unresolved") == 4
    # A day later (the ledger stamps UpdatedAt with the wall clock): correctness is red.
    later = app.status_reader.read(utc_now() + timedelta(days=1, minutes=5))
    assert later.unresolved_overdue == 4
    assert later.observation(Objective.CORRECTNESS).state is State.BREACHED


register_simulated_source()  # ops reads USAGE_SOURCE=simulated as the local stack does


def test_statements_and_exports_objectives_follow_what_is_stored(
    make_settings, metrics: InMemoryTelemetry
) -> None:
    """October's last hour collected: an hour past October's deadline (2 days after it
    closed) with no final statements, statements are breached and overdue by 1 h and nothing
    is rated; once rated and finalised (the ledger frozen), met, rated through October's last
    hour and final through 2026-10 (in the status, its document and its screen). An export
    run an hour ago is fresh; 27 hours later it is stale."""
    october = Month(2026, 10)
    hour = october.last_hour
    settings = make_settings()
    source = ScriptedSource(by_hour={hour: [vm_record(TENANT_A, hour)]}, name="simulated")
    collect(settings, source, [hour])
    clock = SettableClock(october.next.first_hour + timedelta(days=2, hours=1))
    app = FunctionApp(settings, clock=clock, telemetry=metrics.telemetry)

    status = app.observe_pipeline(reconcile=False)
    statements = status.observation(Objective.STATEMENTS)
    assert (statements.state, statements.value) == (State.BREACHED, 1.0)
    assert status.statements_final_through is None
    assert status.rated_through is None
    assert metrics.value("usage.statements.overdue") == 1.0

    app.rate_usage()  # the rate_usage timer: the ledger of charges the finaliser freezes
    assert app.finalise_statements().months_closed == ["2026-10"]
    container = "st" + uuid.uuid4().hex[:10]
    ExportConfigs(app.account).put(make_config("status-focus", "admin", container=container))
    clock.set(clock() - HOUR)
    app.export()
    clock.set(clock() + HOUR)
    status = app.observe_pipeline(reconcile=False)
    assert status.observation(Objective.STATEMENTS).state is State.MET
    assert status.statements_final_through == october
    assert status.rated_through == hour
    shown = document(status, History.read(app.account, clock()))
    assert shown["statements"]["ratedThrough"] == "2026-10-31T23:00:00+00:00"
    assert "rated through 2026-10-31T23:00:00+00:00, final through 2026-10" in screen(shown)
    assert metrics.value("usage.statements.final_through") == 202610
    (export,) = status.exports
    assert (export.name, export.age_hours) == ("status-focus", 1.0)
    assert export.rows is not None
    assert status.observation(Objective.EXPORTS).state is State.MET
    assert metrics.value("usage.export.age", export="status-focus") == 1.0
    assert metrics.value("usage.export.rows", export="status-focus") >= 2 * export.rows

    clock.set(clock() + 26 * HOUR)
    status = app.observe_pipeline(reconcile=False)
    assert status.observation(Objective.EXPORTS).state is State.BREACHED
    assert metrics.value("usage.objective.breached", objective="exports") == 1


def test_a_subscription_whose_every_record_was_quarantined_breaches_coverage(
    make_settings,
) -> None:
    """The stamp reports usage for a subscription it does not list: its records are
    quarantined, the hour stores none of its rows, and coverage names that hour."""
    hour = last_closed_hour(utc_now())
    unlisted = "99999999-9999-4999-8999-999999999999"
    records = [vm_record(TENANT_A, hour), vm_record(unlisted, hour)]
    source = ScriptedSource(by_hour={hour: records}, name="simulated")
    settings = make_settings()
    collect(settings, source, [hour])
    status = FunctionApp(settings, telemetry=Telemetry()).status_reader.read()
    assert status.coverage_gaps == {hour: [unlisted]}
    coverage = status.observation(Objective.COVERAGE)
    assert (coverage.state, coverage.value) == (State.BREACHED, 1.0)
