"""Pure parts of billing: work items, packing, outcome -> ledger state, windows, host.json."""

from __future__ import annotations

import argparse
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.host import _HostOptions, strip_line_comments
from ops.reconcile import parse_hour
from shared.billing.commerce import match_results
from shared.billing.daily_sums import (
    DailyRow,
    DayTotal,
    Known,
    Verdict,
    day_totals,
    decide,
    read_rows,
)
from shared.billing.events import EventOutcome, EventStatus, UsageEvent
from shared.billing.ledger import LedgerEntry, LedgerState, event_row_key, ledger_partition
from shared.billing.reporter import COMMERCE_CONNECTIONS, Lookahead, can_send, settlement_for
from shared.billing.work_items import WorkItem, plan_work_items
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.storage.hour_manifest import HourEntry
from tests.app_settings import LOCAL_VALUES

REPO = Path(__file__).resolve().parents[2]
HOUR = datetime(2026, 11, 20, 9, tzinfo=UTC)


def settings(**overrides: str) -> Settings:
    return Settings.from_environ(
        {**LOCAL_VALUES, "AzureWebJobsStorage": "UseDevelopmentStorage=true", **overrides}
    )


def test_work_item_round_trips_as_base64_json() -> None:
    """The message text is base64 of compact JSON with v, hour and the resources."""
    item = WorkItem(HOUR, ("saas-1", "/subscriptions/x/resourceGroups/y"))
    text = base64.b64decode(item.to_message_text()).decode()
    assert json.loads(text) == {
        "v": 1,
        "hour": "2026112009",
        "billingResourceIds": ["saas-1", "/subscriptions/x/resourceGroups/y"],
    }
    assert WorkItem.from_body(text.encode()) == item


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b"[]",
        b'{"v": 2, "hour": "2026112009", "billingResourceIds": ["a"]}',
        b'{"v": 1, "hour": "2026-11-20", "billingResourceIds": ["a"]}',
        b'{"v": 1, "hour": "2026112009", "billingResourceIds": []}',
        b'{"v": 1, "hour": "2026112009", "billingResourceIds": [""]}',
    ],
)
def test_malformed_work_items_are_bad_input(body: bytes) -> None:
    """Anything but a v1 item with an hour key and resource ids is BadInputError."""
    with pytest.raises(BadInputError):
        WorkItem.from_body(body)


def test_plan_adds_resources_with_usage_waiting_to_be_carried() -> None:
    """A resource listed in the carry index gets an item even with no usage in the hour."""
    config = settings()
    entries = [HourEntry("t1", 1, 0, "saas-a", "p")]
    items = plan_work_items(config, HOUR, entries, ["saas-quiet", "saas-a"])
    assert [item.billing_resource_ids for item in items] == [("saas-a", "saas-quiet")]
    assert plan_work_items(config, HOUR, [], ["saas-quiet"]) == [WorkItem(HOUR, ("saas-quiet",))]


def test_plan_packs_whole_resources_up_to_the_subscription_limit() -> None:
    """Resources are never split; small ones share an item; a big one goes alone; resources
    come in the order of their summary digests (big 48c4.., small-a 9b1c..,
    registration-local e8a9.., small-b fa92..)."""
    config = settings(REPORT_SUBSCRIPTIONS_PER_MESSAGE="3")
    entries = [HourEntry(f"s{i}", 1, 0, "big", "p") for i in range(5)]
    entries += [HourEntry("t1", 1, 0, "small-a", "p"), HourEntry("t2", 1, 0, "small-b", "p")]
    entries += [HourEntry("t3", 1, 0), HourEntry("t4", 1, 0)]  # unmapped: the default
    items = plan_work_items(config, HOUR, entries)
    assert [item.billing_resource_ids for item in items] == [
        ("big",),
        ("small-a", "registration-local"),
        ("small-b",),
    ]


def _entry() -> LedgerEntry:
    return LedgerEntry("r", "p", "d", HOUR, LedgerState.PENDING, 5.0, 5.0, etag="e")


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (EventStatus.ACCEPTED, LedgerState.ACCEPTED),
        (EventStatus.DUPLICATE_CONFIRMED, LedgerState.DUPLICATE_CONFIRMED),
        (EventStatus.MISMATCH, LedgerState.MISMATCH),
        (EventStatus.INVALID_DIMENSION, LedgerState.REJECTED),
        (EventStatus.RESOURCE_NOT_FOUND, LedgerState.REJECTED),
        (EventStatus.UNKNOWN, LedgerState.REJECTED),
        (EventStatus.EXPIRED, None),
        (EventStatus.DUPLICATE, None),
        (EventStatus.ERROR, None),
    ],
)
def test_outcome_to_ledger_state(status: EventStatus, state: LedgerState | None) -> None:
    """Final statuses settle; Expired/Duplicate-without-quantity/Error stay undecided."""
    event = UsageEvent("r", "p", "d", 5.0, HOUR)
    settlement = settlement_for(_entry(), EventOutcome(event, status, reason=status.value))
    assert (settlement.state if settlement else None) == state
    if state is LedgerState.REJECTED:
        assert settlement is not None
        assert settlement.fields["Reason"] == status.value


def test_send_window_keeps_a_margin_before_the_endpoint_expires_an_hour() -> None:
    """An hour is sent only while more than 5 minutes remain of its 24-hour window."""
    assert can_send(HOUR, HOUR + timedelta(hours=23, minutes=55))
    assert not can_send(HOUR, HOUR + timedelta(hours=23, minutes=55, seconds=1))


def test_ledger_keys_are_safe_and_ordered_by_hour() -> None:
    """Partition hides the resource id's slashes; row keys sort by hour; bad dimensions fail."""
    assert ledger_partition("/subscriptions/a/b").isalnum()
    assert event_row_key(HOUR, "azs-x") < event_row_key(HOUR + timedelta(hours=1), "azs-a")
    with pytest.raises(ValueError, match="table key"):
        event_row_key(HOUR, "a/b")
    assert LedgerState.CARRIED_FORWARD.final
    assert not LedgerState.EXPIRED.final
    assert not LedgerState.REJECTED.billed
    # Unresolved may have been billed: never posted again, never carried, not counted billed.
    assert LedgerState.UNRESOLVED.final
    assert not LedgerState.UNRESOLVED.billed


def test_host_json_comments_are_stripped_outside_strings() -> None:
    """// starts a comment only outside strings; line breaks are kept."""
    text = '{"url": "https://x//y", // note\n "q": "a\\"//b"}'
    assert json.loads(strip_line_comments(text)) == {"url": "https://x//y", "q": 'a"//b'}
    assert strip_line_comments("// c\n{}").count("\n") == 1


def test_repo_host_json_sets_the_queue_settings_deliberately() -> None:
    """The real host.json (with comments) loads; the queue settings and routePrefix hold."""
    options = _HostOptions.load(REPO / "host.json")
    assert options.route_prefix == ""
    queues = options.queues
    assert (queues.batch_size, queues.threshold, queues.max_dequeue_count) == (8, 4, 5)
    # The app's one commerce client keeps a connection for every item a worker runs at once.
    assert queues.batch_size + queues.threshold == COMMERCE_CONNECTIONS
    assert queues.visibility_timeout == 300
    assert queues.message_encoding == "base64"
    assert "//" in (REPO / "host.json").read_text()


@pytest.mark.parametrize(
    ("text", "hour"),
    [
        ("2026-11-20T09", HOUR),
        ("2026112009", HOUR),
        ("2026-11-20T09:00Z", HOUR),
        ("2026-11-20", HOUR.replace(hour=0)),
    ],
)
def test_ops_hour_arguments(text: str, hour: datetime) -> None:
    """Operators may spell an hour several ways; all mean a UTC hour."""
    assert parse_hour(text) == hour


def test_ops_hour_argument_off_the_hour_is_refused() -> None:
    """Half past is not a reported hour."""
    with pytest.raises(argparse.ArgumentTypeError):
        parse_hour("2026-11-20T09:30")


def settled(submitted: float, count: int) -> DayTotal:
    return DayTotal(submitted, submitted, count, frozenset({"Accepted"}))


A, B, C = (HOUR + timedelta(hours=n) for n in range(3))


@pytest.mark.parametrize(
    ("total", "accepted", "unknown", "expected"),
    [
        # Nothing at the endpoint that day: no unknown event was accepted.
        (None, [], {A: 2.0, B: 3.0}, {A: "not-accepted", B: "not-accepted"}),
        # One unknown event; the day holds it besides the known one.
        (settled(7.0, 2), [5.0], {A: 2.0}, {A: "accepted"}),
        (settled(5.0, 1), [5.0], {A: 2.0}, {A: "not-accepted"}),
        # Two unknown events of different quantities: the sums tell which one.
        (settled(8.0, 2), [5.0], {A: 2.0, B: 3.0}, {A: "not-accepted", B: "accepted"}),
        (settled(10.0, 3), [5.0], {A: 2.0, B: 3.0}, {A: "accepted", B: "accepted"}),
        # Two of the same quantity, one accepted: the sums cannot tell which.
        (settled(7.0, 2), [5.0], {A: 2.0, B: 2.0}, {A: "unknown", B: "unknown"}),
        # ... but a third, of another quantity, is still told apart.
        (
            settled(10.0, 3),
            [5.0],
            {A: 2.0, B: 2.0, C: 3.0},
            {A: "unknown", B: "unknown", C: "accepted"},
        ),
        # Counts or sums no combination explains: nothing is decided.
        (settled(7.5, 2), [5.0], {A: 2.0, B: 3.0}, {A: "unknown", B: "unknown"}),
        (settled(5.0, 0), [5.0], {A: 2.0}, {A: "unknown"}),
        # Not processed yet, or processing disagrees: nothing is decided.
        (DayTotal(7.0, 0.0, 2, frozenset({"Submitted"})), [5.0], {A: 2.0}, {A: "unknown"}),
        (DayTotal(7.0, 6.0, 2, frozenset({"Mismatch"})), [5.0], {A: 2.0}, {A: "unknown"}),
    ],
)
def test_daily_sums_decide_only_what_the_arithmetic_proves(
    total: DayTotal | None,
    accepted: list[float],
    unknown: dict[datetime, float],
    expected: dict[datetime, str],
) -> None:
    """An unknown event is accepted when every fitting combination holds it, not accepted
    when none does, and undecided otherwise (equal quantities, Submitted, Mismatch, ...)."""
    verdicts, why = decide(total, [Known(q, q) for q in accepted], unknown)
    assert {key: verdict.value for key, verdict in verdicts.items()} == expected
    assert why


def test_daily_sums_known_billed_event_narrows_the_combinations() -> None:
    """A Duplicate without its quantity is held by the endpoint: only combinations holding
    it fit, which can decide the other unknown events of the day."""
    verdicts, _ = decide(settled(7.0, 2), [Known(5.0, 5.0)], {A: 2.0, B: 2.0}, known_billed=[A])
    assert verdicts == {A: Verdict.ACCEPTED, B: Verdict.NOT_ACCEPTED}


@pytest.mark.parametrize(
    ("total", "shown", "unknown", "expected"),
    [
        # Known 5.0 was sent twice (Duplicate). Counting duplicates, the day (5+5+2, 3) holds
        # A; counting accepted events only it cannot be (3 events, one unknown): A accepted.
        (settled(12.0, 3), [Known(5.0, 5.0, duplicated=True)], {A: 2.0}, {A: "accepted"}),
        # The day (8+8, 2): A of 8.0 accepted (accepted only), or a second send of the known
        # 8.0 (duplicates too): the readings disagree, so it cannot be told.
        (settled(16.0, 2), [Known(8.0, 8.0, duplicated=True)], {A: 8.0}, {A: "unknown"}),
        (settled(16.0, 2), [Known(8.0, 8.0)], {A: 8.0}, {A: "unknown"}),
        # Known to have been sent once (its Accepted answer was the accepted send): no
        # duplicate of it can be counted, so only A explains the second 8.0.
        (settled(16.0, 2), [Known(8.0, 8.0, once=True)], {A: 8.0}, {A: "accepted"}),
        # ... where accepted-only would have "proved" B and C accepted and A not (5+4+6 = 15
        # of 3): A and a duplicate of the known 5.0 explain it as well. Nothing is decided.
        (
            settled(15.0, 3),
            [Known(5.0, 5.0, duplicated=True)],
            {A: 5.0, B: 4.0, C: 6.0},
            {A: "unknown", B: "unknown", C: "unknown"},
        ),
        # A sum no reading explains stays undecided; nothing at all proves A absent.
        (settled(9.5, 2), [Known(5.0, 5.0)], {A: 2.0}, {A: "unknown"}),
        (None, [], {A: 2.0}, {A: "not-accepted"}),
    ],
)
def test_daily_sums_hold_under_both_counting_readings(
    total: DayTotal | None,
    shown: list[Known],
    unknown: dict[datetime, float],
    expected: dict[datetime, str],
) -> None:
    """The docs do not say whether a day's count and sum include duplicates: a verdict is
    given only when it holds whether they do or not (a known Duplicate means one more send
    where they do)."""
    verdicts, why = decide(total, shown, unknown)
    assert {key: verdict.value for key, verdict in verdicts.items()} == expected, why


def test_daily_sums_events_held_but_maybe_not_shown_yet_prove_nothing_absent() -> None:
    """A held event accepted within the processing horizon may be missing from the row: the
    row (one event, 3.0) is then explained by it or by A, so A is not declared absent;
    once it is surely shown, the same row proves A absent."""
    recent = Known(3.0, 3.0)
    verdicts, _ = decide(settled(3.0, 1), [], {A: 3.0}, maybe_shown=[recent])
    assert verdicts == {A: Verdict.UNKNOWN}
    verdicts, _ = decide(settled(3.0, 1), [recent], {A: 3.0})
    assert verdicts == {A: Verdict.NOT_ACCEPTED}
    # A row that does not show the recent one yet, but shows A: A accepted either way.
    verdicts, _ = decide(settled(2.0, 1), [], {A: 2.0}, maybe_shown=[recent])
    assert verdicts == {A: Verdict.ACCEPTED}


def test_daily_rows_parse_and_sum_per_resource_dimension_day() -> None:
    """Rows of several plans sum per (resource, dimension, day); TestHeaders and DryRun rows
    are not billing; a row missing a documented field is refused."""
    base = {
        "usageDate": "2026-11-20T00:00:00Z",
        "usageResourceId": "r",
        "dimension": "d",
        "planId": "p1",
        "submittedQuantity": 2.5,
        "processedQuantity": 2.5,
        "submittedCount": 2,
        "reconStatus": "Accepted",
    }
    rows = [
        DailyRow.from_wire(base),
        DailyRow.from_wire({**base, "planId": "p2", "submittedQuantity": 1.0, "submittedCount": 1}),
        DailyRow.from_wire({**base, "reconStatus": "DryRun", "submittedQuantity": 9.0}),
    ]
    ((key, total),) = day_totals(rows).items()
    assert key == ("r", "d", HOUR.replace(hour=0))
    assert (total.submitted, total.count) == (3.5, 3)
    for missing in ("usageResourceId", "submittedCount", "submittedQuantity", "usageDate"):
        with pytest.raises(ValueError, match=missing):
            DailyRow.from_wire({k: v for k, v in base.items() if k != missing})


@pytest.mark.parametrize("ahead", [0, 1, 2, 9])
def test_lookahead_yields_in_order_with_a_bounded_number_submitted(ahead: int) -> None:
    """Opens are submitted at most ``ahead`` beyond the one awaited, and come back in order."""
    keys = [f"resource-{index}" for index in range(6)]
    started: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        lookahead = Lookahead(pool, lambda key: started.append(key) or key.upper(), keys, ahead)
        seen = []
        for key, found in lookahead:
            seen.append((key, found))
            assert len(lookahead.submitted) == min(len(seen) + ahead, len(keys))
    assert seen == [(key, key.upper()) for key in keys]
    assert sorted(started) == keys


def test_answers_match_events_without_case_then_by_position() -> None:
    """An answer element belongs to the event its echo names, resource and dimension
    compared without case; an event no echo names takes the element at its own position
    only when the answer has one element per event and that element names no other event."""
    a, b, c = (UsageEvent(r, "p", "d", 1.0, HOUR) for r in ("res-a", "res-b", "res-c"))

    def echo(resource: str | None, when: str = "2026-11-20T09:00:00.0000000Z") -> dict:
        return {"resourceId": resource, "dimension": "D", "effectiveStartTime": when}

    # Reordered echoes in another case: by key, not by position.
    answer = [echo("RES-C"), echo("Res-A"), echo("res-B")]
    assert match_results([a, b, c], answer) == {0: answer[1], 1: answer[2], 2: answer[0]}
    # An echo that names nothing of the request: its position, when counts agree ...
    answer = [echo("RES-A"), echo(None), echo("res-c")]
    assert match_results([a, b, c], answer) == {0: answer[0], 1: answer[1], 2: answer[2]}
    # ... but never an element that names another event, and never with counts that differ.
    answer = [echo("res-a"), echo("res-a"), echo("res-c")]
    assert match_results([a, b, c], answer) == {0: answer[0], 2: answer[2]}
    assert match_results([a, b, c], [echo("res-a"), echo("zzz")]) == {0: echo("res-a")}
    answer = [echo("res-b"), echo("zzz"), echo("res-c")]
    assert match_results([a, b, c], answer) == {1: answer[0], 2: answer[2]}


def test_a_daily_read_skips_rows_it_does_not_need_and_names_those_it_cannot_read() -> None:
    """Rows of pairs not needed are skipped unparsed; a needed row that cannot be parsed, or
    one whose pair cannot be read, makes its pair (or every pair) undecidable by that read;
    rows of other days are dropped; pairs compare without case."""
    day = HOUR.replace(hour=0)
    good = {
        "usageDate": "2026-11-20T00:00:00Z",
        "usageResourceId": "RES-A",
        "dimension": "d",
        "submittedQuantity": 2.0,
        "processedQuantity": 2.0,
        "submittedCount": 1,
        "reconStatus": "Accepted",
    }
    broken_b = {**good, "usageResourceId": "res-b", "submittedCount": "two"}
    next_day = {**good, "usageDate": "2026-11-21T00:00:00Z", "submittedCount": None}
    read = read_rows([good, broken_b, next_day], day, day, needed=[("res-a", "D")])
    assert [(row.resource_id, row.count) for row in read.rows] == [("RES-A", 1)]
    assert read.unreadable == {}
    assert read.blind_to("res-a", "d") is None
    read = read_rows([good, broken_b], day, day, needed=[("res-a", "d"), ("Res-B", "d")])
    assert read.blind_to("res-b", "D") is not None
    assert read.blind_to("res-a", "d") is None
    anonymous = {**good, "usageResourceId": None}
    read = read_rows([good, anonymous], day, day, needed=[("res-a", "d")])
    assert read.blind_to("res-a", "d") is not None  # the unreadable row may be res-a's
    assert set(read_rows([good, broken_b], day, day).unreadable) == {("res-b", "d")}
