"""The observe_pipeline entry point, driven by a real azure.functions TimerRequest: the day
before reconciled and recorded, the objectives observed and kept, the outcome logged."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from azure.functions.timer import TimerRequest

import observe_pipeline
from devstack.commerce_emulator import CommerceEmulator
from shared.app import FunctionApp, LazyApp
from shared.core.config import Settings
from shared.core.hours import floor_day, utc_now
from shared.status.history import latest_reconciliation
from shared.status.objectives import Objective
from shared.status.view import History
from shared.storage.account import StorageAccount
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_report_support import drain


@pytest.fixture
def app_settings(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """App settings in the environment, as the Functions host provides them, the commerce
    emulator as the endpoint (the daily reconciliation reads its daily rows)."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=1, FLEET_TENANTS=2)
    assert settings.storage_connection_string is not None
    with CommerceEmulator() as emulator:
        environ = {
            **LOCAL_VALUES,
            "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
            "USAGE_TABLE_PREFIX": settings.table_prefix,
            "USAGE_QUEUE_NAME": settings.usage_queue_name,
            "COLLECT_QUEUE_NAME": settings.collect_queue_name,
            "COLLECT_LOOKBACK_HOURS": "1",
            "FLEET_TENANTS": "2",
            "COMMERCE_BASE_URL": emulator.base_url,
        }
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(observe_pipeline, "app", LazyApp())
        yield settings


def test_a_timer_run_reconciles_the_day_before_and_keeps_the_observation(
    app_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """After the last closed hour is collected and billed: the run reconciles yesterday
    (recorded as the latest reconciliation), observes every objective met or not
    measurable, keeps the observation in the hour's bucket and logs that nothing is
    breached. Billed first, so the answer is the same just after midnight, when the last
    closed hour is yesterday's."""
    caplog.set_level(logging.INFO)
    app = FunctionApp.from_environment()
    app.collect_due_hours()
    for body in drain(app_settings):
        app.report_message(body)
    observe_pipeline.main(TimerRequest(past_due=False))
    messages = [record.getMessage() for record in caplog.records]
    assert "observe_pipeline: every objective met or not yet measurable" in messages
    account = StorageAccount(app_settings)
    record = latest_reconciliation(account)
    assert record is not None
    assert record.first == floor_day(utc_now()) - timedelta(days=1)
    assert record.differences == 0
    day = History.read(account, utc_now()).last_24h
    assert (day[Objective.FRESHNESS].met, day[Objective.FRESHNESS].breached) == (1, 0)
    assert day[Objective.CORRECTNESS].met == 1
