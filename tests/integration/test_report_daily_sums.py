"""Events whose POST answer was lost, decided from the endpoint's daily sums; carried usage
of a resource that went quiet. Against the emulator answering the documented daily rows."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator, Fault
from shared.billing.events import EventOutcome
from shared.billing.ledger import CarryIndex, LedgerState
from shared.billing.reconcile import reconcile
from shared.billing.reporter import report_message
from shared.core.errors import TransientError
from shared.core.hours import hour_key
from tests.integration.test_report_ledger import BASE, WINDOWS, prepared
from tests.integration.test_report_support import (
    HOUR,
    T0,
    Killed,
    accepted_by_key,
    collect,
    drain,
    fast_client,
    ledger_entries,
    owed_from_rows,
)

MINUTES_10 = timedelta(minutes=10)


def kill(outcomes: Sequence[EventOutcome]) -> None:
    raise Killed


def billed_totals(emulator: CommerceEmulator) -> dict[tuple[str, str], float]:
    parts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (resource, dimension, _), event in accepted_by_key(emulator).items():
        parts[(resource, dimension)].append(event["quantity"])
    return {key: math.fsum(values) for key, values in parts.items()}


def owed_totals(owed: dict[tuple[str, str, datetime], float]) -> dict[tuple[str, str], float]:
    parts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (resource, dimension, _), quantity in owed.items():
        parts[(resource, dimension)].append(quantity)
    return {key: math.fsum(values) for key, values in parts.items()}


def test_accepted_event_whose_answer_was_lost_is_not_billed_again_30_hours_later(
    make_settings,
) -> None:
    """Accepted, answer lost to a crash, retried 30 hours later (Expired): the day's sums
    prove it was accepted, so it is settled as billed and never carried into a later hour."""
    late = T0 + 30 * HOUR
    hours = [T0, T0 + HOUR, T0 + 2 * HOUR, late]
    settings, account, source, mapping = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        collect(settings, source, [T0])
        (lost,) = drain(settings)
        with pytest.raises(Killed):
            report_message(lost, settings, clock=clock, client=client, after_post=kill)
        assert len(emulator.accepted_events()) == 3  # accepted; the ledger never heard
        for hour in hours[1:3]:  # the rest of the day is billed normally
            clock.set(hour + HOUR + MINUTES_10)
            collect(settings, source, [hour])
            for body in drain(settings):
                report_message(body, settings, clock=clock, client=client)

        clock.set(late + MINUTES_10)  # the retry comes 30 hours later: Expired
        result = report_message(lost, settings, clock=clock, client=client)
        assert result.states == {"duplicate-confirmed": 3}
        clock.set(late + HOUR + MINUTES_10)
        collect(settings, source, [late])
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        reconciled = reconcile(account, client, T0, late)

    ledger = ledger_entries(account, set(mapping.values()), T0, late)
    for key, entry in ledger.items():
        if key[2] == T0:
            assert (entry.state, entry.reason) == (LedgerState.DUPLICATE_CONFIRMED, "DailySums")
        assert not entry.carried_from, entry  # nothing was carried: nothing had expired
    assert billed_totals(emulator) == pytest.approx(
        owed_totals(owed_from_rows(account, mapping)), rel=1e-12
    )
    assert reconciled.ok, [d.line() for d in reconciled.differences]


def test_a_day_not_processed_yet_is_waited_for(make_settings) -> None:
    """While the day's row is Submitted (not processed yet) the lost event is not decided:
    the item raises to be retried; once processed, the sums settle it as billed."""
    settings, account, source, mapping = prepared(make_settings, [T0])
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock, processing_delay=timedelta(hours=30)) as emulator,
        fast_client(emulator) as client,
    ):
        collect(settings, source, [T0])
        (lost,) = drain(settings)
        with pytest.raises(Killed):
            report_message(lost, settings, clock=clock, client=client, after_post=kill)
        clock.set(T0 + 26 * HOUR)
        with pytest.raises(TransientError, match="neither proved"):
            report_message(lost, settings, clock=clock, client=client)
        assert {e.state for e in ledger_entries(account, set(mapping.values()), T0, T0).values()} \
            == {LedgerState.PENDING}  # fmt: skip
        clock.set(T0 + 32 * HOUR)
        assert report_message(lost, settings, clock=clock, client=client).states == {
            "duplicate-confirmed": 3
        }


def test_events_the_day_cannot_tell_apart_wait_then_become_unresolved(make_settings) -> None:
    """Two unknown events of one day with the same quantity, only one accepted: the sums
    cannot tell which. They wait, then, once their day can no longer change (every hour of
    it out of the window, plus the processing horizon), are recorded unresolved: never
    carried forward (one of them was billed), and reconciliation names them."""
    hours = [T0, T0 + HOUR]
    settings, account, source, mapping = prepared(make_settings, hours)
    clock = SettableClock(T0 + HOUR + MINUTES_10)
    with (
        CommerceEmulator(clock=clock) as emulator,
        fast_client(emulator, max_attempts=2) as client,
    ):
        collect(settings, source, [T0])
        (first,) = drain(settings)
        with pytest.raises(Killed):  # accepted, answer lost
            report_message(first, settings, clock=clock, client=client, after_post=kill)
        clock.set(T0 + 2 * HOUR + MINUTES_10)
        collect(settings, source, [T0 + HOUR])
        (second,) = drain(settings)
        emulator.fail_next(Fault.SERVER_ERROR, times=2)  # posted, never accepted
        with pytest.raises(TransientError):
            report_message(second, settings, clock=clock, client=client)

        clock.set(T0 + 26 * HOUR)
        with pytest.raises(TransientError, match="neither proved"):
            report_message(first, settings, clock=clock, client=client)
        ledger = ledger_entries(account, set(mapping.values()), T0, T0 + HOUR)
        default = settings.billing_default_resource_id
        # WINDOWS differs per hour (8.0, 9.0): told apart. BASE (4.0) and saas-b (2.5): not.
        assert ledger[(default, WINDOWS, T0)].state is LedgerState.DUPLICATE_CONFIRMED
        assert ledger[(default, BASE, T0)].state is LedgerState.PENDING

        # The day of T0 (09:00) is final at its midnight + 47 h 15 min + the 24 h horizon.
        clock.set(T0 - 9 * HOUR + timedelta(hours=71, minutes=16))
        for body in (first, second):
            report_message(body, settings, clock=clock, client=client)
        reconciled = reconcile(account, client, T0, T0 + HOUR)
        accepted = accepted_by_key(emulator)

    ledger = ledger_entries(account, set(mapping.values()), T0, T0 + HOUR)
    states = {key: entry.state for key, entry in ledger.items()}
    assert states == {
        (default, WINDOWS, T0): LedgerState.DUPLICATE_CONFIRMED,
        (default, WINDOWS, T0 + HOUR): LedgerState.EXPIRED,  # proved not accepted: carried
        (default, BASE, T0): LedgerState.UNRESOLVED,
        (default, BASE, T0 + HOUR): LedgerState.UNRESOLVED,
        ("saas-b", WINDOWS, T0): LedgerState.UNRESOLVED,
        ("saas-b", WINDOWS, T0 + HOUR): LedgerState.UNRESOLVED,
    }
    assert set(accepted) == {(default, WINDOWS, T0), (default, BASE, T0), ("saas-b", WINDOWS, T0)}
    kinds = sorted((d.kind, d.resource_id, d.dimension) for d in reconciled.differences)
    assert kinds == sorted(
        [
            ("unresolved", default, BASE),
            ("unresolved", default, BASE),
            ("unresolved", "saas-b", WINDOWS),
            ("unresolved", "saas-b", WINDOWS),
            ("awaiting-carry", default, WINDOWS),
        ]
    )


def test_carried_usage_of_a_resource_that_went_quiet_is_billed(make_settings) -> None:
    """saas-b has usage only in an hour that expired before it was sent, and none after: its
    usage is still billed in the next sendable hour (the carry index lists it), and the
    index forgets it once nothing is left to carry."""
    late = T0 + 25 * HOUR
    settings, account, source, mapping = prepared(make_settings, [T0, late], b_every=2)
    assert not [r for r in source.by_hour[late] if r.subscription_id == mapping_key(mapping)]
    clock = SettableClock(late + MINUTES_10)  # the hour sat unsent past its window
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        collect(settings, source, [T0])
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        assert emulator.accepted_events() == []
        assert sorted(CarryIndex(account).resources()) == sorted(
            [settings.billing_default_resource_id, "saas-b"]
        )
        clock.set(late + HOUR + MINUTES_10)
        collect(settings, source, [late])
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        accepted = accepted_by_key(emulator)
        reconciled = reconcile(account, client, T0, late)

    assert accepted[("saas-b", WINDOWS, late)]["quantity"] == 2.5
    ledger = ledger_entries(account, {"saas-b"}, T0, late)
    assert ledger[("saas-b", WINDOWS, T0)].state is LedgerState.CARRIED_FORWARD
    assert ledger[("saas-b", WINDOWS, T0)].carried_into == hour_key(late)
    assert ledger[("saas-b", WINDOWS, late)].own_quantity == 0.0
    assert billed_totals(emulator) == pytest.approx(
        owed_totals(owed_from_rows(account, mapping)), rel=1e-12
    )
    assert CarryIndex(account).resources() == []
    assert reconciled.ok, [d.line() for d in reconciled.differences]


def mapping_key(mapping: dict[str, str]) -> str:
    """The subscription billed to saas-b."""
    (subscription,) = [s for s, resource in mapping.items() if resource == "saas-b"]
    return subscription
