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
from devstack.commerce_emulator import CommerceEmulator
from shared.billing.events import EventOutcome
from shared.billing.ledger import LedgerState
from shared.billing.reconcile import reconcile
from shared.billing.reporter import report_message
from shared.core.config import Settings
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
from tests.scripted_source import TENANT_B, ScriptedSource

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
    assert len(accepted) == 6
    assert reconciled.ok, [d.line() for d in reconciled.differences]
