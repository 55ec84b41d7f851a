"""The collect_usage entry point, driven by a real azure.functions TimerRequest."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from azure.functions.timer import TimerRequest

import collect_usage
from shared.app import LazyApp
from shared.core.config import Settings
from shared.core.hours import last_closed_hour, utc_now
from shared.storage.account import StorageAccount
from shared.storage.watermark import Watermark
from tests.app_settings import LOCAL_VALUES
from tests.scripted_source import snapshot, usage_entities


@pytest.fixture
def app_settings(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """App settings in the environment, as the Functions host provides them."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=3, FLEET_TENANTS=3)
    environ = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
        "USAGE_TABLE_PREFIX": settings.table_prefix,
        "USAGE_SOURCE": "simulated",
        "COLLECT_LOOKBACK_HOURS": "3",
        "FLEET_TENANTS": "3",
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(collect_usage, "app", LazyApp())  # this test's settings
    return settings


def test_timer_run_collects_due_hours_and_logs_summary(
    app_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A past-due timer run collects the look-back hours and ends with the summary line."""
    caplog.set_level(logging.INFO)
    collect_usage.main(TimerRequest(past_due=True))
    account = StorageAccount(app_settings)
    assert Watermark(account, "simulated").read() == last_closed_hour(utc_now())
    assert usage_entities(account)
    summary = [r.getMessage() for r in caplog.records if "hours collected" in r.getMessage()]
    assert summary
    assert summary[-1].startswith("collect_usage: 3 hours collected")


def test_second_timer_run_in_the_same_hour_adds_nothing(app_settings: Settings) -> None:
    """Invariant 1 through the entry point: a rerun leaves every table as it was."""
    collect_usage.main(TimerRequest(past_due=False))
    account = StorageAccount(app_settings)
    before = snapshot(account, "usage", "hours")
    collect_usage.main(TimerRequest(past_due=False))
    assert snapshot(account, "usage", "hours") == before
