"""The report_to_azure entry point, driven by real azure.functions QueueMessages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from azure.functions.queue import QueueMessage

import report_to_azure
from devstack.commerce_emulator import CommerceEmulator, Fault
from shared.app import LazyApp
from shared.billing.ledger import Ledger, LedgerState
from shared.core.config import Settings
from shared.core.errors import BadInputError, CommerceUnavailableError
from shared.core.hours import last_closed_hour, utc_now
from shared.core.meters import catalogue
from shared.storage.account import StorageAccount
from shared.storage.queues import queue_client
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_report_support import collect, drain
from tests.scripted_source import TENANT_A, WINDOWS_VM_HOURS, ScriptedSource, vm_record


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


def test_an_item_whose_events_wait_for_the_daily_rows_comes_back_later(
    app_settings: Settings, emulator: CommerceEmulator
) -> None:
    """An event posted before its hour left the window and never answered is retried after
    it: its day has no row, but before the processing horizon that proves nothing. The
    function returns (no redelivery, no poison): the item is back on the queue, invisible
    until the horizon has passed; the event stays pending, nothing is carried."""
    hour = last_closed_hour(utc_now()) - timedelta(hours=30)
    collect(app_settings, ScriptedSource(by_hour={hour: [vm_record(TENANT_A, hour)]}), [hour])
    (body,) = drain(app_settings)
    ledger = Ledger(StorageAccount(app_settings), "registration-local")
    dimension = catalogue().lookup(WINDOWS_VM_HOURS).dimension  # type: ignore[union-attr]
    (opened,) = ledger.open(hour, "azure-stack-usage", {dimension: 8.0}, sendable=True)

    report_to_azure.main(message(body))

    queue = queue_client(app_settings, app_settings.usage_queue_name)
    assert queue.get_queue_properties().approximate_message_count == 1
    assert list(queue.receive_messages()) == []  # invisible: comes back after the horizon
    assert ledger.get(hour, dimension) == opened  # still pending, as recorded
    assert emulator.accepted_events() == []
    assert emulator.calls == {"usageEvents": 1}
