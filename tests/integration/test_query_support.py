"""Support for the query_usage tests: a collected simulated fleet, tokens, the real host.

A "world" is one small simulated fleet (12 directory tenants, so two delegated providers)
collected by the real ``Collector`` into a real Azurite for the 24 reported hours of
``DAY`` (so its daily rows exist too) and rated into the ledger as the ``rate_usage`` timer
would, plus a local token issuer in a temporary directory.
Modules build one world each (module-scoped fixtures) and serve it through the local
Functions host over real HTTP. The tests at the bottom check the world has the shape the
other modules rely on.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from azure.data.tables import TableServiceClient

from devstack.azurite import Azurite
from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.host import LocalFunctionsHost
from devstack.tokens import LocalIssuer
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.rating.rater import Rater
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription, SubscriptionState
from tests.app_settings import LOCAL_VALUES
from tests.scripted_source import tables_of

REPO = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 11, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
API_VERSION = "2015-06-01-preview"
TENANT_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/usageAggregates"
PROVIDER_PATH = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates"
FLEET = {"FLEET_SEED": "7", "FLEET_TENANTS": "12", "FLEET_SCALE": "0.6", "FLEET_LATE_SHARE": "0.3"}
# One collected world per Azurite (i.e. per test session), shared by the query modules:
# collecting it takes ~15 s, and the tests only read it (the one that collects a later
# hour collects DAY + 24 h, outside every other test's window).
_WORLDS: dict[str, World] = {}


@dataclass
class World:
    settings: Settings
    values: dict[str, str]
    fleet: SimulatedFleet
    issuer: LocalIssuer
    subscriptions: dict[str, Subscription]  # as listed for the last collected hour
    _reported: set[str] | None = None

    @property
    def account(self) -> StorageAccount:
        return StorageAccount(self.settings)

    def token(self, object_id: str, *, admin: bool = False, **kwargs: Any) -> str:
        roles = (self.settings.auth_admin_role,) if admin else ()
        return self.issuer.mint(object_id, roles=roles, **kwargs)

    def admin_token(self) -> str:
        return self.token(str(uuid.UUID(int=1)), admin=True)

    def tenants(self) -> list[Subscription]:
        """Tenant (non-provider) subscriptions, sorted by id."""
        return sorted(
            (s for s in self.subscriptions.values() if not s.is_provider),
            key=lambda s: s.subscription_id,
        )

    def providers(self) -> list[Subscription]:
        return [self.fleet.default_provider, *self.fleet.delegated_providers]

    def direct_tenants(self, provider_id: str) -> set[str]:
        return {
            s.subscription_id.lower()
            for s in self.subscriptions.values()
            if (s.provider_subscription_id or "").lower() == provider_id.lower()
        }

    def reported_subscriptions(self) -> set[str]:
        """Subscriptions with records in DAY's reported hours, from the fleet itself."""
        if self._reported is None:
            self._reported = {
                str(record.subscription_id).lower()
                for n in range(24)
                for record in self.fleet.usage(DAY + n * HOUR)
            }
        return self._reported

    def collect(self, hour: datetime) -> None:
        """Collect one more reported hour (the watermark moves to it) and rate it, as the
        ``rate_usage`` timer would."""
        Collector(self.settings, self.account, self.fleet).collect_hour(hour)
        Rater(self.account, self.settings.source_names()).rate_due(300)


def make_world(azurite: Azurite, directory: Path, hours: int = 24) -> World:
    """Collect the ``hours`` reported hours ending with DAY's 23:00 into fresh tables."""
    issuer = LocalIssuer(directory / "auth")
    values = {
        **LOCAL_VALUES,
        **FLEET,
        "AzureWebJobsStorage": azurite.connection_string,
        "USAGE_TABLE_PREFIX": "q" + uuid.uuid4().hex[:12],
        "AUTH_JWKS_URI": str(issuer.jwks_path),
        "COLLECT_LOOKBACK_HOURS": str(hours),
        "FUNCTIONS_WORKER_RUNTIME": "python",
        # Only the HTTP functions run in these tests: no timer may collect behind our back.
        "AzureWebJobs.collect_usage.Disabled": "true",
        "AzureWebJobs.collect_slice.Disabled": "true",
        "AzureWebJobs.report_to_azure.Disabled": "true",
        "AzureWebJobs.rate_usage.Disabled": "true",
        "AzureWebJobs.finalise_statements.Disabled": "true",
    }
    settings = Settings.from_environ(values)
    fleet = SimulatedFleet(
        FleetOptions(
            seed=settings.fleet_seed,
            tenants=settings.fleet_tenants,
            late_share=settings.fleet_late_share,
            scale=settings.fleet_scale,
        )
    )
    account = StorageAccount(settings)
    Collector(settings, account, fleet).collect_due_hours(DAY + timedelta(days=1, minutes=30))
    Rater(account, settings.source_names()).rate_due(300)
    last = DAY + 23 * HOUR
    listed = {s.subscription_id.lower(): s for s in fleet.subscriptions(last)}
    return World(settings, values, fleet, issuer, listed)


def shared_world(azurite: Azurite, factory: pytest.TempPathFactory) -> World:
    """The session's world (see ``_WORLDS``), collected on first use."""
    world = _WORLDS.get(azurite.connection_string)
    if world is None:
        world = make_world(azurite, factory.mktemp("query-world"))
        _WORLDS[azurite.connection_string] = world
    return world


def drop_world(world: World, azurite: Azurite) -> None:
    client = TableServiceClient.from_connection_string(azurite.connection_string)
    for name in tables_of(world.account):
        with contextlib.suppress(Exception):
            client.delete_table(name)


@contextlib.contextmanager
def serving(world: World) -> Iterator[LocalFunctionsHost]:
    """The real app behind the local host, with this world's settings."""
    with LocalFunctionsHost(REPO, world.values, run_timers_at_start=False) as host:
        yield host


def query_string(params: Mapping[str, str]) -> str:
    return "&".join(f"{quote(k, safe='-')}={quote(v, safe='')}" for k, v in params.items())


def window(
    start: datetime = DAY, end: datetime = DAY + timedelta(days=1), granularity: str = "Hourly"
) -> dict[str, str]:
    return {
        "api-version": API_VERSION,
        "reportedStartTime": start.isoformat(),
        "reportedEndTime": end.isoformat(),
        "aggregationGranularity": granularity,
    }


def call(
    base_url: str,
    path: str,
    params: Mapping[str, str] | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    url = base_url + path + ("?" + query_string(params) if params else "")
    return requests.get(url, headers=sent, timeout=60)


def follow(
    response: requests.Response, token: str, limit: int = 100
) -> tuple[list[dict[str, Any]], list[requests.Response]]:
    """All rows of a paging run starting with ``response`` (every page must be 200)."""
    rows: list[dict[str, Any]] = []
    pages = [response]
    while True:
        assert response.status_code == 200, response.text[:500]
        body = response.json()
        rows += body["value"]
        link = body.get("nextLink")
        if link is None:
            return rows, pages
        assert len(pages) < limit
        response = requests.get(link, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        pages.append(response)


def deleted(world: World) -> list[Subscription]:
    return [s for s in world.tenants() if s.state is SubscriptionState.DELETED]


# --- the world's shape -------------------------------------------------------------------


def test_fleet_has_two_delegated_providers_with_direct_tenants(world: World) -> None:
    """The isolation tests rely on P0 -> {P1, P2, ...} and P1, P2 each having tenants."""
    p0 = world.fleet.default_provider.subscription_id
    delegated = [p.subscription_id.lower() for p in world.fleet.delegated_providers]
    assert len(delegated) == 2
    assert set(delegated) <= world.direct_tenants(p0)
    for provider in delegated:
        assert world.direct_tenants(provider)


def test_fleet_has_deleted_and_late_usage(world: World) -> None:
    """The world holds a deleted tenant subscription and directories with several users."""
    assert deleted(world)
    assert len({s.tenant_id for s in world.tenants()}) == 12
