"""The report_to_azure entry point, driven by real azure.functions QueueMessages."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from azure.functions.queue import QueueMessage

import report_to_azure
from devstack.commerce_emulator import CommerceEmulator, Fault
from shared.app import LazyApp
from shared.billing.ledger import Ledger, LedgerState
from shared.core.config import Settings
from shared.core.errors import BadInputError, CommerceUnavailableError
from shared.core.hours import last_closed_hour, utc_now
from shared.storage.account import StorageAccount
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_report_support import collect, drain
from tests.scripted_source import TENANT_A, ScriptedSource, vm_record


@pytest.fixture
def emulator() -> Iterator[CommerceEmulator]:
    with CommerceEmulator() as running:
        yield running


@pytest.fixture
def app_settings(
    make_settings: Callable[..., Settings],
    emulator: CommerceEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """App settings in the environment, as the Functions host provides them."""
    settings = make_settings(COMMERCE_BASE_URL=emulator.base_url)
    environ = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
        "USAGE_TABLE_PREFIX": settings.table_prefix,
        "USAGE_QUEUE_NAME": settings.usage_queue_name,
        "COMMERCE_BASE_URL": emulator.base_url,
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(
        report_to_azure, "app", LazyApp()
    )  # this test's settings, built on first use
    return settings


def work_item_body(settings: Settings) -> bytes:
    """Collect the last closed hour (one VM) and return its one work item's body."""
    hour = last_closed_hour(utc_now())
    collect(settings, ScriptedSource(by_hour={hour: [vm_record(TENANT_A, hour)]}), [hour])
    (body,) = drain(settings)
    return body


def message(body: bytes, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id="m-1", body=body, dequeue_count=dequeue_count, pop_receipt="r")


def test_message_is_billed_and_recorded(app_settings: Settings, emulator: CommerceEmulator) -> None:
    """A work item's event is accepted once and the ledger holds its usageEventId."""
    body = work_item_body(app_settings)
    report_to_azure.main(message(body))
    report_to_azure.main(message(body, dequeue_count=2))  # a redelivery changes nothing
    (event,) = emulator.accepted_events()
    assert emulator.calls == {"batchUsageEvent": 1}
    hour = last_closed_hour(utc_now())
    entry = Ledger(StorageAccount(app_settings), "registration-local").get(hour, event["dimension"])
    assert entry is not None
    assert (entry.state, entry.usage_event_id) == (LedgerState.ACCEPTED, event["usageEventId"])


def test_endpoint_unavailable_raises_so_the_host_redelivers(
    app_settings: Settings, emulator: CommerceEmulator
) -> None:
    """Throttled past the client's attempts: the function raises (transient), nothing billed."""
    body = work_item_body(app_settings)
    emulator.fail_next(Fault.THROTTLE, times=20, retry_after=0)
    with pytest.raises(CommerceUnavailableError):
        report_to_azure.main(message(body, dequeue_count=3))
    assert not emulator.accepted_events()


def test_malformed_message_raises_bad_input(app_settings: Settings) -> None:
    """A body that is not a work item raises, so the host poisons it for an operator."""
    with pytest.raises(BadInputError):
        report_to_azure.main(message(b'{"v": 1, "hour": "not-an-hour"}'))
