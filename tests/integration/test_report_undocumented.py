"""Billing decisions that hold whatever the metering service leaves undocumented (issue 30):
one test per case, each against the commerce emulator in the mode that answers what the docs
leave open the inconvenient way (devstack/commerce_emulator.py, "Modes"), and each failing
on the code before these changes.

1. daily rows that lag what was accepted (absent, smaller, Submitted for long);
2. ids echoed in another case;
3. ``submittedCount`` / ``submittedQuantity`` that also count duplicates;
4. a whole-batch 400 for one invalid event, and 404s from a mistyped endpoint;
5. cancelled resources (``ResourceNotActive`` for hours after the cancellation);
6. daily reads: an unparsable row of another resource, rows in pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator, Fault
from shared.billing.events import EventOutcome
from shared.billing.ledger import LedgerState
from shared.billing.reconcile import reconcile
from shared.billing.reporter import report_message
from shared.core.config import Settings
from shared.core.errors import TransientError
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from tests.integration.test_report_ledger import BASE, WINDOWS, two_tenant_source
from tests.integration.test_report_support import (
    HOUR,
    PLAN,
    T0,
    Killed,
    accepted_by_key,
    collect,
    drain,
    fast_client,
    ledger_entries,
)
from tests.scripted_source import TENANT_B, ScriptedSource, vm_record

# Billing resources as the endpoint knows them: GUIDs (SaaS subscription ids), lower-case.
RESOURCE_A = "7a1c0b3e-5d2f-4e6a-9b8c-0d1e2f3a4b5c"
RESOURCE_B = "c4d5e6f7-a8b9-4c0d-8e1f-2a3b4c5d6e7f"
MINUTES_10 = timedelta(minutes=10)


def kill(outcomes: Sequence[EventOutcome]) -> None:
    raise Killed


def prepared(
    make_settings: Any, hours: list[datetime], **settings: Any
) -> tuple[Settings, StorageAccount, ScriptedSource]:
    """TENANT_A billed to RESOURCE_A (the default), TENANT_B to RESOURCE_B: two Windows VM
    dimensions for A, one for B, every hour."""
    config = make_settings(BILLING_DEFAULT_RESOURCE_ID=RESOURCE_A, **settings)
    account = StorageAccount(config)
    account.ensure_tables()
    source = two_tenant_source(hours)
    store = SubscriptionStore(account)
    store.sync(source.subscriptions(hours[0]), store.all())
    store.set_billing(TENANT_B, RESOURCE_B, PLAN)
    return config, account, source


def report_hours(
    settings: Settings, source: ScriptedSource, clock: SettableClock, client: Any, hours: list
) -> None:
    """Collect and bill each hour ten minutes after it ends."""
    for hour in hours:
        clock.set(hour + HOUR + MINUTES_10)
        collect(settings, source, [hour])
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)


# --- 1. daily rows that lag what was accepted ----------------------------------------------


def test_a_row_that_does_not_show_an_accepted_event_yet_proves_nothing_before_the_horizon(
    make_settings,
) -> None:
    """Rows appear 30 hours after acceptance here. An accepted event whose answer was lost
    is retried 24 h 50 min after its hour (outside the window): its day has no row yet,
    which before the processing horizon proves nothing, so the item waits (here: raises to
    be retried) instead of carrying the usage forward (billed twice); once the row shows
    the event, it is settled billed."""
    hours = [T0, T0 + 26 * HOUR]
    settings, _account, source = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, row_delay=timedelta(hours=30)) as emulator,
        fast_client(emulator) as client,
    ):
        collect(settings, source, [T0])
        (lost,) = drain(settings)
        with pytest.raises(Killed):
            report_message(lost, settings, clock=clock, client=client, after_post=kill)
        clock.set(T0 + 25 * HOUR)
        with pytest.raises(TransientError, match="2026-11-22T09:15Z"):  # + the 24 h horizon
            report_message(lost, settings, clock=clock, client=client)
        report_hours(settings, source, clock, client, [T0 + 26 * HOUR])  # a later event
        clock.set(T0 + 49 * HOUR)
        assert report_message(lost, settings, clock=clock, client=client).states == {
            "duplicate-confirmed": 3
        }
        accepted = accepted_by_key(emulator)
    assert sorted(accepted[key]["quantity"] for key in accepted if key[2] == T0 + 26 * HOUR) == [
        2.5,
        4.0,
        9.0,
    ]  # only that hour's own usage: nothing was carried into it


def test_a_day_processed_slowly_is_waited_for_not_given_up(make_settings) -> None:
    """The day's rows stay Submitted for 55 hours. An event posted but never accepted (the
    endpoint failed) is retried 48 hours on: its day cannot tell yet, and it is not given
    up (unresolved, never carried: usage lost) but waits; once the day is processed its
    absence is proved and it is carried into a later event, billed once."""
    late = T0 + 57 * HOUR
    hours = [T0, T0 + HOUR, late]
    settings, account, source = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, processing_delay=timedelta(hours=55)) as emulator,
        fast_client(emulator, max_attempts=2) as client,
    ):
        report_hours(settings, source, clock, client, [T0])
        clock.set(T0 + 2 * HOUR + MINUTES_10)
        collect(settings, source, [T0 + HOUR])
        (never,) = drain(settings)
        emulator.fail_next(Fault.SERVER_ERROR, times=2)  # posted, never accepted
        with pytest.raises(TransientError):
            report_message(never, settings, clock=clock, client=client)
        clock.set(T0 + 49 * HOUR + MINUTES_10)  # 48 h after the hour: still Submitted
        with pytest.raises(TransientError, match="neither proved"):
            report_message(never, settings, clock=clock, client=client)
        clock.set(T0 + 57 * HOUR)  # processed: the day holds only hour T0's events
        assert report_message(never, settings, clock=clock, client=client).states == {"expired": 3}
        report_hours(settings, source, clock, client, [late])
        reconciled = reconcile(account, client, T0, T0 + HOUR)  # late's day: not processed
        accepted = accepted_by_key(emulator)
    assert accepted[(RESOURCE_A, WINDOWS, late)]["quantity"] == 9.0 + 10.0  # own + carried
    assert accepted[(RESOURCE_B, WINDOWS, late)]["quantity"] == 2.5 + 2.5
    assert not [key for key in accepted if key[2] == T0 + HOUR]
    assert reconciled.ok, [d.line() for d in reconciled.differences]


# --- 2. ids echoed in another case ---------------------------------------------------------


def test_ids_echoed_in_another_case_still_match_answers_and_daily_rows(make_settings) -> None:
    """The endpoint echoes our GUIDs upper-case (and times with seven fractional digits):
    each event's answer is still found at once (one call, no re-post), and an answer lost
    and retried after the window is still proved accepted from the day's rows (never
    carried forward: billed once); reconciliation matches the rows to our resources."""
    hours = [T0, T0 + HOUR]
    settings, account, source = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, echo_other_case=True) as emulator,
        fast_client(emulator, max_attempts=3) as client,
    ):
        collect(settings, source, [T0])
        (first,) = drain(settings)
        result = report_message(first, settings, clock=clock, client=client)
        assert (result.states, emulator.calls) == ({"accepted": 3}, {"batchUsageEvent": 1})

        clock.set(T0 + 2 * HOUR + MINUTES_10)
        collect(settings, source, [T0 + HOUR])
        (lost,) = drain(settings)
        with pytest.raises(Killed):  # accepted; the answer never reaches the ledger
            report_message(lost, settings, clock=clock, client=client, after_post=kill)
        clock.set(T0 + 31 * HOUR)  # retried after the window: only the daily rows can tell
        assert report_message(lost, settings, clock=clock, client=client).states == {
            "duplicate-confirmed": 3
        }
        reconciled = reconcile(account, client, T0, T0 + HOUR)
        accepted = accepted_by_key(emulator)

    ledger = ledger_entries(account, {RESOURCE_A, RESOURCE_B}, T0, T0 + HOUR)
    assert {key: entry.state for key, entry in ledger.items()} == {
        (RESOURCE_A, WINDOWS, T0): LedgerState.ACCEPTED,
        (RESOURCE_A, BASE, T0): LedgerState.ACCEPTED,
        (RESOURCE_B, WINDOWS, T0): LedgerState.ACCEPTED,
        (RESOURCE_A, WINDOWS, T0 + HOUR): LedgerState.DUPLICATE_CONFIRMED,
        (RESOURCE_A, BASE, T0 + HOUR): LedgerState.DUPLICATE_CONFIRMED,
        (RESOURCE_B, WINDOWS, T0 + HOUR): LedgerState.DUPLICATE_CONFIRMED,
    }
    # Accepted on the answer to their only send: no duplicate of them can ever be counted.
    assert [key[2] for key, entry in ledger.items() if entry.sent_once] == [T0] * 3
    assert len(accepted) == 6
    assert reconciled.ok, [d.line() for d in reconciled.differences]


# --- 3. counts that may include duplicates ---------------------------------------------------


def test_a_day_that_counts_duplicates_never_proves_an_unsent_event_billed(
    make_settings,
) -> None:
    """The endpoint counts duplicates in the day's rows. Hour T0 was accepted, its answer
    lost, and re-sent (Duplicate); hour T0+1 was posted but never accepted. Where T0+1 has
    the same quantity as T0 (4.0, 2.5), "one more event" of that quantity is T0+1 accepted
    or T0's duplicate: it is never recorded billed (that would lose it), but named
    unresolved once its day is final; where it differs (9.0 against 8.0), the sums prove it
    absent, and it is carried forward."""
    hours = [T0, T0 + HOUR]
    settings, account, source = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, count_submissions=True) as emulator,
        fast_client(emulator, max_attempts=2) as client,
    ):
        collect(settings, source, [T0])
        (first,) = drain(settings)
        with pytest.raises(Killed):  # accepted, answer lost ...
            report_message(first, settings, clock=clock, client=client, after_post=kill)
        assert report_message(first, settings, clock=clock, client=client).states == {
            "duplicate-confirmed": 3  # ... and re-sent: a second submission of each
        }
        clock.set(T0 + 2 * HOUR + MINUTES_10)
        collect(settings, source, [T0 + HOUR])
        (second,) = drain(settings)
        emulator.fail_next(Fault.SERVER_ERROR, times=2)  # posted, never accepted
        with pytest.raises(TransientError):
            report_message(second, settings, clock=clock, client=client)
        clock.set(T0 - 9 * HOUR + timedelta(hours=71, minutes=16))  # the day is final
        result = report_message(second, settings, clock=clock, client=client)
        reconciled = reconcile(account, client, T0, T0 + HOUR)
        accepted = accepted_by_key(emulator)

    assert result.states == {"expired": 1, "unresolved": 2}
    ledger = ledger_entries(account, {RESOURCE_A, RESOURCE_B}, T0 + HOUR, T0 + HOUR)
    assert {key[:2]: entry.state for key, entry in ledger.items()} == {
        (RESOURCE_A, WINDOWS): LedgerState.EXPIRED,
        (RESOURCE_A, BASE): LedgerState.UNRESOLVED,
        (RESOURCE_B, WINDOWS): LedgerState.UNRESOLVED,
    }
    assert not [key for key in accepted if key[2] == T0 + HOUR]
    kinds = sorted((d.kind, d.resource_id, d.dimension) for d in reconciled.differences)
    assert kinds == [
        ("awaiting-carry", RESOURCE_A, WINDOWS),
        ("unresolved", RESOURCE_A, BASE),
        ("unresolved", RESOURCE_B, WINDOWS),
    ]


# --- 4. a whole-batch 400 for one invalid event; a 404 from a mistyped endpoint --------------


def test_one_invalid_event_in_a_batch_refused_whole_is_the_only_one_refused(
    make_settings,
) -> None:
    """The endpoint refuses the whole batch (400) because one event's dimension is not in
    the plan: the batch is split until that event is alone, and only it is rejected; the
    other two are billed, and reconciliation names the rejected one alone."""
    settings, account, source = prepared(make_settings, [T0])
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, refuse_whole_batch=True, invalid_dimensions=[BASE]) as (
            emulator
        ),
        fast_client(emulator) as client,
    ):
        collect(settings, source, [T0])
        (body,) = drain(settings)
        result = report_message(body, settings, clock=clock, client=client)
        reconciled = reconcile(account, client, T0, T0)
        accepted = accepted_by_key(emulator)
    assert result.states == {"accepted": 2, "rejected": 1}
    assert result.split >= 1
    assert set(accepted) == {(RESOURCE_A, WINDOWS, T0), (RESOURCE_B, WINDOWS, T0)}
    rejected = ledger_entries(account, {RESOURCE_A}, T0, T0)[(RESOURCE_A, BASE, T0)]
    assert (rejected.state, rejected.reason) == (LedgerState.REJECTED, "BadArgument")
    assert "InvalidDimension" in (rejected.message or "")
    assert [(d.kind, d.resource_id, d.dimension) for d in reconciled.differences] == [
        ("rejected", RESOURCE_A, BASE)
    ]


def test_a_404_from_a_mistyped_endpoint_refuses_nothing_and_is_surfaced(make_settings) -> None:
    """A base URL with a wrong path answers 404: not the endpoint's verdict on the events.
    The delivery fails (retried, then surfaced by the host) and the events stay pending;
    once the URL is right, the redelivery bills them."""
    settings, account, source = prepared(make_settings, [T0])
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with CommerceEmulator(clock=clock) as emulator:
        collect(settings, source, [T0])
        (body,) = drain(settings)
        mistyped = fast_client(emulator, max_attempts=3, base_url=emulator.base_url + "/meter")
        with mistyped, pytest.raises(TransientError, match="HTTP 404"):
            report_message(body, settings, clock=clock, client=mistyped)
        pending = ledger_entries(account, {RESOURCE_A, RESOURCE_B}, T0, T0)
        assert {entry.state for entry in pending.values()} == {LedgerState.PENDING}
        with fast_client(emulator) as client:
            result = report_message(body, settings, clock=clock, client=client)
    assert result.states == {"accepted": 3}


# --- 5. cancelled resources ----------------------------------------------------------------


def test_a_cancelled_resources_late_usage_is_sent_with_its_own_hour(make_settings) -> None:
    """RESOURCE_B is cancelled from hour T0+2 on. Hour T0+2 reports its own usage (2.5) and
    usage of hour T0+1 that came late (3.0): the endpoint refuses the event of T0+2
    (ResourceNotActive), but accepts usage of hours before the cancellation sent with that
    hour. The late part goes out as the event of hour T0+1 (free: nothing else of B was
    reported then) and is billed; only the 2.5 of hour T0+2 is refused, and reconciliation
    names that, and nothing else."""
    hours = [T0, T0 + HOUR, T0 + 2 * HOUR]
    settings, account, source = prepared(make_settings, hours)
    source.by_hour[T0 + HOUR] = [
        r for r in source.by_hour[T0 + HOUR] if r.subscription_id != TENANT_B
    ]
    source.by_hour[T0 + 2 * HOUR].append(
        vm_record(TENANT_B, T0 + HOUR, name="b", quantity=3.0)  # late: of hour T0+1
    )
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, cancelled={RESOURCE_B: T0 + 2 * HOUR}) as emulator,
        fast_client(emulator) as client,
    ):
        report_hours(settings, source, clock, client, hours)
        reconciled = reconcile(account, client, T0, T0 + 2 * HOUR)
        accepted = accepted_by_key(emulator)
    assert {key[2]: event["quantity"] for key, event in accepted.items() if key[0] == RESOURCE_B} \
        == {T0: 2.5, T0 + HOUR: 3.0}  # fmt: skip
    ledger = ledger_entries(account, {RESOURCE_B}, T0, T0 + 2 * HOUR)
    refused = ledger[(RESOURCE_B, WINDOWS, T0 + 2 * HOUR)]
    assert (refused.state, refused.reason, refused.refused) == (
        LedgerState.REJECTED,
        "ResourceNotActive",
        2.5,
    )
    sent = ledger[(RESOURCE_B, WINDOWS, T0 + HOUR)]
    assert (sent.state, sent.quantity, sent.own_quantity) == (LedgerState.ACCEPTED, 3.0, 0.0)
    assert [(d.kind, d.resource_id, d.hour) for d in reconciled.differences] == [
        ("rejected", RESOURCE_B, T0 + 2 * HOUR)
    ]
    assert "2.5 of 5.5 refused" in reconciled.differences[0].detail


def test_a_crash_while_sending_a_cancelled_resources_usage_is_finished_by_the_retry(
    make_settings,
) -> None:
    """The process dies after the endpoint answered the part sent with its usage hour, before
    the ledger heard: the redelivery finds the refused event's recorded parts, posts the
    part again (Duplicate: billed once) and records the refusal, as one clean run would."""
    hours = [T0, T0 + HOUR, T0 + 2 * HOUR]
    settings, account, source = prepared(make_settings, hours)
    source.by_hour[T0 + HOUR] = [
        r for r in source.by_hour[T0 + HOUR] if r.subscription_id != TENANT_B
    ]
    source.by_hour[T0 + 2 * HOUR].append(vm_record(TENANT_B, T0 + HOUR, name="b", quantity=3.0))
    posts: list[int] = []

    def die_at_the_second_post(outcomes: Sequence[EventOutcome]) -> None:
        posts.append(len(outcomes))
        if len(posts) == 2:
            raise Killed

    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, cancelled={RESOURCE_B: T0 + 2 * HOUR}) as emulator,
        fast_client(emulator) as client,
    ):
        report_hours(settings, source, clock, client, hours[:2])
        clock.set(T0 + 3 * HOUR + MINUTES_10)
        collect(settings, source, [T0 + 2 * HOUR])
        (body,) = drain(settings)
        with pytest.raises(Killed):
            report_message(
                body, settings, clock=clock, client=client, after_post=die_at_the_second_post
            )
        assert ledger_entries(account, {RESOURCE_B}, T0 + HOUR, T0 + HOUR)[
            (RESOURCE_B, WINDOWS, T0 + HOUR)
        ].state is LedgerState.PENDING  # fmt: skip
        result = report_message(body, settings, clock=clock, client=client)
        accepted = accepted_by_key(emulator)
    assert result.states == {"duplicate-confirmed": 1, "rejected": 1}
    assert accepted[(RESOURCE_B, WINDOWS, T0 + HOUR)]["quantity"] == 3.0
    ledger = ledger_entries(account, {RESOURCE_B}, T0, T0 + 2 * HOUR)
    assert ledger[(RESOURCE_B, WINDOWS, T0 + 2 * HOUR)].refused == 2.5


# --- 6. daily reads: rows of other resources, pages -------------------------------------------


def test_a_day_read_in_pages_with_an_unreadable_row_of_another_resource_still_decides(
    make_settings,
) -> None:
    """The lost answer's day comes back one row a page, linked by nextLink, with a row of
    another resource this client cannot parse: every page is read, the unreadable row is
    not needed and is skipped, and the three events are proved accepted (not carried
    forward, which would bill them twice)."""
    settings, account, source = prepared(make_settings, [T0])
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, page_size=1) as emulator,
        fast_client(emulator, max_attempts=3) as client,
    ):
        emulator.add_raw_row(
            {
                "usageDate": "2026-11-20T00:00:00Z",
                "usageResourceId": "someone-elses-resource",
                "dimension": "d",
                "submittedQuantity": None,
                "reconStatus": "Accepted",
            }
        )
        collect(settings, source, [T0])
        (lost,) = drain(settings)
        with pytest.raises(Killed):
            report_message(lost, settings, clock=clock, client=client, after_post=kill)
        clock.set(T0 + 30 * HOUR)
        result = report_message(lost, settings, clock=clock, client=client)
        reconciled = reconcile(account, client, T0, T0)
        reads = emulator.calls["usageEvents"]
    assert result.states == {"duplicate-confirmed": 3}
    assert reads == 4 + 4  # 3 rows and the raw one, a page each: the decision, then reconcile
    # Reconciliation needs every row: it names the one it cannot read, and nothing else.
    assert [(d.kind, d.resource_id) for d in reconciled.differences] == [
        ("endpoint-unreadable", "someone-elses-resource")
    ]
