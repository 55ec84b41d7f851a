"""Shared fixtures: one in-memory Azurite per test session, fresh tables per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from devstack.azurite import Azurite
from devstack.fleet import register_simulated_source
from devstack.host import LocalFunctionsHost
from shared.core.config import Settings
from shared.storage.account import StorageAccount
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_query_support import World, serving, shared_world
from tests.scripted_source import tables_of

# Tests run the app as the local stack does: USAGE_SOURCE=simulated is the fleet.
register_simulated_source()

TABLES_TRANSPORTS = ("sdk", "direct")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tables-transport",
        choices=[*TABLES_TRANSPORTS, "both"],
        default="both",
        help="the tables transports the contract suite (tests/contract) runs on",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``transport_name``: every transport ``--tables-transport`` names (both by default)."""
    if "transport_name" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--tables-transport")
        names = TABLES_TRANSPORTS if chosen == "both" else (chosen,)
        metafunc.parametrize("transport_name", names)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite (Table + Queue) on free loopback ports, in memory."""
    with Azurite() as server:
        yield server


@pytest.fixture
def make_settings(azurite: Azurite) -> Iterator[Callable[..., Settings]]:
    """Build settings against the session's Azurite; every call gets its own tables."""
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        values = {
            **LOCAL_VALUES,
            "AzureWebJobsStorage": azurite.connection_string,
            "USAGE_TABLE_PREFIX": "t" + uuid.uuid4().hex[:12],
            "USAGE_QUEUE_NAME": "q" + uuid.uuid4().hex[:12],
            "COLLECT_QUEUE_NAME": "c" + uuid.uuid4().hex[:12],
            "FLEET_TENANTS": "4",
        }
        values.update({key: str(value) for key, value in overrides.items()})
        settings = Settings.from_environ(values)
        made.append(settings)
        return settings

    yield make
    client = TableServiceClient.from_connection_string(azurite.connection_string)
    for settings in made:
        for name in tables_of(StorageAccount(settings)):
            client.delete_table(name)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def account(settings: Settings) -> StorageAccount:
    storage = StorageAccount(settings)
    storage.ensure_tables()
    return storage


@pytest.fixture(scope="module")
def world(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A fleet's day collected into its own tables, with tokens for every role (per module)."""
    return shared_world(azurite, tmp_path_factory)


@pytest.fixture(scope="module")
def host(world: World) -> Iterator[LocalFunctionsHost]:
    """The real app behind the local host, serving the module's world."""
    with serving(world) as running:
        yield running
