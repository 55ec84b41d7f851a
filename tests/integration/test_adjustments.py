"""Credits, corrections and one-off charges against a real Azurite: the operator CLI
(``python -m ops adjustments``), what a statement, a roll-up and the FOCUS export make of
them, and history: a finalised month takes none, a mistake is reversed, never edited."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from shared.app import FunctionApp
from shared.core.config import Settings
from shared.rating.adjustments import AdjustmentStore, Category
from shared.rating.engine import Level, Month
from shared.rating.sheet_store import SheetStore
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore
from tests.integration.test_chargeback import (
    DELEGATED,
    NOV,
    TENANT_C,
    WIN,
    collect,
    exported_billed_cost,
    ops_in,
    priced,
    source,
)
from tests.scripted_source import HOUR, PROVIDER, TENANT_A, vm_record

DEC = Month(2026, 12)


@pytest.fixture
def november(make_settings: Callable[..., Settings]) -> Settings:
    """November's last two hours collected and rated (A: 16 Windows hours at 0.05; C, a
    delegated provider's tenant: 10 at 1.25 resale, 0.05 wholesale)."""
    settings = make_settings()
    scripted = source()
    last = NOV.last_hour
    scripted.by_hour[last - HOUR] = [vm_record(TENANT_A, last - HOUR, quantity=8.0)]
    scripted.by_hour[last] = [
        vm_record(TENANT_A, last, quantity=8.0),
        vm_record(TENANT_C, last, quantity=10.0),
    ]
    collect(settings, scripted, [last - HOUR, last])
    account = StorageAccount(settings)
    subscriptions = SubscriptionStore(account)
    SheetStore(account).put(priced({WIN: "0.05"}), subscriptions)
    SheetStore(account).put(priced({WIN: "1.25"}, scope=f"provider:{DELEGATED}"), subscriptions)
    FunctionApp(settings).rate_usage()
    return settings


def test_the_cli_adds_lists_and_shows_adjustments_and_refuses_what_is_wrong(
    november: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A credit (negative), a one-off charge (positive), a correction naming October; each
    kept with who, when and why; wrong signs, sub-cent amounts, another currency, an
    unknown subscription and a wholesale credit for a direct tenant are one line, exit 2."""
    ops = ops_in(november, tmp_path, capsys)
    add = ("adjustments", "add", "--subscription", TENANT_A, "--month", "2026-11",
           "--currency", "USD")  # fmt: skip
    code, out, err = ops(*add, "--category", "credit", "--amount", "-1.50", "--reason",
                         "SLA: 3 h outage", "--corrects", "2026-10", "--by", "alice")  # fmt: skip
    assert code == 0, err
    credit_id = out.split(":")[0]
    assert credit_id.startswith("202611-")
    code, out, err = ops(*add, "--category", "charge", "--amount", "25", "--reason", "setup")
    assert code == 0, err
    for extra, words in (
        (("--category", "credit", "--amount", "1.50"), "negative"),
        (("--category", "charge", "--amount", "-2"), "positive"),
        (("--category", "adjustment", "--amount", "0.001"), "minor unit"),
        (("--category", "adjustment", "--amount", "0"), "changes nothing"),
    ):
        code, _, err = ops(*add, *extra, "--reason", "x")
        assert code == 2, (extra, err)
        assert words in err, err
        assert len(err.strip().splitlines()) == 1, err
    code, _, err = ops("adjustments", "add", "--subscription", TENANT_A, "--month", "2026-11",
                       "--currency", "EUR", "--category", "charge", "--amount", "1",
                       "--reason", "x")  # fmt: skip
    assert code == 2
    assert "USD" in err
    code, _, err = ops(*add, "--category", "charge", "--amount", "1", "--reason", "x",
                       "--level", "wholesale")  # fmt: skip
    assert code == 2
    assert "no wholesale" in err
    code, out, err = ops("adjustments", "list", "--month", "2026-11", "--output", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(a["category"], a["amount"]) for a in listed] == [("credit", "-1.50"),
                                                              ("charge", "25")]  # fmt: skip
    code, out, _ = ops("adjustments", "show", credit_id)
    shown = json.loads(out)
    assert (shown["createdBy"], shown["reason"], shown["corrects"]) == (
        "alice",
        "SLA: 3 h outage",
        "2026-10",
    )
    assert shown["createdAt"].endswith("Z")


def test_adjustments_are_on_the_statement_the_roll_up_and_in_focus_and_history_is_closed(
    november: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's credit is a line of its own (total 0.80 - 0.30 = 0.50), C's wholesale credit
    (0.50 - 0.20) lowers what the reseller pays, not what C pays; the export's Credit row
    carries the same cents (ChargeClass Correction); after finalising, November takes no
    adjustment (one line naming the month) and a mistake is reversed in December."""
    ops = ops_in(november, tmp_path, capsys)
    base = ("adjustments", "add", "--month", "2026-11", "--currency", "USD", "--category")
    code, out, err = ops(*base, "credit", "--amount", "-0.30", "--subscription", TENANT_A,
                         "--reason", "SLA", "--corrects", "2026-10")  # fmt: skip
    assert code == 0, err
    credit_id = out.split(":")[0]
    code, _, err = ops(*base, "credit", "--amount", "-0.20", "--subscription", TENANT_C,
                       "--level", "wholesale", "--reason", "partner credit")  # fmt: skip
    assert code == 0, err
    app = FunctionApp(november)
    known = SubscriptionStore(app.account).all()
    statement = app.statements.statement(TENANT_A, NOV, Level.RETAIL, known)
    assert statement is not None
    assert (statement["usageTotal"], statement["adjustmentsTotal"], statement["total"]) == (
        "0.80",
        "-0.30",
        "0.50",
    )
    assert [a["chargeCategory"] for a in statement["adjustments"]] == ["Credit"]
    retail_c = app.statements.statement(TENANT_C, NOV, Level.RETAIL, known)
    wholesale_c = app.statements.statement(TENANT_C, NOV, Level.WHOLESALE, known)
    assert retail_c is not None
    assert wholesale_c is not None
    assert (retail_c["total"], wholesale_c["total"]) == ("12.50", "0.30")
    reseller = app.rollups.rollup(known[DELEGATED], NOV, known, [TENANT_C])
    assert (reseller["directTenantsTotal"], reseller["wholesaleTotal"], reseller["margin"]) == (
        "12.50",
        "0.30",
        "12.20",
    )
    root = app.rollups.rollup(known[PROVIDER], NOV, known, [TENANT_A, DELEGATED])
    assert (root["directTenantsTotal"], root["resellersTotal"], root["grandTotal"]) == (
        "0.50",
        "0.30",
        "0.80",
    )
    billed = exported_billed_cost(november, ops)
    assert billed[f"202611-{TENANT_A}-retail"] == Decimal("0.50")
    assert billed[f"202611-{TENANT_C}-wholesale"] == Decimal("0.30")

    code, out, err = ops("statements", "finalise")
    assert code == 0, out + err
    code, _, err = ops(*base, "credit", "--amount", "-1", "--subscription", TENANT_A,
                       "--reason", "late")  # fmt: skip
    assert code == 2
    assert "2026-11 is finalised" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = ops("adjustments", "add", "--reverses", credit_id, "--month", "2026-12",
                         "--reason", "the outage was October's, credited twice")  # fmt: skip
    assert code == 0, err
    reversal = AdjustmentStore(app.account).of_subscription(TENANT_A, DEC)
    assert [(a.category, a.amount, a.reverses) for a in reversal] == [
        (Category.ADJUSTMENT, Decimal("0.30"), credit_id)
    ]
    final = app.statements.statement(TENANT_A, NOV, Level.RETAIL, known)
    assert final is not None
    assert (final["status"], final["total"]) == ("final", "0.50")


def test_an_add_racing_the_finaliser_is_on_the_final_statement_or_refused(
    november: Settings,
) -> None:
    """Eight operators add at once (every add commits, the guard counts eight); once the
    month's adjustments are closed, an add is refused, whatever it read before."""
    store = AdjustmentStore(StorageAccount(november))
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            store.add(subscription_id=TENANT_A, level=Level.RETAIL, month=NOV,
                      category=Category.CHARGE, amount=Decimal(n + 1), currency="USD",
                      reason=f"fee {n}", created_by="t")  # fmt: skip
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(a.amount for a in store.of_month(NOV)) == [Decimal(n) for n in range(1, 9)]
    store.close(NOV, datetime(2026, 12, 1, tzinfo=UTC))
    with pytest.raises(Exception, match="2026-11 is finalised"):
        store.add(subscription_id=TENANT_A, level=Level.RETAIL, month=NOV,
                  category=Category.CHARGE, amount=Decimal(1), currency="USD", reason="x",
                  created_by="t")  # fmt: skip
    assert len(store.of_month(NOV)) == 8
