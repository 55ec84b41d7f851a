"""Which tables transport the app starts on: TABLES_TRANSPORT, else the installed versions."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from shared.app import FunctionApp
from shared.core.config import Settings
from shared.core.errors import ConfigurationError
from shared.storage.table_writer import PartitionWriter
from shared.storage.transport import choice

WARNINGS = "shared.storage.transport.choice"


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    """Each test chooses anew, and leaves the process's cached choice as it found it."""
    choice.tables_transport.cache_clear()
    yield
    choice.tables_transport.cache_clear()


def transport_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == WARNINGS and r.levelname == "WARNING"
    ]


def test_another_recorded_version_starts_the_app_on_the_sdk_path_with_one_warning(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With azure-data-tables recorded at a version other than the installed one, the app
    starts on the SDK path, says so once however many apps start, and still writes."""
    proved = {**choice.DIRECT_PROVED_ON, "azure-data-tables": "12.6.0"}
    monkeypatch.setattr(choice, "DIRECT_PROVED_ON", proved)
    caplog.set_level(logging.WARNING, logger=WARNINGS)
    apps = [FunctionApp(make_settings()) for _ in range(3)]
    assert {app.account.transport.name for app in apps} == {"sdk"}
    (warning,) = transport_warnings(caplog)
    installed = choice.installed_versions()["azure-data-tables"]
    assert f"azure-data-tables {installed}" in warning
    assert "azure-data-tables 12.6.0" in warning
    account = apps[0].account
    account.ensure_tables(["hours"])
    name = account.settings.table_name("hours")
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(name, [{"PartitionKey": "p", "RowKey": str(n)} for n in range(3)])
    found = account.transport.query_entities(account.table("hours"), "PartitionKey eq 'p'")
    assert [entity["RowKey"] for entity in found] == ["0", "1", "2"]


def test_the_recorded_versions_start_the_app_on_the_direct_path_silently(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """On the versions the contract suite passed on (this lock's), the default is direct."""
    assert choice.installed_versions() == choice.DIRECT_PROVED_ON  # the lock and the record agree
    caplog.set_level(logging.WARNING, logger=WARNINGS)
    assert FunctionApp(make_settings()).account.transport.name == "direct"
    assert transport_warnings(caplog) == []


def test_the_setting_chooses_outright(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TABLES_TRANSPORT=sdk is the SDK path; =direct is direct even on other versions, with
    a warning; a value that is neither is refused at load, naming the setting."""
    caplog.set_level(logging.WARNING, logger=WARNINGS)
    assert FunctionApp(make_settings(TABLES_TRANSPORT="sdk")).account.transport.name == "sdk"
    assert transport_warnings(caplog) == []
    proved = {**choice.DIRECT_PROVED_ON, "azure-core": "1.0.0"}
    monkeypatch.setattr(choice, "DIRECT_PROVED_ON", proved)
    forced = FunctionApp(make_settings(TABLES_TRANSPORT="direct"))
    assert forced.account.transport.name == "direct"
    (warning,) = transport_warnings(caplog)
    assert "azure-core 1.0.0" in warning
    with pytest.raises(ConfigurationError, match="TABLES_TRANSPORT"):
        make_settings(TABLES_TRANSPORT="fast")


def test_a_direct_path_that_does_not_load_falls_back_unless_it_was_asked_for(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SDK that moved a private name breaks only the direct module's import: by default
    the app runs on the SDK path with a warning; asked for direct, it refuses to start."""
    monkeypatch.setitem(sys.modules, "shared.storage.transport.direct", None)  # ImportError
    caplog.set_level(logging.WARNING, logger=WARNINGS)
    assert FunctionApp(make_settings()).account.transport.name == "sdk"
    (warning,) = transport_warnings(caplog)
    assert "does not load" in warning
    with pytest.raises(ConfigurationError, match="TABLES_TRANSPORT=direct"):
        FunctionApp(make_settings(TABLES_TRANSPORT="direct"))
