"""Collection fans out: several sources, hours cut in slices, slices collected by concurrent
workers from the collection queue, with repeated and overlapping deliveries and a worker
that dies mid-slice; the tables end exactly as one process collecting in order leaves them."""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from devstack.clock import SettableClock
from devstack.fleet import fleet_from_settings
from shared.app import FunctionApp
from shared.collection.slices import CollectionSlice, slice_of
from shared.collection.sources import SourceRegistry
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.usage import UsageRecord
from shared.storage.hour_manifest import read_hour
from shared.storage.hour_summary import read_hour_summary, read_resource_sums
from shared.storage.queues import ensure_queue, queue_client
from shared.storage.subscriptions import Subscription, SubscriptionStore
from shared.storage.watermark import Watermark
from tests.scripted_source import snapshot

HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 21, 0, 20, tzinfo=UTC)  # 24 due hours: 2026-11-20T00..23
LAST = datetime(2026, 11, 20, 23, tzinfo=UTC)
# Hours the fan-out test collects (LAST - 7 h .. LAST): a worker dies in one of them, and
# 4 sources x 8 hours x 3 slices = 96 deliveries give repeats and overlaps a plenty.
FANNED_HOURS = 8
STAMPS = ("east", "west", "north", "south")
KINDS = ("usage", "hours", "quarantine", "summaries", "activity", "subscriptions")


def stamp_values(**extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "USAGE_STAMPS": ",".join(STAMPS),
        "COLLECT_SLICES": 3,
        "COLLECT_LOOKBACK_HOURS": 24,
        "FLEET_TENANTS": 2,
        **extra,
    }
    for n, stamp in enumerate(STAMPS):
        values[f"STAMP_{stamp.upper()}__FLEET_SEED"] = 100 + n
    return values


class DyingSource:
    """The simulated fleet of one stamp, whose worker dies once, mid-stream, in one slice."""

    def __init__(self, settings: Settings, dies: threading.Event, at: tuple[str, datetime]):
        self._fleet = fleet_from_settings(settings)
        self._dies = dies
        self._at = at
        self.name = self._fleet.name

    def subscriptions(self, reported_hour: datetime) -> list[Subscription]:
        return self._fleet.subscriptions(reported_hour)

    def usage(
        self, reported_hour: datetime, within: Callable[[str], bool] | None = None
    ) -> Iterator[UsageRecord]:
        records = self._fleet.usage(reported_hour, within)
        if (self.name, reported_hour) != self._at or within is None or self._dies.is_set():
            yield from records
            return
        for count, record in enumerate(records):
            if count == 40:  # several partitions are being written by now
                self._dies.set()
                raise RuntimeError("worker killed mid-slice")
            yield record


def fleet_registry(dies: threading.Event | None = None, at: Any = None) -> SourceRegistry:
    registry = SourceRegistry()
    if dies is None:
        registry.register("simulated", fleet_from_settings)
    else:
        registry.register("simulated", lambda settings: DyingSource(settings, dies, at))
    return registry


def drain(app: FunctionApp, client: QueueClient, workers: int, seed: int) -> dict[str, int]:
    """Workers receive, collect and delete until the queue is empty, like instances of the
    queue trigger: a failed delivery comes back after its visibility timeout; some messages
    are delivered twice, one after the other or at the same time."""
    rng = random.Random(seed)
    counts = {"delivered": 0, "failed": 0, "repeated": 0, "overlapped": 0}
    lock = threading.Lock()

    def deliver(body: str) -> None:
        app.collect_slice_message(base64.b64decode(body))

    in_flight = [0]  # messages received and not yet deleted or made visible again
    settled = threading.Condition(lock)
    deadline = time.monotonic() + 600

    def work() -> None:
        while True:
            messages = list(client.receive_messages(max_messages=1, visibility_timeout=120))
            if not messages:
                with settled:
                    if in_flight[0] == 0:
                        return  # empty, and no delivery in flight can fail back into it
                    assert time.monotonic() < deadline, "the queue did not drain in time"
                    settled.wait(timeout=1.0)  # until a delivery in flight settles
                continue
            message = messages[0]
            with lock:
                in_flight[0] += 1
                counts["delivered"] += 1
                roll = rng.random()
            try:
                handle(message, roll)
            finally:
                with settled:
                    in_flight[0] -= 1
                    settled.notify_all()

    def handle(message: Any, roll: float) -> None:
        try:
            if roll < 0.15:  # two deliveries of one message at the same time
                with ThreadPoolExecutor(2) as pair:
                    list(pair.map(deliver, [message.content, message.content]))
                with lock:
                    counts["overlapped"] += 1
            else:
                deliver(message.content)
                if roll < 0.3:  # delivered again after it succeeded
                    deliver(message.content)
                    with lock:
                        counts["repeated"] += 1
        except RuntimeError:
            with lock:
                counts["failed"] += 1
            # Not deleted: visible again after the host's visibilityTimeout (here, now).
            client.update_message(message, visibility_timeout=0)
            return
        client.delete_message(message)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    return counts


def test_four_sources_fanned_out_to_concurrent_workers_equal_one_process(
    make_settings: Callable[..., Settings],
) -> None:
    """Four sources' hours, in slices, collected by four workers with repeated, overlapping
    and failed deliveries, leave every table as one process collecting in order does."""
    fanned = make_settings(**stamp_values(COLLECT_LOOKBACK_HOURS=FANNED_HOURS))
    single = make_settings(**stamp_values(COLLECT_LOOKBACK_HOURS=FANNED_HOURS))
    clock = SettableClock(NOW)
    dies = threading.Event()
    app = FunctionApp(fanned, sources=fleet_registry(dies, ("west", LAST - 5 * HOUR)), clock=clock)
    app.account.ensure_tables()

    plans = app.plan_collection()
    assert [plan.source for plan in plans] == list(STAMPS)
    assert sum(len(plan.sent) for plan in plans) == 4 * FANNED_HOURS * 3
    client = queue_client(fanned, fanned.collect_queue_name)
    counts = drain(app, client, workers=4, seed=7)
    assert dies.is_set()
    assert counts["failed"] == 1
    assert counts["overlapped"]
    assert counts["repeated"]

    reference = FunctionApp(single, sources=fleet_registry(), clock=clock)
    reference.account.ensure_tables()
    run = reference.collect_due_hours()
    assert len(run.hours) == 4 * FANNED_HOURS

    for stamp in STAMPS:
        assert Watermark(app.account, stamp).read() == LAST
        assert Watermark(reference.account, stamp).read() == LAST
    assert snapshot(app.account, *KINDS) == snapshot(reference.account, *KINDS)
    usage = snapshot(app.account, "usage")
    assert sum(len(rows) for rows in usage.values()) > 4 * FANNED_HOURS * 50
    for hour in (LAST - (FANNED_HOURS - 1) * HOUR, LAST - 5 * HOUR, LAST):
        summary = read_hour_summary(app.account, hour)
        assert summary is not None
        assert summary == read_hour_summary(reference.account, hour)
        # A work item's read (its resources' keys only, across all 12 parts) agrees.
        some = [*sorted(summary)[::2], "not-billed-here"]
        assert read_resource_sums(app.account, hour, some) == {
            resource_id: summary[resource_id] for resource_id in some[:-1]
        }

    # Every hour's billing was enqueued once every source had it, in both runs.
    def billed_hours(settings: Settings) -> set[str]:
        billing = queue_client(settings, settings.usage_queue_name)
        hours: set[str] = set()
        while batch := list(billing.receive_messages(max_messages=32, visibility_timeout=60)):
            for message in batch:
                hours.add(base64.b64decode(message.content).decode().split('"hour":"')[1][:10])
        return hours

    assert (
        billed_hours(fanned)
        == billed_hours(single)
        == {f"{LAST - n * HOUR:%Y%m%d%H}" for n in range(FANNED_HOURS)}
    )

    # A plan after everything is durable sends nothing.
    assert sum(len(plan.sent) for plan in app.plan_collection()) == 0


def test_slices_are_ranges_of_subscription_ids_that_cover_every_key_once() -> None:
    """Every key (a GUID or anything a malformed record carries) is in exactly one slice,
    the one whose id range holds it; GUIDs spread evenly over the slices."""
    rng = random.Random(5)
    guids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(4000)]
    odd = ["", "sub-1", "zzz", "0", "ffffffff-ffff", "42", "'; drop", "\u00e9t\u00e9"]
    for count in (1, 3, 7, 64):
        slices = [CollectionSlice("east", LAST, index, count) for index in range(count)]
        for key in guids + odd:
            (holder,) = [work for work in slices if work.holds(key)]
            assert holder.index == slice_of(key, count)
            low, high = holder.key_range
            assert low is None or low <= key
            assert high is None or key < high
    sizes = [sum(slice_of(key, 4) == index for key in guids) for index in range(4)]
    assert min(sizes) > 900  # about 1,000 each


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "source": "east", "hour": "2026112023", "slice": 0, "slices": 1}',
        b'{"v": 1, "source": "east", "hour": "2026-11-20", "slice": 0, "slices": 1}',
        b'{"v": 1, "source": "east", "hour": "2026112023", "slice": 3, "slices": 3}',
        b'{"v": 1, "source": "east", "hour": "2026112023", "slice": "0", "slices": 1}',
        b'{"v": 1, "source": "nowhere", "hour": "2026112023", "slice": 0, "slices": 1}',
    ],
)
def test_a_bad_collection_message_is_refused_and_writes_nothing(
    make_settings: Callable[..., Settings], body: bytes
) -> None:
    settings = make_settings(**stamp_values())
    app = FunctionApp(settings, sources=fleet_registry(), clock=SettableClock(NOW))
    app.account.ensure_tables()
    with pytest.raises(BadInputError):
        app.collect_slice_message(body)
    assert snapshot(app.account, "usage", "hours", "summaries") == {
        "hours": [],
        "summaries": [],
    }


def test_billing_waits_until_every_source_has_the_hour(
    make_settings: Callable[..., Settings],
) -> None:
    """An hour three stamps have finished is not billed until the fourth has it too."""
    settings = make_settings(**stamp_values(COLLECT_LOOKBACK_HOURS=1))
    app = FunctionApp(settings, sources=fleet_registry(), clock=SettableClock(NOW))
    app.account.ensure_tables()
    billing = queue_client(settings, settings.usage_queue_name)
    ensure_queue(billing)
    for stamp in STAMPS[:3]:
        for index in range(3):
            app.collect_slice_message(
                base64.b64decode(CollectionSlice(stamp, LAST, index, 3).to_message_text())
            )
        assert Watermark(app.account, stamp).read() == LAST
    assert read_hour_summary(app.account, LAST) is None
    assert not list(billing.peek_messages(max_messages=32))
    for index in (2, 0, 1):  # any order
        app.collect_slice_message(
            base64.b64decode(CollectionSlice("south", LAST, index, 3).to_message_text())
        )
    assert read_hour_summary(app.account, LAST) is not None
    assert list(billing.peek_messages(max_messages=32))
    assert Watermark(app.account, "south").read() == LAST


def test_a_subscription_stored_before_sources_were_recorded_keeps_its_billing_mapping(
    make_settings: Callable[..., Settings],
) -> None:
    """With several stamps a slice reads only its stamp's subscriptions; one stored before
    sources were recorded (no Source) is looked up, so the operator's mapping still bills."""
    settings = make_settings(**stamp_values(COLLECT_LOOKBACK_HOURS=1))
    app = FunctionApp(settings, sources=fleet_registry(), clock=SettableClock(NOW))
    app.account.ensure_tables()
    (east,) = [stamp for stamp in settings.stamps() if stamp.source_name == "east"]
    fleet = fleet_from_settings(east)
    listed = fleet.subscriptions(LAST)
    store = SubscriptionStore(app.account)
    store.sync(listed, {})  # as an app from before stamps stored them: no Source
    busy = {record.subscription_id.lower() for record in fleet.usage(LAST)}
    tenant = next(s for s in listed if s.subscription_id.lower() in busy)
    store.set_billing(tenant.subscription_id, "resource-legacy", "plan-legacy")
    app.collect_slice_message(
        base64.b64decode(CollectionSlice("east", LAST, 0, 1).to_message_text())
    )
    entries = {entry.subscription_id: entry for entry in read_hour(app.account, LAST)}
    assert entries[tenant.subscription_id.lower()].billing_resource_id == "resource-legacy"
    stored = store.get(tenant.subscription_id)
    assert stored is not None
    assert stored.source == "east"
    assert stored.billing_resource_id == "resource-legacy"
