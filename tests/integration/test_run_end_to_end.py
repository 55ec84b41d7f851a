"""The whole local stack as a user runs it: the run command in a subprocess, used over HTTP."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from azure.storage.blob import BlobServiceClient

from devstack.fleet import fleet_from_settings
from shared.core.config import Settings
from shared.core.hours import HOUR, parse_hour_key

REPO = Path(__file__).resolve().parents[2]
HOURS = 4
API_VERSION = "2015-06-01-preview"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`python -m devstack.run` serving on a free port; its run.json once it is ready."""
    state = tmp_path_factory.mktemp("run")
    process = subprocess.Popen(  # noqa: S603  # our own module, fixed argv
        [
            sys.executable,
            "-m",
            "devstack.run",
            "--port",
            "0",
            "--hours",
            str(HOURS),
            "--state-dir",
            str(state),
            "--timeout",
            "300",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ready = state / "run.json"
    deadline = time.monotonic() + 360
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the run command did not become ready:\n{output[-4000:]}")
        time.sleep(0.5)
    info = json.loads(ready.read_text())
    info["state_dir"] = state
    info["process"] = process
    yield info
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def get_all_pages(url: str, token: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        answer = requests.get(next_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["value"]
        next_url = body.get("nextLink")
    return rows


def window(info: dict[str, Any]) -> tuple[datetime, datetime]:
    first = parse_hour_key(info["first_hour"].replace("-", "").replace("T", ""))
    last = parse_hour_key(info["last_hour"].replace("-", "").replace("T", ""))
    return first, last


def query(info: dict[str, Any], route: str, subscription: str) -> str:
    first, last = window(info)
    path = (
        "providers/Microsoft.Commerce/usageAggregates"
        if route == "tenant"
        else "providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
    )
    return (
        f"{info['api']}/subscriptions/{subscription}/{path}"
        f"?reportedStartTime={first:%Y-%m-%dT%H:00:00Z}"
        f"&reportedEndTime={last + HOUR:%Y-%m-%dT%H:00:00Z}"
        f"&aggregationGranularity=Hourly&api-version={API_VERSION}"
    )


def expected_totals(
    info: dict[str, Any], subscriptions: set[str] | None
) -> dict[tuple[str, str], float]:
    """Quantities per (subscription, meter) straight from the simulated fleet, not storage."""
    values = json.loads((info["state_dir"] / "local.settings.json").read_text())["Values"]
    settings = Settings.from_environ(values)
    fleet = fleet_from_settings(settings)
    first, last = window(info)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    hour = first
    while hour <= last:
        for record in fleet.usage(hour):
            sub = record.subscription_id.lower()
            if subscriptions is None or sub in subscriptions:
                totals[(sub, record.meter_id.lower())] += record.quantity
        hour += HOUR
    return totals


def totals_of(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row in rows:
        properties = row["properties"]
        key = (properties["subscriptionId"].lower(), properties["meterId"].lower())
        totals[key] += properties["quantity"]
    return totals


def assert_same_totals(
    got: dict[tuple[str, str], float], want: dict[tuple[str, str], float]
) -> None:
    assert got.keys() == want.keys()
    for key, quantity in want.items():
        assert math.isclose(got[key], quantity, rel_tol=1e-9), key


def test_tenant_reads_exactly_its_fleet_usage_over_http(stack: dict[str, Any]) -> None:
    """A tenant's rows over plain HTTP equal the fleet's usage of that subscription."""
    tenant = stack["tokens"]["tenant"]
    rows = get_all_pages(query(stack, "tenant", tenant["subscription"]), tenant["token"])
    assert rows
    assert_same_totals(totals_of(rows), expected_totals(stack, {tenant["subscription"]}))


def test_admin_and_delegated_provider_read_their_scopes(stack: dict[str, Any]) -> None:
    """The admin reads the default provider's tenants; a delegated provider only its own."""
    admin = stack["tokens"]["admin"]
    delegated = stack["tokens"]["delegated"]
    admin_rows = get_all_pages(query(stack, "provider", admin["subscription"]), admin["token"])
    delegated_rows = get_all_pages(
        query(stack, "provider", delegated["subscription"]), delegated["token"]
    )
    admin_subs = {row["properties"]["subscriptionId"] for row in admin_rows}
    delegated_subs = {row["properties"]["subscriptionId"] for row in delegated_rows}
    assert admin_subs
    assert delegated_subs
    assert not admin_subs & delegated_subs  # P0's direct tenants exclude P1's tenants
    assert_same_totals(totals_of(delegated_rows), expected_totals(stack, delegated_subs))
    denied = requests.get(
        query(stack, "provider", admin["subscription"]),
        headers={"Authorization": f"Bearer {delegated['token']}"},
        timeout=30,
    )
    assert denied.status_code == 403
    assert denied.headers["x-ms-error-code"] == "AuthorizationFailed"


def test_operator_cli_reads_the_api_and_reconciles(stack: dict[str, Any]) -> None:
    """`python -m ops aggregates` reads the same rows; `ops reconcile` finds billing in order."""
    tenant = stack["tokens"]["tenant"]
    first, last = window(stack)
    aggregates = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [
            sys.executable,
            "-m",
            "ops",
            "aggregates",
            "--api-url",
            stack["api"],
            "--token",
            tenant["token"],
            "--subscription",
            tenant["subscription"],
            "--reported-start",
            f"{first:%Y-%m-%dT%H}:00:00Z",
            "--reported-end",
            f"{last + HOUR:%Y-%m-%dT%H}:00:00Z",
            "--granularity",
            "hourly",
            "--all-pages",
            "--output",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert aggregates.returncode == 0, aggregates.stderr
    rows = json.loads(aggregates.stdout)
    rows = rows["value"] if isinstance(rows, dict) else rows
    assert_same_totals(totals_of(rows), expected_totals(stack, {tenant["subscription"]}))

    settings_file = stack["state_dir"] / "local.settings.json"
    reconciled = subprocess.run(  # noqa: S603  # our own module, fixed argv
        [
            sys.executable,
            "-m",
            "ops",
            "reconcile",
            "--settings-file",
            str(settings_file),
            "--from",
            stack["first_hour"],
            "--to",
            stack["last_hour"],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "in order" in reconciled.stdout + reconciled.stderr


def test_billing_reached_the_emulator(stack: dict[str, Any]) -> None:
    """The commerce emulator accepted the caught-up hours' chargeable usage."""
    first, last = window(stack)
    values = json.loads((stack["state_dir"] / "local.settings.json").read_text())["Values"]
    answer = requests.get(
        f"{stack['commerce']}/api/usageEvents",
        params={
            "api-version": "2018-08-31",
            "usageStartDate": f"{first:%Y-%m-%dT%H:00:00Z}",
            "usageEndDate": f"{last + HOUR:%Y-%m-%dT%H:00:00Z}",
        },
        headers={"Authorization": f"Bearer {values['COMMERCE_STATIC_TOKEN']}"},
        timeout=30,
    )
    assert answer.status_code == 200
    assert len(answer.json()) > 0
    assert stack["reconciled"] is True


def test_the_first_run_already_shows_money(stack: dict[str, Any]) -> None:
    """The example sheets are loaded by the run and the caught-up hours rated: a delegated
    provider's roll-up of the month charges its tenants more than zero, its wholesale cost
    below that, and the margin is the difference."""
    delegated = stack["tokens"]["delegated"]
    month = stack["last_hour"][:7]
    answer = requests.get(
        f"{stack['api']}/subscriptions/{delegated['subscription']}/providers/"
        f"Microsoft.Commerce.Admin/subscriberStatements/{month}?api-version={API_VERSION}",
        headers={"Authorization": f"Bearer {delegated['token']}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    rollup = answer.json()
    assert rollup["currency"] == "USD"
    charged, wholesale = Decimal(rollup["directTenantsTotal"]), Decimal(rollup["wholesaleTotal"])
    assert charged > wholesale > 0
    assert Decimal(rollup["margin"]) == charged - wholesale


def test_the_first_cycle_is_exported_to_blob_storage(stack: dict[str, Any]) -> None:
    """The run command writes the admin's FOCUS export of the caught-up hours, readable."""
    container = BlobServiceClient.from_connection_string(stack["storage"]).get_container_client(
        "usage-exports"
    )
    manifests = [n for n in container.list_blob_names() if n.endswith("/manifest.json")]
    assert manifests
    rows = 0
    for name in manifests:
        manifest = json.loads(container.download_blob(name).readall())
        for blob in manifest["blobs"]:
            data = container.download_blob(blob["blobName"]).readall()
            assert pq.read_table(io.BytesIO(data)).num_rows == blob["dataRowCount"]
        rows += manifest["dataRowCount"]
    assert rows > 0


def test_the_stack_stops_cleanly_on_ctrl_c(stack: dict[str, Any]) -> None:
    """SIGINT while serving stops Azurite, the emulator and the host within 5 s; exit 0."""
    process: subprocess.Popen[str] = stack["process"]
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert time.monotonic() - started < 5
    with pytest.raises(requests.ConnectionError):
        requests.get(stack["api"] + "/openapi.json", timeout=5)
