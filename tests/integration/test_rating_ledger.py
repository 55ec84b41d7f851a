"""Rating into the ledger against a real Azurite: a crash after any committed transaction,
a rerun, two runs at once and a re-rate for new prices each leave exactly what one clean
run leaves; the ledger's documents stay inside Table storage's limits."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bench.chaos import ledger_differences
from shared.core.config import Settings
from shared.core.meters import catalogue
from shared.rating.adjustments import AdjustmentStore, Category
from shared.rating.engine import Level, Month
from shared.rating.ledger import (
    ENTITY_LIMIT,
    INDEX_ROLE,
    ChargeLedger,
    LedgerDocumentTooLargeError,
    month_partition,
)
from shared.rating.marks import ROLE as MARKS_ROLE
from shared.rating.rater import Rater
from shared.rating.sheet_files import read_json_sheet
from shared.rating.sheet_store import SheetStore
from shared.rating.statements import Statements
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from shared.storage.usage_rows import usage_table_name
from tests.integration.test_chargeback import DELEGATED, TENANT_C, collect, source
from tests.scripted_source import BASE_VM_HOURS, HOUR, TENANT_A, vm_record

WIN = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
NOV = Month(2026, 11)
FIRST = datetime(2026, 11, 20, 22, tzinfo=UTC)
LAST = FIRST + 3 * HOUR
SOURCES = ["simulated"]


class Killed(BaseException):
    """The process dying (BaseException: no ``except Exception`` swallows it)."""


def sheet(meters: list[dict[str, Any]], *, scope: str = "default", effective: str) -> Any:
    document = {"scope": scope, "effectiveFrom": effective, "currency": "USD", "meters": meters}
    return read_json_sheet(json.dumps(document), catalogue())


@pytest.fixture
def priced(make_settings: Callable[..., Settings]) -> Settings:
    """Four reported hours across midnight, late rows among them, two tenants (one of a
    delegated provider: two levels), a tiered meter with an included quantity."""
    return priced_settings(make_settings)


def priced_settings(make_settings: Callable[..., Settings], **values: str) -> Settings:
    """``priced``'s usage and sheets, stored with settings of ``values``."""
    settings = make_settings(**values)
    scripted = source()
    for n in range(4):
        hour = FIRST + n * HOUR
        scripted.by_hour[hour] = [
            vm_record(TENANT_A, hour, quantity=6.0),
            vm_record(TENANT_A, hour - 3 * HOUR, name="late", quantity=2.5),
            vm_record(TENANT_C, hour, quantity=4.0),
            dataclasses.replace(
                vm_record(TENANT_C, hour, name="base", quantity=3.0), meter_id=BASE_VM_HOURS
            ),
        ]
    collect(settings, scripted, [FIRST + n * HOUR for n in range(4)])
    account = StorageAccount(settings)
    subscriptions = SubscriptionStore(account)
    store = SheetStore(account)
    store.put(
        sheet(
            [
                {"meterId": WIN, "tiers": {"0": "0.5", "20": "0.3"}, "includedQuantity": "5"},
                {"meterId": BASE_VM_HOURS, "unitPrice": "0.07"},
            ],
            effective="2026-01-01",
        ),
        subscriptions,
    )
    store.put(
        sheet([{"meterId": WIN, "unitPrice": "0.9"}], scope=f"provider:{DELEGATED}",
              effective="2026-01-01"),
        subscriptions,
    )  # fmt: skip
    return settings


def wipe_ledger(settings: Settings) -> None:
    """Remove every entity rating wrote (the charges of November, the index, the marks)."""
    account = StorageAccount(settings)
    for subscription in (TENANT_A, TENANT_C):
        table = account.table_named(usage_table_name(settings.table_prefix, subscription))
        for entity in table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": month_partition(NOV)}
        ):
            table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    for role in (INDEX_ROLE, MARKS_ROLE):
        table = account.table(role)
        for entity in table.list_entities():
            if role == INDEX_ROLE or entity["PartitionKey"] == "rating":
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])


def killing_rater(settings: Settings, after: int) -> Rater:
    """A rater whose writes are one operation per transaction, killed after ``after``."""
    account = StorageAccount(settings)
    committed = [0]

    def count() -> None:
        committed[0] += 1
        if committed[0] == after:
            raise Killed

    ledger = ChargeLedger(account, max_operations=1, after_transaction=count)
    return Rater(account, SOURCES, ledger=ledger, parallelism=1)


def test_a_crash_after_any_transaction_then_a_rerun_leaves_what_a_clean_run_leaves(
    priced: Settings,
) -> None:
    """Every point a rating run can die at (after each of its committed transactions, one
    operation each: so between a day's charge lines and its month state too), then a clean
    rerun: the ledger equals rating the rows once, and the rated mark is at the last hour."""
    counted = [0]

    def count() -> None:
        counted[0] += 1

    account = StorageAccount(priced)
    ledger = ChargeLedger(account, max_operations=1, after_transaction=count)
    Rater(account, SOURCES, ledger=ledger, parallelism=1).rate_due(60)
    transactions = counted[0]
    assert transactions >= 8  # days and month states of two subscriptions, two levels
    assert ledger_differences(StorageAccount(priced), SOURCES, FIRST, LAST) == (2, [])
    for after in range(1, transactions + 1):
        wipe_ledger(priced)
        with pytest.raises(Killed):
            killing_rater(priced, after).rate_due(60)
        rerun = Rater(StorageAccount(priced), SOURCES).rate_due(60)
        assert rerun.rated_through == LAST, after
        checked, differences = ledger_differences(StorageAccount(priced), SOURCES, FIRST, LAST)
        assert (checked, differences) == (2, []), after


def test_two_runs_at_once_leave_what_one_run_leaves(priced: Settings) -> None:
    """Two rate_usage runs racing over the same hours (the ETags make one of each pair of
    writes lose and read again): the ledger of one clean run, every row counted once."""
    results: list[Any] = []

    def run() -> None:
        results.append(Rater(StorageAccount(priced), SOURCES).rate_due(60))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.rated_through for r in results] == [LAST, LAST]
    assert ledger_differences(StorageAccount(priced), SOURCES, FIRST, LAST) == (2, [])
    month = ChargeLedger(StorageAccount(priced)).month_charges(TENANT_C, NOV)
    assert {level: charges.rows for level, charges in month.items()} == {
        Level.RETAIL: 8,
        Level.WHOLESALE: 8,
    }


def test_a_new_sheet_re_rates_the_open_month_and_a_crash_mid_way_converges(
    priced: Settings,
) -> None:
    """A default sheet effective 20 November 23:00 changes the open month: the explicit
    step re-rates it (dying half way first, then again), and the ledger equals rating the
    rows once with the new prices; once done, nothing is stale and nothing is re-rated."""
    account = StorageAccount(priced)
    Rater(account, SOURCES).rate_due(60)
    before = ChargeLedger(account).month_totals(TENANT_A, NOV)[Level.RETAIL].total
    SheetStore(account).put(
        sheet([{"meterId": WIN, "unitPrice": "1"}, {"meterId": BASE_VM_HOURS, "unitPrice": "1"}],
              effective="2026-11-20T23:00"),
        SubscriptionStore(account),
    )  # fmt: skip
    with pytest.raises(Killed):
        killing_rater(priced, 2).rerate_open_months()
    rerated = Rater(account, SOURCES).rerate_open_months()
    # The killed run died in A's re-rate (its pool finished C, as a worker thread would).
    assert f"{TENANT_A} {NOV}" in rerated
    assert ledger_differences(account, SOURCES, FIRST, LAST) == (2, [])
    assert ChargeLedger(account).month_totals(TENANT_A, NOV)[Level.RETAIL].total > before
    assert Rater(account, SOURCES).rerate_open_months() == []  # nothing stale any more


def test_a_day_too_big_for_one_entity_is_split_and_read_back_whole(priced: Settings) -> None:
    """3,000 resources on one day at two levels: every day entity stays under Table
    storage's limits (1 MiB, 64 KiB a property) and the day reads back line for line."""
    account = StorageAccount(priced)
    ledger = ChargeLedger(account)
    Rater(account, SOURCES).rate_due(60)
    loaded = ledger.load(TENANT_C, NOV, None)
    day = next(iter(loaded.days.values())).charges
    template = next(iter(day.lines.values()))
    for n in range(3_000):
        uri = f"{template.resource_uri}-{n:05d}" + "x" * 200
        line = dataclasses.replace(template, resource_uri=uri, tags='{"owner":"' + "ü" * 40 + '"}')
        day.lines[line.key] = line
    key = next(iter(loaded.days))
    ledger.save(loaded, [key])
    table = account.table_named(usage_table_name(priced.table_prefix, TENANT_C))
    shards = [
        entity
        for entity in table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": month_partition(NOV)}
        )
        if entity["RowKey"].startswith(f"D_{key[0].value}_")
    ]
    assert len(shards) > 1
    for entity in shards:
        size = sum(len(str(v).encode("utf-16-le")) for v in entity.values())
        assert size < 1_000_000
        assert all(len(str(v).encode("utf-16-le")) <= 64 * 1024 for v in entity.values())
    again = ledger.load(TENANT_C, NOV, None).days[key].charges
    assert again.shards(10**9) == day.shards(10**9)


def test_a_subscriptions_days_are_one_read_across_statement_months(
    make_settings: Callable[..., Settings],
) -> None:
    """30 November's usage reported on 30 November and, late, on 1 December: one read of
    the two statement months' day entities, narrowed to the day, finds both (what a daily
    cost series reads), and nothing of other days."""
    settings = make_settings()
    scripted = source()
    last, december = NOV.last_hour, NOV.next.first_hour
    scripted.by_hour[last - HOUR] = [vm_record(TENANT_A, last - 26 * HOUR, quantity=1.0)]
    scripted.by_hour[last] = [vm_record(TENANT_A, last, quantity=2.0)]
    scripted.by_hour[december] = [
        vm_record(TENANT_A, last - HOUR, name="late", quantity=3.0),
        vm_record(TENANT_A, december, quantity=4.0),
    ]
    collect(settings, scripted, [last - HOUR, last, december])
    account = StorageAccount(settings)
    SheetStore(account).put(
        sheet([{"meterId": WIN, "unitPrice": "0.5"}], effective="2026-01-01"),
        SubscriptionStore(account),
    )
    assert Rater(account, SOURCES).rate_due(60).rated_through == december
    day = datetime(2026, 11, 30, tzinfo=UTC)
    found = ChargeLedger(account).days_between(
        TENANT_A, Level.RETAIL, NOV, NOV.next, usage_days=(day, day)
    )
    assert sorted(found) == [(NOV, day), (NOV.next, day)]
    quantities = {key: sum(line.quantity for line in d.lines.values()) for key, d in found.items()}
    assert quantities == {(NOV, day): 2, (NOV.next, day): 3}


def test_the_ledger_is_the_same_on_either_tables_transport(
    make_settings: Callable[..., Settings],
) -> None:
    """The same rows rated, re-rated for a new sheet and adjusted with TABLES_TRANSPORT=sdk
    and =direct: each ledger equals rating the rows once, and both transports give the same
    statements, line for line and to the cent."""
    shown: dict[str, list[Any]] = {}
    for name in ("sdk", "direct"):
        settings = priced_settings(make_settings, TABLES_TRANSPORT=name)
        account = StorageAccount(settings)
        assert account.transport.name == name
        assert Rater(account, SOURCES).rate_due(60).rated_through == LAST
        SheetStore(account).put(
            sheet([{"meterId": WIN, "unitPrice": "1"}], effective="2026-11-20T23:00"),
            SubscriptionStore(account),
        )
        assert f"{TENANT_A} {NOV}" in Rater(account, SOURCES).rerate_open_months()
        assert ledger_differences(account, SOURCES, FIRST, LAST) == (2, [])
        AdjustmentStore(account).add(
            subscription_id=TENANT_C, level=Level.WHOLESALE, month=NOV,
            category=Category.CREDIT, amount=Decimal("-0.75"), currency="USD",
            reason="SLA credit", created_by="op",
        )  # fmt: skip
        statements = Statements(account, catalogue())
        subscriptions = SubscriptionStore(account).all()
        shown[name] = [
            (
                document["lines"],
                [(a["amount"], a["category"]) for a in document["adjustments"]],
                document["usageTotal"],
                document["total"],
            )
            for subscription in (TENANT_A, TENANT_C)
            for level in (Level.RETAIL, Level.WHOLESALE)
            if (document := statements.statement(subscription, NOV, level, subscriptions))
        ]
    assert len(shown["sdk"]) == 3  # A retail; C retail and wholesale
    assert shown["direct"] == shown["sdk"]


def test_a_month_of_statement_lines_at_the_entity_limit_is_stored_and_one_past_it_refused(
    priced: Settings,
) -> None:
    """A month state grown to just under Table storage's 1 MiB (thousands of statement
    lines) is stored in properties of at most 64 KiB and reads back line for line; one
    line more is refused before any write (LedgerDocumentTooLargeError, not a 413 from
    storage half way), and what was stored is unchanged."""
    account = StorageAccount(priced)
    ledger = ChargeLedger(account)
    Rater(account, SOURCES).rate_due(60)
    loaded = ledger.load(TENANT_C, NOV, None)
    level = next(iter(loaded.months))
    month = loaded.months[level]
    template = next(iter(month.lines.values()))
    grown = 0
    while len(month.document().encode("utf-16-le")) + 4_096 < ENTITY_LIMIT - 2_000:
        line = dataclasses.replace(template, meter_id=f"{template.meter_id}-{grown:06d}")
        month.lines[line.key] = line
        grown += 1
    ledger.save(loaded, [])
    table = account.table_named(usage_table_name(priced.table_prefix, TENANT_C))
    stored = table.get_entity(month_partition(NOV), f"M_{level.value}")
    assert sum(len(str(v).encode("utf-16-le")) for v in stored.values()) < 1024 * 1024
    assert all(len(str(v).encode("utf-16-le")) <= 64 * 1024 for v in stored.values())
    again = ledger.load(TENANT_C, NOV, None).months[level]
    assert again.document() == month.document()
    assert len(again.lines) > grown > 1_000
    while len(month.document().encode("utf-16-le")) + 4_096 <= ENTITY_LIMIT:
        line = dataclasses.replace(template, meter_id=f"{template.meter_id}-{grown:06d}")
        month.lines[line.key] = line
        grown += 1
    with pytest.raises(LedgerDocumentTooLargeError, match="1 MiB"):
        ledger.save(loaded, [])
    assert ledger.load(TENANT_C, NOV, None).months[level].document() == again.document()
