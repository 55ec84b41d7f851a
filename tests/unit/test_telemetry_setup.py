"""How the process's meter provider is set up (shared.core.telemetry.configure_process), each
case in a child process: the OpenTelemetry global provider can be set once per process, so
the test process itself never sets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.app_settings import LOCAL_VALUES

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys
import requests
from opentelemetry import metrics
from shared.core.config import Settings
from shared.core.telemetry import ROWS_STORED, Telemetry, configure_process
settings = Settings.from_environ(json.loads(sys.argv[1]))
provider = configure_process(settings)
Telemetry(provider).record(ROWS_STORED, 5, stamp="east")
# The SDK keeps its readers private; each periodic reader holds its exporter.
readers = getattr(provider, "_metric_readers", ())
exporters = [type(getattr(reader, "_exporter", reader)).__name__ for reader in readers]
print("RESULT " + json.dumps({
    "provider": type(provider).__name__,
    "same_as_global": provider is metrics.get_meter_provider(),
    "exporters": exporters,
    "requests_instrumented": bool(getattr(requests.Session.send, "__wrapped__", None)),
}))
"""


def _child(tmp_path: Path, **values: str) -> dict[str, object]:
    environ = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        **values,
    }
    output = subprocess.run(  # noqa: S603  # our own interpreter and code, fixed argv
        [sys.executable, "-c", CHILD, json.dumps(environ)],
        cwd=REPO,
        # TMPDIR: the distro keeps unsent telemetry in a folder of the temp directory.
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
            "TMPDIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    (line,) = [line for line in output.splitlines() if line.startswith("RESULT ")]
    return dict(json.loads(line.removeprefix("RESULT ")))


def test_without_a_setting_nothing_is_configured(tmp_path: Path) -> None:
    """No connection string, no console: the API's own default, which records nothing."""
    found = _child(tmp_path)
    assert found["exporters"] == []
    assert found["provider"] != "MeterProvider"  # the API's proxy, not the SDK's


def test_the_console_setting_exports_to_the_console(tmp_path: Path) -> None:
    """TELEMETRY_CONSOLE=true (local mode): the SDK with the console exporter, set globally."""
    found = _child(tmp_path, TELEMETRY_CONSOLE="true")
    assert found["provider"] == "MeterProvider"
    assert found["same_as_global"] is True
    assert found["exporters"] == ["ConsoleMetricExporter"]


def test_a_connection_string_configures_azure_monitor_for_metrics_only(tmp_path: Path) -> None:
    """APPLICATIONINSIGHTS_CONNECTION_STRING: the distro's Azure Monitor exporter, set
    globally, with no library instrumented (no metric per storage request)."""
    found = _child(
        tmp_path,
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            "InstrumentationKey=00000000-0000-4000-8000-000000000000;"
            "IngestionEndpoint=https://127.0.0.1:9/"
        ),
    )
    assert found["provider"] == "MeterProvider"
    assert found["same_as_global"] is True
    assert "AzureMonitorMetricExporter" in found["exporters"]
    assert found["requests_instrumented"] is False
