"""The ledger's states: mismatch, final rejections, and expired hours carried forward."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from datetime import datetime

import pytest

from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator, Fault
from shared.billing.events import UsageEvent
from shared.billing.ledger import CarryIndex, Ledger, LedgerState, Settlement
from shared.billing.reconcile import reconcile
from shared.billing.reporter import report_message
from shared.core.errors import TransientError
from shared.core.hours import hour_key
from shared.core.meters import ChargeableMeters, catalogue
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from tests.integration.test_report_support import (
    HOUR,
    PLAN,
    T0,
    Killed,
    accepted_by_key,
    collect,
    drain,
    fast_client,
    hours_from,
    ledger_entries,
    owed_from_rows,
)
from tests.scripted_source import (
    BASE_VM_HOURS,
    TENANT_A,
    TENANT_B,
    WINDOWS_VM_HOURS,
    ScriptedSource,
    vm_record,
)

WINDOWS = catalogue().lookup(WINDOWS_VM_HOURS).dimension  # type: ignore[union-attr]
BASE = catalogue().lookup(BASE_VM_HOURS).dimension  # type: ignore[union-attr]


def two_tenant_source(hours: list[datetime], *, b_every: int = 1) -> ScriptedSource:
    """TENANT_A: a Windows VM (two chargeable dimensions); TENANT_B one too, every b_every h."""
    source = ScriptedSource()
    for index, hour in enumerate(hours):
        records = [
            vm_record(TENANT_A, hour, quantity=8.0 + index),
            replace(vm_record(TENANT_A, hour, quantity=4.0), meter_id=BASE_VM_HOURS),
        ]
        if index % b_every == 0:
            records.append(vm_record(TENANT_B, hour, name="b", quantity=2.5))
        source.by_hour[hour] = records
    return source


def prepared(make_settings, hours: list[datetime], *, horizon: int = 24, **source_options: int):
    """Settings (``horizon``: COMMERCE_PROCESSING_HORIZON_HOURS), account and a source;
    TENANT_B is billed to resource saas-b."""
    settings = make_settings(COMMERCE_PROCESSING_HORIZON_HOURS=horizon)
    account = StorageAccount(settings)
    account.ensure_tables()
    source = two_tenant_source(hours, **source_options)
    store = SubscriptionStore(account)
    store.sync(source.subscriptions(hours[0]), store.all())
    store.set_billing(TENANT_B, "saas-b", PLAN)
    mapping = {TENANT_A: settings.billing_default_resource_id, TENANT_B: "saas-b"}
    return settings, account, source, mapping


def test_duplicate_with_other_quantity_is_a_mismatch_and_reconciliation_reports_it(
    make_settings,
) -> None:
    """An event accepted earlier with another quantity: ledger mismatch, reconcile exit 1."""
    settings, account, source, _mapping = prepared(make_settings, [T0])
    collect(settings, source, [T0])
    clock = SettableClock(T0 + 2 * HOUR)
    default = settings.billing_default_resource_id
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        client.post_batch([UsageEvent(default, PLAN, WINDOWS, 99.0, T0)])  # someone else's
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        entry = Ledger(account, default).get(T0, WINDOWS)
        assert entry is not None
        assert entry.state is LedgerState.MISMATCH
        assert entry.accepted_quantity == 99.0
        assert entry.quantity == 8.0
        result = reconcile(account, client, T0, T0)
    assert [(d.kind, d.resource_id, d.dimension) for d in result.differences] == [
        ("mismatch", default, WINDOWS)
    ]
    assert not result.ok


def test_final_rejections_are_recorded_and_do_not_block_the_batch(make_settings) -> None:
    """InvalidDimension and ResourceNotFound are recorded with the reason; the rest is billed."""
    settings, account, source, _mapping = prepared(make_settings, [T0])
    collect(settings, source, [T0])
    clock = SettableClock(T0 + 2 * HOUR)
    default = settings.billing_default_resource_id
    with (
        CommerceEmulator(clock=clock, invalid_dimensions=[BASE], unknown_resources=["saas-b"]) as (
            emulator
        ),
        fast_client(emulator) as client,
    ):
        bodies = drain(settings)
        assert len(bodies) == 1  # both resources in one item: one batch holds all three
        report_message(bodies[0], settings, clock=clock, client=client)
        assert emulator.calls == {"batchUsageEvent": 1}
        accepted = accepted_by_key(emulator)
    ledger = ledger_entries(account, {default, "saas-b"}, T0, T0)
    states = {key: (e.state, e.reason) for key, e in ledger.items()}
    assert states == {
        (default, WINDOWS, T0): (LedgerState.ACCEPTED, None),
        (default, BASE, T0): (LedgerState.REJECTED, "InvalidDimension"),
        ("saas-b", WINDOWS, T0): (LedgerState.REJECTED, "ResourceNotFound"),
    }
    assert set(accepted) == {(default, WINDOWS, T0)}


def test_whole_batch_refusals_split_the_batch_down_to_single_events(make_settings) -> None:
    """A 400 for the whole request refuses one invalid event or all of them: the batch is
    posted again in halves, and only an event refused alone is rejected (with the code);
    nothing raises, and a replay posts nothing."""
    settings, account, source, mapping = prepared(make_settings, [T0])
    collect(settings, source, [T0])
    clock = SettableClock(T0 + 2 * HOUR)
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        # 3 events refused, then halves of 2 and 1, then the 2 singly: 5 refusals in all.
        emulator.fail_next(Fault.BAD_REQUEST, times=5)
        (body,) = drain(settings)
        result = report_message(body, settings, clock=clock, client=client)
        assert (result.states, result.split, result.calls) == ({"rejected": 3}, 2, 5)
        report_message(body, settings, clock=clock, client=client)  # replay: nothing posted
        assert emulator.calls == {"batchUsageEvent": 5}
    ledger = ledger_entries(account, set(mapping.values()), T0, T0)
    assert {entry.reason for entry in ledger.values()} == {"BadArgument"}


def test_thirty_hour_outage_carries_expired_hours_forward(make_settings) -> None:
    """After a 30-hour endpoint outage, totals billed equal totals collected; the hours that
    expired meanwhile are carried into the first event that could still be sent. (The
    emulator's rows are current here, its default: a processing horizon of 0 is what this
    endpoint warrants, so the hours posted during the outage are proved unsent at once;
    waiting for a horizon is test_report_undocumented's.)"""
    hours = list(hours_from(T0, 31))
    settings, account, source, mapping = prepared(make_settings, hours, horizon=0, b_every=3)
    clock = SettableClock(T0)
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator, max_attempts=2) as client:
        emulator.set_fault_rate(1.0, [Fault.SERVER_ERROR], seed=1)
        waiting: list[bytes] = []  # what the poison queue would hold
        for hour in hours[:30]:
            clock.set(hour + HOUR + 10 * 60 * HOUR / 3600)
            collect(settings, source, [hour])
            for body in drain(settings):
                with pytest.raises(TransientError):
                    report_message(body, settings, clock=clock, client=client)
                waiting.append(body)
        assert not emulator.accepted_events()

        emulator.clear_faults()  # the endpoint is back; an operator re-enqueues
        clock.set(hours[30] + HOUR + 30 * 60 * HOUR / 3600)
        collect(settings, source, [hours[30]])
        for body in [*waiting, *drain(settings)]:
            report_message(body, settings, clock=clock, client=client)
        accepted = accepted_by_key(emulator)
        result = reconcile(account, client, hours[0], hours[30])

    owed = owed_from_rows(account, mapping)
    billed_total: dict[tuple[str, str], float] = defaultdict(float)
    owed_total: dict[tuple[str, str], float] = defaultdict(float)
    for (resource, dimension, _), event in accepted.items():
        billed_total[(resource, dimension)] += event["quantity"]
    for (resource, dimension, _), quantity in owed.items():
        owed_total[(resource, dimension)] += quantity
    assert billed_total.keys() == owed_total.keys()
    for pair, total in owed_total.items():
        assert math.isclose(billed_total[pair], total, rel_tol=1e-12), pair

    # Older than 24 h (+ margin) at recovery, 31.5 h after T0. Hours 8..29 were opened as
    # pending during the outage (and might have been accepted by a lost answer), so their
    # quantity is fixed; the first event opened after the expiry is hour 30's.
    expired = hours[:8]
    assert not [key for key in accepted if key[2] in expired]
    ledger = ledger_entries(account, set(mapping.values()), hours[0], hours[30])
    for key, entry in ledger.items():
        if key[2] in expired:
            assert entry.state is LedgerState.CARRIED_FORWARD, entry
            assert entry.carried_into == hour_key(hours[30])
    folded = ledger[(settings.billing_default_resource_id, WINDOWS, hours[30])]
    assert folded.carried_from == tuple(hour_key(h) for h in expired)
    assert folded.state is LedgerState.ACCEPTED
    assert ledger[("saas-b", WINDOWS, hours[30])].carried_from == tuple(
        hour_key(h) for h in hours[0:8:3]
    )
    assert result.ok, [d.line() for d in result.differences]
    assert ChargeableMeters(settings).dimension_of(WINDOWS_VM_HOURS) == WINDOWS


def test_hours_never_sent_before_expiry_fold_into_the_first_sendable_hour(make_settings) -> None:
    """Items that sat 30 hours unprocessed: expired hours are recorded expired, never posted,
    and carried into the first hour still inside the window; nothing is lost."""
    hours = list(hours_from(T0, 10))
    settings, account, source, _mapping = prepared(make_settings, hours)
    collect(settings, source, hours)
    clock = SettableClock(hours[5] + 24 * HOUR)  # hours 0..5 expired (margin), 6..9 sendable
    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        accepted = accepted_by_key(emulator)
        result = reconcile(account, client, hours[0], hours[9])
    assert {key[2] for key in accepted} == set(hours[6:])
    folded = accepted[(settings.billing_default_resource_id, WINDOWS, hours[6])]
    assert folded["quantity"] == sum(8.0 + index for index in range(7))
    assert result.ok, [d.line() for d in result.differences]
    assert math.isclose(result.billed, result.collected, rel_tol=1e-12)


def test_a_blind_open_writes_without_reading_and_meets_what_was_recorded(make_settings) -> None:
    """No marker waiting: one transaction and no read. Over events recorded before (a
    duplicate item) the creation fails whole and the hour is read: the recorded events
    come back as they are, a settled one is not reopened, nothing is written twice."""
    settings = make_settings()
    StorageAccount(settings).ensure_tables()
    sent: list[str] = []
    account = StorageAccount(settings, request_hook=lambda r: sent.append(r.http_request.method))
    owed = {"cpu": 2.0, "gb": 1.5}

    first = Ledger(account, "saas-1").open(T0, PLAN, owed, sendable=True, no_markers=True)
    assert [(e.dimension, e.state, e.quantity) for e in first] == [
        ("cpu", LedgerState.PENDING, 2.0),
        ("gb", LedgerState.PENDING, 1.5),
    ]
    assert sent == ["POST"]  # the transaction alone

    sent.clear()
    again = Ledger(account, "saas-1").open(T0, PLAN, owed, sendable=True, no_markers=True)
    assert again == first  # as recorded, ETags included
    assert sent == ["POST", "GET"]  # refused whole, then read: nothing written again

    ledger = Ledger(account, "saas-1")
    ledger.settle([Settlement(first[0], LedgerState.ACCEPTED, {"UsageEventId": "u-1"})])
    reopened = ledger.open(T0, PLAN, owed, sendable=True, no_markers=True)
    assert [e.dimension for e in reopened] == ["gb"]
    assert ledger.get(T0, "cpu").state is LedgerState.ACCEPTED  # type: ignore[union-attr]


def test_the_hours_guard_meets_events_of_dimensions_no_longer_owed(make_settings) -> None:
    """An earlier delivery recorded a dimension this one does not owe (its meter stopped
    being chargeable meanwhile): a blind open's creates would not meet it, the hour's guard
    does, and the recorded event is returned to be posted."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    ledger = Ledger(account, "saas-1")
    (old,) = ledger.open(T0, PLAN, {"old": 1.0}, sendable=True)
    opened = ledger.open(T0, PLAN, {"new": 2.0}, sendable=True, no_markers=True)
    by_dimension = {e.dimension: e for e in opened}
    assert sorted(by_dimension) == ["new", "old"]
    assert by_dimension["old"] == old  # as recorded, to be posted
    assert by_dimension["new"].quantity == 2.0


def test_a_redelivery_reads_and_settles_a_carry_its_first_delivery_left_pending(
    make_settings,
) -> None:
    """saas-b's expired hours fold into hour 7, where it has no usage of its own; that
    delivery dies after its POST, leaving the carry pending. Hour 9's item (saas-b listed,
    nothing of its own, no marker left) unlists it. The redelivery of hour 7 must read the
    hour (it owes nothing there, so a blind open would create and post nothing) and
    settle the carry: billed once, recorded once."""
    hours = list(hours_from(T0, 10))
    settings, account, source, _mapping = prepared(make_settings, hours, b_every=2)
    collect(settings, source, hours[:7])
    clock = SettableClock(hours[6] + 24 * HOUR)  # hours 0..6 expired, 7.. sendable

    def killed(_outcomes: object) -> None:
        raise Killed

    with CommerceEmulator(clock=clock) as emulator, fast_client(emulator) as client:
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        assert not emulator.accepted_events()
        collect(settings, source, [hours[7]])  # saas-b is planned for its carry alone
        (hour_7,) = drain(settings)
        with pytest.raises(Killed):
            report_message(hour_7, settings, clock=clock, client=client, after_post=killed)
        collect(settings, source, hours[8:10])
        for body in drain(settings):
            report_message(body, settings, clock=clock, client=client)
        assert "saas-b" not in CarryIndex(account).resources()
        report_message(hour_7, settings, clock=clock, client=client)
        accepted = accepted_by_key(emulator)
    assert accepted[("saas-b", WINDOWS, hours[7])]["quantity"] == 2.5 * 4  # hours 0, 2, 4, 6
    entry = Ledger(account, "saas-b").get(hours[7], WINDOWS)
    assert entry is not None
    assert entry.state is LedgerState.DUPLICATE_CONFIRMED  # the re-send met the accepted one
    assert entry.carried_from == tuple(hour_key(h) for h in hours[0:7:2])
