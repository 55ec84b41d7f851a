"""report_to_azure bills every collected chargeable unit exactly once, whatever fails."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from devstack.clock import SettableClock
from devstack.commerce_emulator import CommerceEmulator, Fault
from shared.billing.events import EventOutcome
from shared.billing.ledger import LedgerState
from shared.billing.reporter import report_message
from shared.storage.account import StorageAccount
from tests.integration.test_report_support import (
    HOUR,
    T0,
    Killed,
    accepted_by_key,
    collect,
    deliver_until_done,
    drain,
    every_meter_chargeable,
    fast_client,
    fleet,
    hours_from,
    ledger_entries,
    map_subscriptions,
    owed_from_rows,
)


def test_exactly_once_under_faults_duplicates_and_kills(make_settings) -> None:
    """30% faults of every retryable kind, every message delivered twice, and kills between
    send and ledger write: the emulator's accepted set equals the one computed from rows."""
    settings = make_settings(BILLING_CHARGEABLE_OVERRIDES=every_meter_chargeable())
    account = StorageAccount(settings)
    account.ensure_tables()
    source = fleet(tenants=3)
    hours = list(hours_from(T0, 4))
    mapping = map_subscriptions(account, source, T0, resources=2)
    collect(settings, source, hours)
    expected = owed_from_rows(account, mapping)
    assert len({key[0] for key in expected}) == 3  # two mapped resources and the default
    assert len(expected) > 60  # several full batches per hour

    clock = SettableClock(T0 + 4 * HOUR + 20 * 60 * HOUR / 3600)
    rng = random.Random(11)

    def maybe_kill(outcomes: Sequence[EventOutcome]) -> None:
        if rng.random() < 0.25:
            raise Killed

    kinds = [kind for kind in Fault if kind is not Fault.BAD_REQUEST]
    with CommerceEmulator(clock=clock) as emulator:
        for kind in kinds:  # each kind at least once, then a seeded 30% mix of them all
            emulator.fail_next(kind, delay=0.3)
        emulator.set_fault_rate(0.3, kinds, seed=5, delay=0.3)
        with fast_client(emulator, read_timeout=0.15) as client:
            bodies = drain(settings)
            assert bodies
            deliveries = bodies * 2
            rng.shuffle(deliveries)
            failures = deliver_until_done(
                deliveries,
                lambda body: report_message(
                    body, settings, clock=clock, client=client, after_post=maybe_kill
                ),
            )
        assert failures > 0  # kills (and budget-exhausting faults) really happened
        assert set(emulator.injected) == set(kinds)
        accepted = accepted_by_key(emulator)

    assert set(accepted) == set(expected), "missing or unexpected events"
    for key, quantity in expected.items():
        assert math.isclose(accepted[key]["quantity"], quantity, rel_tol=1e-12), key
    ledger = ledger_entries(account, {key[0] for key in expected}, hours[0], hours[-1])
    assert set(ledger) == set(expected)
    for key, entry in ledger.items():
        assert entry.state in (LedgerState.ACCEPTED, LedgerState.DUPLICATE_CONFIRMED), entry
        assert entry.usage_event_id == accepted[key]["usageEventId"]


def test_concurrent_duplicate_deliveries_bill_each_event_once(make_settings) -> None:
    """Three deliveries of every message racing in threads: ETag guards keep one record."""
    settings = make_settings()
    account = StorageAccount(settings)
    account.ensure_tables()
    source = fleet(tenants=3)
    mapping = map_subscriptions(account, source, T0, resources=2)
    collect(settings, source, [T0])
    expected = owed_from_rows(account, mapping)
    clock = SettableClock(T0 + 2 * HOUR)
    with CommerceEmulator(clock=clock) as emulator:
        bodies = drain(settings) * 3

        def deliver(body: bytes) -> None:
            with fast_client(emulator) as client:
                report_message(body, settings, clock=clock, client=client)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(deliver, bodies))
        accepted = accepted_by_key(emulator)
    assert {key: event["quantity"] for key, event in accepted.items()} == expected
    ledger = ledger_entries(account, {key[0] for key in expected}, T0, T0)
    assert {key: entry.usage_event_id for key, entry in ledger.items()} == {
        key: event["usageEventId"] for key, event in accepted.items()
    }
