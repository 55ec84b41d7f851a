"""The rate_usage and export_usage entry points, driven by real azure.functions
TimerRequests: the hours collected are rated into the ledger, and exported from it."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable

import pyarrow.parquet as pq
import pytest
from azure.functions.timer import TimerRequest

import export_usage
import rate_usage
from shared.app import FunctionApp, LazyApp
from shared.core.config import Settings
from shared.core.hours import last_closed_hour, utc_now
from shared.export.configs import ExportConfigs, make_config
from shared.export.exporter import period_folder
from shared.rating.engine import Month
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from tests.app_settings import LOCAL_VALUES


@pytest.fixture
def app_settings(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """App settings in the environment, as the Functions host provides them."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=2, FLEET_TENANTS=2)
    assert settings.storage_connection_string is not None
    environ = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
        "USAGE_TABLE_PREFIX": settings.table_prefix,
        "COLLECT_LOOKBACK_HOURS": "2",
        "FLEET_TENANTS": "2",
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(export_usage, "app", LazyApp())
    monkeypatch.setattr(rate_usage, "app", LazyApp())
    return settings


def test_timer_run_exports_every_configuration_and_logs_where(
    app_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """After a collection, rate_usage's timer rates the hours into the ledger and
    export_usage's writes the month to date from it (no sheet: costs 0, NotPriced)."""
    caplog.set_level(logging.INFO)
    FunctionApp.from_environment().collect_due_hours()  # what collect_slice would store
    rate_usage.main(TimerRequest(past_due=False))
    rated = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rate_usage:")]
    through = f"{last_closed_hour(utc_now()):%Y-%m-%dT%H}Z"
    assert any(f"rated through {through}" in line for line in rated), rated
    account = StorageAccount(app_settings)
    container = "fn" + uuid.uuid4().hex[:10]
    ExportConfigs(account).put(make_config("timer-focus", "admin", container=container))
    export_usage.main(TimerRequest(past_due=True))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("export ")]
    collected = Month.of(last_closed_hour(utc_now()))  # the month of the hours collected
    month = str(collected)
    current = [line for line in lines if f"timer-focus {month}:" in line]
    assert current, lines
    assert " 0 rows" not in current[0]
    blobs = BlobStore(app_settings)
    period = f"focus/timer-focus/{period_folder(collected)}/"
    manifests = [n for n in blobs.names(container, period) if n.endswith("manifest.json")]
    manifest = json.loads(blobs.read(container, sorted(manifests)[-1]) or b"")
    assert manifest["runInfo"]["executionType"] == "Scheduled"
    data = blobs.read(container, manifest["blobs"][0]["blobName"]) or b""
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert {r["x_PriceStatus"] for r in rows} == {"NotPriced"}
    assert {r["BilledCost"] for r in rows} == {0}
