"""Round trip: this project's own provider route is a stamp the Azure Stack source can read.

The simulated fleet is collected into Azurite (table prefix A). The real ``query_usage``
function app serves those tables through the local Functions host over real HTTP; a thin
front (http.server on loopback) stands in for the rest of the stamp's admin ARM: it
answers ``Microsoft.Subscriptions.Admin/subscriptions`` from the fleet and passes every
other request, Host header included, to the Functions host. The Azure Stack source then
collects the same reported hours from that front into table prefix B, and the usage
tables of A and B must be identical: query_usage is wire-compatible with a stamp, and the
source reads a stamp faithfully (late rows, delegated providers' tenants, every page).
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.azurite import Azurite
from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.host import LocalFunctionsHost
from devstack.tokens import LocalIssuer
from shared.collection.collector import Collector
from shared.collection.sources.azurestack import AzureStackOptions, AzureStackSource
from shared.core.config import Settings
from shared.core.retry import RetryPolicy
from shared.storage.account import StorageAccount
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_azurestack_source import admin_item
from tests.loopback import LoopbackServer
from tests.scripted_source import snapshot

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("shared.query.usage_api") is None,
    reason="query_usage has not landed: shared.query.usage_api (the provider route) is missing",
)

REPO = Path(__file__).resolve().parents[2]
FIRST = datetime(2026, 4, 14, 9, tzinfo=UTC)
HOURS = [FIRST + timedelta(hours=n) for n in range(3)]
FLEET = {"FLEET_SEED": "3", "FLEET_TENANTS": "12", "FLEET_LATE_SHARE": "0.3"}


class StampFront(LoopbackServer):
    """The admin subscriptions API from the fleet; everything else proxied to the host."""

    def __init__(self, fleet: SimulatedFleet, host_url: str) -> None:
        self.items = [admin_item(s) for s in fleet.subscriptions(HOURS[-1])]
        self.host_url = host_url
        self.gateway_timeouts_for: str | None = None  # provider id: 504 its all-tenants reads
        self.forwarded: list[str] = []
        super().__init__(self._handler())

    def __enter__(self) -> StampFront:
        super().__enter__()
        return self

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lower()
                if "/microsoft.subscriptions.admin/subscriptions" in path:
                    self._send(200, json.dumps({"value": front.items}).encode(), {})
                    return
                blocked = front.gateway_timeouts_for
                if blocked and f"/subscriptions/{blocked}/" in path and "subscriberid" not in path:
                    self._send(504, b'{"error":{"code":"GatewayTimeout","message":"x"}}', {})
                    return
                front.forwarded.append(self.path)
                answer = requests.get(
                    front.host_url + self.path,
                    headers=dict(self.headers.items()),
                    timeout=60,
                )
                headers = {"x-ms-error-code": answer.headers.get("x-ms-error-code", "")}
                self._send(answer.status_code, answer.content, headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    if value:
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler


@contextlib.contextmanager
def serving(values: dict[str, str]) -> Iterator[LocalFunctionsHost]:
    """The real app behind the local host, reading settings A."""
    with LocalFunctionsHost(REPO, values, run_timers_at_start=False) as host:
        yield host


def collect(settings: Settings, source: Any) -> StorageAccount:
    account = StorageAccount(settings)
    account.ensure_tables()
    collector = Collector(settings, account, source)
    for hour in HOURS:
        collector.collect_hour(hour)
    return account


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, make_settings: Any) -> Iterator[dict[str, Any]]:
    """Fleet hours collected into prefix A; the host and the stamp front serving them."""
    issuer = LocalIssuer(tmp_path / "auth")
    values = {
        **LOCAL_VALUES,
        **FLEET,
        "AzureWebJobsStorage": azurite.connection_string,
        "AUTH_JWKS_URI": str(issuer.jwks_path),
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobs.collect_usage.Disabled": "true",
        "AzureWebJobs.collect_slice.Disabled": "true",
        "AzureWebJobs.report_to_azure.Disabled": "true",
    }
    settings_a = make_settings(**values)
    values["USAGE_TABLE_PREFIX"] = settings_a.table_prefix
    fleet = SimulatedFleet(FleetOptions(seed=3, tenants=12, late_share=0.3))
    account_a = collect(settings_a, fleet)
    token = issuer.mint(str(uuid.UUID(int=1)), roles=(settings_a.auth_admin_role,))
    with serving(values) as host, StampFront(fleet, host.base_url) as front:
        yield {"fleet": fleet, "front": front, "token": token, "expected": account_a}


def stamp_source(world: dict[str, Any]) -> AzureStackSource:
    return AzureStackSource(
        AzureStackOptions(
            admin_arm_endpoint=world["front"].base_url,
            provider_subscription_id=world["fleet"].default_provider.subscription_id,
            retry=RetryPolicy(max_attempts=4, sleep=lambda _: None),
        ),
        lambda: world["token"],
    )


def test_collecting_from_query_usage_reproduces_the_tables(
    world: dict[str, Any], make_settings: Any
) -> None:
    """Fleet -> Azurite -> query_usage -> azurestack source -> Azurite: usage rows equal."""
    with stamp_source(world) as source:
        account_b = collect(make_settings(), source)
    expected = snapshot(world["expected"], "usage")
    assert sum(len(rows) for rows in expected.values()) > 1000
    assert snapshot(account_b, "usage") == expected
    assert snapshot(account_b, "quarantine") in ({}, {"quarantine": []})


def test_per_subscriber_fallback_through_query_usage(
    world: dict[str, Any], make_settings: Any
) -> None:
    """504 on the default provider's all-tenants reads: subscriberId reads give equal rows."""
    default = world["fleet"].default_provider.subscription_id
    world["front"].gateway_timeouts_for = default.lower()
    with stamp_source(world) as source:
        account_b = collect(make_settings(), source)
        assert source.stats.fallbacks == [default.lower()]
    assert any("subscriberId=" in path for path in world["front"].forwarded)
    assert snapshot(account_b, "usage") == snapshot(world["expected"], "usage")
