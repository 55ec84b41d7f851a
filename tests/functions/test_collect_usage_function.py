"""The collect_usage (timer) and collect_slice (queue) entry points, driven by real
azure.functions TimerRequest and QueueMessage objects: the timer plans, the queue function
collects, as the deployed app fans out."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

import collect_slice
import collect_usage
from shared.app import LazyApp
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import last_closed_hour, utc_now
from shared.storage.account import StorageAccount
from shared.storage.queues import queue_client
from shared.storage.watermark import Watermark
from tests.app_settings import LOCAL_VALUES
from tests.scripted_source import snapshot, usage_entities

HOUR = timedelta(hours=1)


@pytest.fixture
def app_settings(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """App settings in the environment, as the Functions host provides them."""
    settings = make_settings(COLLECT_LOOKBACK_HOURS=3, FLEET_TENANTS=3, COLLECT_SLICES=2)
    environ = {
        **LOCAL_VALUES,
        "AzureWebJobsStorage": settings.storage_connection_string.get_secret_value(),
        "USAGE_TABLE_PREFIX": settings.table_prefix,
        "USAGE_QUEUE_NAME": settings.usage_queue_name,
        "COLLECT_QUEUE_NAME": settings.collect_queue_name,
        "USAGE_SOURCE": "simulated",
        "COLLECT_LOOKBACK_HOURS": "3",
        "FLEET_TENANTS": "3",
        "COLLECT_SLICES": "2",
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(collect_usage, "app", LazyApp())  # this test's settings
    monkeypatch.setattr(collect_slice, "app", LazyApp())
    return settings


def deliver_all(settings: Settings) -> int:
    """Hand every message of the collection queue to collect_slice, as the host does."""
    client = queue_client(settings, settings.collect_queue_name)
    delivered = 0
    while batch := list(client.receive_messages(max_messages=32, visibility_timeout=120)):
        for message in batch:
            body = base64.b64decode(message.content)
            collect_slice.main(QueueMessage(id=message.id, body=body, dequeue_count=1))
            client.delete_message(message)
            delivered += 1
    return delivered


def test_timer_plans_slices_and_the_queue_function_collects_them(
    app_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A past-due timer run sends 3 hours x 2 slices; collecting them moves the watermark."""
    caplog.set_level(logging.INFO)
    collect_usage.main(TimerRequest(past_due=True))
    account = StorageAccount(app_settings)
    # Planning alone stores where collection starts, and collects nothing.
    assert Watermark(account, "simulated").read() == last_closed_hour(utc_now()) - 3 * HOUR
    assert not usage_entities(account)
    plans = [r.getMessage() for r in caplog.records if "slices sent" in r.getMessage()]
    assert plans == ["collect_usage: source simulated: 3 hours due, 6 slices sent, 0 hours closed"]
    assert deliver_all(app_settings) == 6
    assert Watermark(account, "simulated").read() == last_closed_hour(utc_now())
    assert usage_entities(account)
    closed = [r.getMessage() for r in caplog.records if "hour closed" in r.getMessage()]
    assert len(closed) == 3


def test_a_second_timer_run_sends_nothing_and_a_repeated_message_changes_nothing(
    app_settings: Settings,
) -> None:
    """Invariant 1 through the entry points: a replan and a redelivery leave every table."""
    collect_usage.main(TimerRequest(past_due=False))
    client = queue_client(app_settings, app_settings.collect_queue_name)
    (first, *_) = client.peek_messages(max_messages=1)
    deliver_all(app_settings)
    account = StorageAccount(app_settings)
    before = snapshot(account, "usage", "hours", "summaries", "state")
    collect_usage.main(TimerRequest(past_due=False))
    assert deliver_all(app_settings) == 0
    body = base64.b64decode(first.content)
    collect_slice.main(QueueMessage(id="again", body=body, dequeue_count=2))
    assert snapshot(account, "usage", "hours", "summaries", "state") == before


def test_a_malformed_message_raises_for_the_poison_queue(app_settings: Settings) -> None:
    with pytest.raises(BadInputError):
        collect_slice.main(QueueMessage(id="bad", body=b'{"v": 1}', dequeue_count=1))
