"""The commerce client against the real emulator: retries, caps, and billing exactly once."""

from __future__ import annotations

import http.server
import random
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.identity
import pytest
import requests
from azure.core.credentials import AccessToken

from devstack.commerce_emulator import API_VERSION, CommerceEmulator, Fault
from shared.billing.commerce import COMMERCE_POLICY, CommerceClient
from shared.billing.events import EventOutcome, EventStatus, UsageEvent
from shared.billing.tokens import identity_token_provider, static_token_provider
from shared.core.errors import (
    CommerceUnavailableError,
    ConfigurationError,
    FinalRejectionError,
    NotAllowedError,
    TransientError,
)
from shared.core.retry import RetryPolicy
from tests.loopback import LoopbackServer

TOKEN = "s3cr3t-commerce-token-0123456789"
NOW = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
HOUR = datetime(2026, 11, 26, 16, tzinfo=UTC)


class SleepRecorder:
    """Stands in for time.sleep: remembers each requested wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class FakeTime:
    """A monotonic clock that only moves when the client 'sleeps'."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def emulator() -> Iterator[CommerceEmulator]:
    with CommerceEmulator(token=TOKEN, clock=lambda: NOW) as running:
        yield running


@pytest.fixture
def recorder() -> SleepRecorder:
    return SleepRecorder()


def make_client(
    emulator: CommerceEmulator, sleep: Any, *, max_attempts: int = 6, **options: Any
) -> CommerceClient:
    """A client whose waits are recorded by ``sleep``; ``options`` go to CommerceClient, except
    ``max_total_seconds``, which goes to its retry policy."""
    options.setdefault("random", random.Random(7))
    policy = replace(
        COMMERCE_POLICY,
        max_attempts=max_attempts,
        max_total_seconds=options.pop("max_total_seconds", COMMERCE_POLICY.max_total_seconds),
        sleep=sleep,
    )
    return CommerceClient(emulator.base_url, static_token_provider(TOKEN), retry=policy, **options)


def usage(count: int, *, quantity: float = 2.5, hour: datetime = HOUR) -> list[UsageEvent]:
    return [
        UsageEvent(f"res-{i:03d}", "plan-a", f"dim-{i % 4}", quantity + i, hour)
        for i in range(count)
    ]


def assert_billed_once(
    emulator: CommerceEmulator, events: list[UsageEvent], outcomes: list[EventOutcome]
) -> None:
    assert [o.event for o in outcomes] == events
    assert all(
        o.status in (EventStatus.ACCEPTED, EventStatus.DUPLICATE_CONFIRMED) for o in outcomes
    ), [o.status for o in outcomes]
    kept = emulator.accepted_events()
    keys = [(e["resourceId"], e["dimension"], e["effectiveStartTime"]) for e in kept]
    assert len(keys) == len(set(keys)) == len(events)
    by_resource = {e["resourceId"]: e for e in kept}
    for outcome in outcomes:
        accepted = by_resource[outcome.event.resource_id]
        assert accepted["quantity"] == outcome.event.quantity
        assert outcome.usage_event_id == accepted["usageEventId"]


RETRYABLE_FAULTS = [kind for kind in Fault if kind is not Fault.BAD_REQUEST]


@pytest.mark.parametrize("kind", RETRYABLE_FAULTS)
def test_each_fault_is_retried_and_billed_once(
    emulator: CommerceEmulator, recorder: SleepRecorder, kind: Fault
) -> None:
    """Every retryable fault kind ends with each event accepted exactly once."""
    slow = kind is Fault.SLOW
    emulator.fail_next(kind, times=1 if slow else 2, delay=1.0, event_indices=[0, 2])
    client = make_client(emulator, recorder, read_timeout=0.2 if slow else 30, max_attempts=10)
    events = usage(3)
    with client:
        outcomes = client.post_batch(events)
    assert_billed_once(emulator, events, outcomes)
    assert recorder.waits, "a retry must have waited (recorded, not slept)"


def test_accept_then_drop_retry_confirms_the_duplicate(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """Events accepted before a dropped answer come back as DuplicateConfirmed with our quantity."""
    emulator.fail_next(Fault.ACCEPT_THEN_DROP)
    events = usage(2)
    with make_client(emulator, recorder) as client:
        outcomes = client.post_batch(events)
    assert [o.status for o in outcomes] == [EventStatus.DUPLICATE_CONFIRMED] * 2
    assert [o.accepted_quantity for o in outcomes] == [e.quantity for e in events]
    assert_billed_once(emulator, events, outcomes)
    assert emulator.calls == {"batchUsageEvent": 2}


def test_outcomes_count_the_sends_that_carried_each_event(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """An event answered on its only send has sends 1; one re-posted after a slow answer the
    client gave up on has 2 (that first send may still reach the endpoint, as a duplicate,
    after the answer the client keeps), and one re-posted after an Error has 2 as well."""
    with make_client(emulator, recorder, read_timeout=0.2, max_attempts=6) as client:
        (first,) = client.post_batch(usage(1))
        emulator.fail_next(Fault.SLOW, delay=0.6)
        (slow,) = client.post_batch(usage(1, hour=HOUR - timedelta(hours=1)))
        emulator.fail_next(Fault.EVENT_ERROR, event_indices=[1])
        again = client.post_batch(usage(2, hour=HOUR - timedelta(hours=2)))
    assert (first.status, first.sends) == (EventStatus.ACCEPTED, 1)
    assert slow.sends == 2
    assert [o.sends for o in again] == [1, 2]


def test_duplicate_with_other_quantity_is_a_mismatch(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """A Duplicate whose accepted quantity differs from ours is Mismatch, not success."""
    (event,) = usage(1, quantity=10.0)
    earlier: dict[str, Any] = {
        "resourceId": event.resource_id,
        "quantity": 3.0,
        "dimension": event.dimension,
        "effectiveStartTime": "2026-11-26T16:00:00Z",
        "planId": "plan-a",
    }
    requests.post(
        f"{emulator.base_url}/api/usageEvent",
        params={"api-version": API_VERSION},
        json=earlier,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    with make_client(emulator, recorder) as client:
        (outcome,) = client.post_batch([event])
    assert outcome.status is EventStatus.MISMATCH
    assert outcome.accepted_quantity == 3.0
    assert outcome.usage_event_id == emulator.accepted_events()[0]["usageEventId"]


def test_429_sleeps_exactly_retry_after(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """The client waits the Retry-After seconds the 429 named, nothing else."""
    emulator.fail_next(Fault.THROTTLE, retry_after=7)
    with make_client(emulator, recorder) as client:
        outcomes = client.post_batch(usage(1))
    assert recorder.waits == [7.0]
    assert outcomes[0].status is EventStatus.ACCEPTED


def test_attempts_are_capped(emulator: CommerceEmulator, recorder: SleepRecorder) -> None:
    """With 500s forever, the client makes max_attempts calls then raises TransientError."""
    emulator.fail_next(Fault.SERVER_ERROR, times=50)
    with (
        make_client(emulator, recorder, max_attempts=3) as client,
        pytest.raises(TransientError, match="3 attempt") as caught,
    ):
        client.post_batch(usage(2))
    assert isinstance(caught.value, CommerceUnavailableError)
    assert "HTTP 500" in str(caught.value)
    assert emulator.calls == {"batchUsageEvent": 3}
    assert len(recorder.waits) == 2
    assert emulator.accepted_events() == []


def test_total_time_is_capped(emulator: CommerceEmulator) -> None:
    """Waits never carry the call past max_total_seconds, whatever max_attempts allows."""
    fake = FakeTime()
    emulator.fail_next(Fault.SERVER_ERROR, times=1000)
    client = CommerceClient(
        emulator.base_url,
        static_token_provider(TOKEN),
        retry=RetryPolicy(
            max_attempts=1000,
            max_total_seconds=10,
            backoff_base_seconds=1,
            backoff_cap_seconds=4,
            sleep=fake.sleep,
            monotonic=fake.monotonic,
        ),
        random=random.Random(3),
    )
    with client, pytest.raises(CommerceUnavailableError, match="cap"):
        client.post_batch(usage(1))
    assert fake.now <= 10
    assert sum(fake.waits) == fake.now
    assert emulator.calls["batchUsageEvent"] == len(fake.waits) + 1
    assert all(0 <= wait <= 4 for wait in fake.waits)


def test_retry_after_beyond_the_time_cap_is_not_waited(emulator: CommerceEmulator) -> None:
    """A Retry-After longer than the time left raises at once, passing Retry-After on."""
    fake = FakeTime()
    emulator.fail_next(Fault.THROTTLE, retry_after=60)
    client = CommerceClient(
        emulator.base_url,
        static_token_provider(TOKEN),
        retry=replace(
            COMMERCE_POLICY, max_total_seconds=30, sleep=fake.sleep, monotonic=fake.monotonic
        ),
    )
    with client, pytest.raises(CommerceUnavailableError) as caught:
        client.post_batch(usage(1))
    assert fake.waits == []
    assert caught.value.retry_after_seconds == 60


def test_event_error_reposts_only_failing_events(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """Per-event Error statuses make the client re-post just those events."""
    emulator.fail_next(Fault.EVENT_ERROR, event_indices=[1, 3])
    events = usage(5)
    with make_client(emulator, recorder) as client:
        outcomes = client.post_batch(events)
    assert [record.events for record in emulator.call_log()] == [5, 2]
    assert [o.status for o in outcomes] == [EventStatus.ACCEPTED] * 5
    assert_billed_once(emulator, events, outcomes)


def test_exhausted_event_errors_report_settled_outcomes(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """When per-event Errors outlast the budget, the error carries the events already settled."""
    emulator.fail_next(Fault.EVENT_ERROR, times=10, event_indices=[0])
    events = usage(3)
    with (
        make_client(emulator, recorder, max_attempts=2) as client,
        pytest.raises(CommerceUnavailableError) as caught,
    ):
        client.post_batch(events)
    assert {o.event for o in caught.value.settled} == {events[1], events[2]}


def test_whole_batch_400_is_final_rejection(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """A 400 for the whole batch raises FinalRejectionError and is not retried."""
    emulator.fail_next(Fault.BAD_REQUEST)
    with make_client(emulator, recorder) as client, pytest.raises(FinalRejectionError) as caught:
        client.post_batch(usage(2))
    assert caught.value.code == "BadArgument"
    assert emulator.calls == {"batchUsageEvent": 1}
    assert recorder.waits == []


def test_final_event_statuses_are_reported_not_retried(recorder: SleepRecorder) -> None:
    """Expired, InvalidDimension, ResourceNotFound, InvalidQuantity come back as outcomes."""
    with (
        CommerceEmulator(
            token=TOKEN,
            clock=lambda: NOW,
            invalid_dimensions={"bad-dim"},
            unknown_resources={"gone"},
        ) as running,
        make_client(running, recorder) as client,
    ):
        events = [
            UsageEvent("r1", "p", "d", 1.0, HOUR - timedelta(hours=30)),
            UsageEvent("r2", "p", "bad-dim", 1.0, HOUR),
            UsageEvent("gone", "p", "d", 1.0, HOUR),
            UsageEvent("r4", "p", "d", 0.0, HOUR),
        ]
        outcomes = client.post_batch(events)
        assert [o.status for o in outcomes] == [
            EventStatus.EXPIRED,
            EventStatus.INVALID_DIMENSION,
            EventStatus.RESOURCE_NOT_FOUND,
            EventStatus.INVALID_QUANTITY,
        ]
        assert all(o.reason and o.usage_event_id is None for o in outcomes)
        assert running.calls == {"batchUsageEvent": 1}


def test_403_fetches_a_fresh_token_once(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """A 403 makes the client invalidate and re-fetch its token, then succeed."""

    class Rotating:
        def __init__(self) -> None:
            self.tokens = ["stale-token", TOKEN]
            self.invalidated = 0

        def __call__(self) -> str:
            return self.tokens[0]

        def invalidate(self) -> None:
            self.invalidated += 1
            self.tokens.pop(0)

    provider = Rotating()
    with CommerceClient(
        emulator.base_url, provider, retry=replace(COMMERCE_POLICY, sleep=recorder)
    ) as client:
        outcomes = client.post_batch(usage(1))
    assert outcomes[0].status is EventStatus.ACCEPTED
    assert provider.invalidated == 1
    assert recorder.waits == []


def test_token_never_appears_in_errors(emulator: CommerceEmulator, recorder: SleepRecorder) -> None:
    """Exhaustion, final rejection and refusal errors never contain the bearer token."""
    failures: list[BaseException] = []
    emulator.fail_next(Fault.DROP, times=2)
    emulator.fail_next(Fault.BAD_REQUEST)
    with make_client(emulator, recorder, max_attempts=2) as client:
        for _ in range(2):
            with pytest.raises((TransientError, FinalRejectionError)) as caught:
                client.post_batch(usage(1))
            failures.append(caught.value)
    wrong = "wrong-s3cr3t-token-9876543210"
    with (
        CommerceClient(
            emulator.base_url,
            static_token_provider(wrong),
            retry=replace(COMMERCE_POLICY, sleep=recorder),
        ) as refused,
        pytest.raises(NotAllowedError) as caught,
    ):
        refused.post_batch(usage(1))
    failures.append(caught.value)
    for failure in failures:
        text = "".join(traceback.format_exception(failure)) + repr(failure)
        assert TOKEN not in text
        assert wrong not in text


def test_random_faults_over_200_events_bill_each_once(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """A seeded 30% fault plan of every kind over 20 batches bills each of 200 events once."""
    emulator.set_fault_rate(0.3, kinds=RETRYABLE_FAULTS, seed=20261126, retry_after=2, delay=1.0)
    events = [
        UsageEvent(f"res-{i // 4:03d}", "plan-a", f"dim-{i % 4}", 1.0 + i / 8, HOUR)
        for i in range(200)
    ]
    outcomes: list[EventOutcome] = []
    with make_client(
        emulator, recorder, read_timeout=0.3, max_attempts=30, max_total_seconds=600
    ) as client:
        for start in range(0, len(events), 10):
            outcomes.extend(client.post_batch(events[start : start + 10]))
    assert [o.event for o in outcomes] == events
    assert all(
        o.status in (EventStatus.ACCEPTED, EventStatus.DUPLICATE_CONFIRMED) for o in outcomes
    )
    kept = {(e["resourceId"], e["dimension"]): e for e in emulator.accepted_events()}
    assert len(emulator.accepted_events()) == len(kept) == 200
    for outcome in outcomes:
        accepted = kept[(outcome.event.resource_id, outcome.event.dimension)]
        assert accepted["quantity"] == outcome.event.quantity
        assert outcome.usage_event_id == accepted["usageEventId"]
    injected = emulator.injected
    # Each injected fault costs one more call (a slow CI may add timeouts of its own).
    assert emulator.calls["batchUsageEvent"] - 20 >= sum(injected.values()) >= 5, injected


def test_one_client_serves_concurrent_callers_on_kept_connections(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """As the function app shares it: 12 threads post through one client at once. Every
    event is billed once with its own outcome, over no more connections than threads, and
    under faults (dropped connections, 429s, 5xx, per-event errors) each is still billed once."""
    threads = 12

    def round_of(events: list[UsageEvent], client: CommerceClient) -> list[EventOutcome]:
        batches = [events[start : start + 5] for start in range(0, len(events), 5)]
        with ThreadPoolExecutor(threads) as pool:
            return [o for found in pool.map(client.post_batch, batches) for o in found]

    def events_of(round_index: int) -> list[UsageEvent]:
        return [
            UsageEvent(f"res-{round_index}-{i:03d}", "plan-a", f"dim-{i % 4}", 1 + i, HOUR)
            for i in range(120)
        ]

    with make_client(
        emulator,
        recorder,
        pool_size=threads,
        read_timeout=1.0,  # ample for an answer; a slow fault (1.5 s) times out
        max_attempts=30,
        max_total_seconds=600,
    ) as client:
        first = events_of(1)
        outcomes = round_of(first, client)
        assert_billed_once(emulator, first, outcomes)
        second = events_of(2)
        outcomes += round_of(second, client)
        # 48 calls, never more than one connection per thread: kept, not reopened.
        assert emulator.calls["batchUsageEvent"] == 48
        assert 1 <= emulator.connections <= threads
        emulator.set_fault_rate(
            0.3, kinds=RETRYABLE_FAULTS, seed=20261203, retry_after=1, delay=1.5
        )
        third = events_of(3)
        outcomes += round_of(third, client)
    assert_billed_once(emulator, first + second + third, outcomes)
    assert sum(emulator.injected.values()) >= 5


def test_daily_usage_reads_the_days_rows_with_retries(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """daily_usage retries a 500 and a drop, then returns the parsed daily rows of the days
    asked (summed per resource and dimension; the day after is asked for and dropped)."""
    with make_client(emulator, recorder) as client:
        client.post_batch(usage(3))
        client.post_batch(usage(1, quantity=1.0, hour=HOUR - timedelta(hours=2)))
        emulator.fail_next(Fault.SERVER_ERROR)
        emulator.fail_next(Fault.DROP)
        rows = client.daily_usage(HOUR, HOUR).rows
        assert client.daily_usage(HOUR + timedelta(days=1), HOUR + timedelta(days=1)).rows == []
    day = datetime(2026, 11, 26, tzinfo=UTC)
    assert [(r.day, r.resource_id, r.dimension, r.submitted, r.count, r.status) for r in rows] == [
        (day, "res-000", "dim-0", 3.5, 2, "Accepted"),
        (day, "res-001", "dim-1", 3.5, 1, "Accepted"),
        (day, "res-002", "dim-2", 4.5, 1, "Accepted"),
    ]
    assert emulator.calls["usageEvents"] == 4


def test_batch_size_and_key_rules_are_checked_before_sending(
    emulator: CommerceEmulator, recorder: SleepRecorder
) -> None:
    """Empty, oversized and key-colliding batches are ValueErrors and send nothing."""
    (event,) = usage(1)
    with make_client(emulator, recorder) as client:
        with pytest.raises(ValueError, match="1 to 25"):
            client.post_batch([])
        with pytest.raises(ValueError, match="1 to 25"):
            client.post_batch(usage(26))
        with pytest.raises(ValueError, match="sum them"):
            client.post_batch([event, event])
    assert emulator.total_calls == 0


def test_usage_event_must_be_an_aware_hour() -> None:
    """UsageEvent refuses naive and off-the-hour times and normalises to UTC."""
    with pytest.raises(ValueError, match="naive"):
        UsageEvent("r", "p", "d", 1.0, datetime(2026, 11, 26, 16))
    with pytest.raises(ValueError, match="not on the hour"):
        UsageEvent("r", "p", "d", 1.0, HOUR + timedelta(minutes=5))
    from datetime import timezone

    shifted = UsageEvent("r", "p", "d", 1.0, HOUR.astimezone(timezone(timedelta(hours=2))))
    assert shifted.effective_start_time.utcoffset() == timedelta(0)
    assert shifted.key == ("r", "d", HOUR)


def test_identity_provider_caches_until_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The managed-identity provider asks for the metering scope once, again after invalidate."""
    import time

    requested: list[tuple[str, ...]] = []

    class FakeCredential:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def get_token(self, *scopes: str) -> AccessToken:
            requested.append(scopes)
            return AccessToken(f"token-{len(requested)}", int(time.time()) + 3600)

    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", FakeCredential)
    provider = identity_token_provider(client_id="user-assigned-id")
    assert provider() == provider() == "token-1"
    assert requested == [("20e940b3-4c77-4b0b-9a53-9e16a1b010a7/.default",)]
    getattr(provider, "invalidate")()  # noqa: B009 - the optional refresh hook
    assert provider() == "token-2"
    assert "token" not in repr(provider).lower().replace("cachedcredentialtoken", "")


def test_client_secret_needs_tenant_and_client() -> None:
    """A client secret without tenant_id is a ConfigurationError naming no secret."""
    with pytest.raises(ConfigurationError) as caught:
        identity_token_provider(client_id="app", client_secret="very-secret-value")
    assert "very-secret-value" not in str(caught.value)


def test_unexpected_4xx_are_retried_then_surfaced_not_refusals(recorder: SleepRecorder) -> None:
    """413 on a POST and 404 on the read say nothing about the events (a proxy's limit, a
    mistyped base URL): retried like a 5xx, then CommerceUnavailableError naming the status;
    never FinalRejectionError, which would refuse the events for good."""
    seen: list[tuple[str, str]] = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _answer(self, status: int) -> None:
            seen.append((self.command, self.path.split("?")[0]))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = b'{"code": "TooLarge", "message": "refused by a gateway"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self._answer(413)

        def do_GET(self) -> None:
            self._answer(404)

    policy = replace(COMMERCE_POLICY, max_attempts=3, sleep=recorder)
    with (
        LoopbackServer(Refusing) as server,
        CommerceClient(server.base_url, static_token_provider(TOKEN), retry=policy) as client,
    ):
        with pytest.raises(CommerceUnavailableError, match="HTTP 413") as posted:
            client.post_batch(usage(2))
        with pytest.raises(CommerceUnavailableError, match="HTTP 404"):
            client.daily_usage(HOUR, HOUR)
    assert posted.value.settled == ()
    assert seen == [("POST", "/api/batchUsageEvent")] * 3 + [("GET", "/api/usageEvents")] * 3
    assert len(recorder.waits) == 4
