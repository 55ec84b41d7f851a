"""Chargeback against a real Azurite: the sheet store, rating into the ledger, finalising,
late usage after a month closed, two-level roll-ups, and the operator CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from shared.app import FunctionApp
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.errors import SheetRejectedError
from shared.core.meters import catalogue
from shared.rating.engine import Level, Month
from shared.rating.sheet_files import read_json_sheet
from shared.rating.sheet_store import ROLE as PRICES
from shared.rating.sheet_store import SheetStore, StoreOutcome
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.subscriptions import SubscriptionStore
from tests.integration.test_ops_cli import run_ops, settings_file_for
from tests.scripted_source import (
    HOUR,
    PROVIDER,
    TENANT_A,
    ScriptedSource,
    subscription,
    vm_record,
)

WIN = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"  # what vm_record reports
DELEGATED = "00000000-0000-0000-0000-00000000000d"
TENANT_C = "33333333-3333-3333-3333-333333333333"
NOV, DEC = Month(2026, 11), Month(2026, 12)


def priced(meters: dict[str, str], *, scope: str = "default", effective: str = "2026-01-01") -> Any:
    document = {
        "scope": scope,
        "effectiveFrom": effective,
        "currency": "USD",
        "meters": [{"meterId": m, "unitPrice": p} for m, p in meters.items()],
    }
    return read_json_sheet(json.dumps(document), catalogue())


def source() -> ScriptedSource:
    """The scripted fleet plus a delegated provider with one tenant, under the source name
    the settings name (so the CLI reads the same watermark)."""
    scripted = ScriptedSource(name="simulated")
    delegated = dataclasses.replace(
        subscription(DELEGATED, provider=PROVIDER), is_provider=True, display_name="reseller"
    )
    scripted.listed += [delegated, subscription(TENANT_C, provider=DELEGATED)]
    return scripted


def collect(settings: Settings, scripted: ScriptedSource, hours: list[datetime]) -> None:
    collector = Collector(settings, StorageAccount(settings), scripted)
    collector.account.ensure_tables()
    for hour in hours:
        collector.collect_hour(hour)


def test_sheet_versions_are_stored_once_and_bad_ones_leave_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    """A version stores once (again: unchanged); other prices for it, a provider scope that
    is no delegated provider, or another currency: refused, and the table is as before."""
    settings = make_settings()
    scripted = source()
    collect(settings, scripted, [datetime(2026, 11, 2, tzinfo=UTC)])
    account = StorageAccount(settings)
    store, subscriptions = SheetStore(account), SubscriptionStore(account)
    assert store.put(priced({WIN: "0.05"}), subscriptions) is StoreOutcome.STORED
    assert store.put(priced({WIN: "0.05"}), subscriptions) is StoreOutcome.UNCHANGED
    with pytest.raises(SheetRejectedError, match="already stored with other prices"):
        store.put(priced({WIN: "0.06"}), subscriptions)
    with pytest.raises(SheetRejectedError, match="not a delegated provider"):
        store.put(priced({WIN: "0.06"}, scope=f"provider:{PROVIDER}"), subscriptions)
    euro = read_json_sheet(
        json.dumps(
            {
                "scope": f"provider:{DELEGATED}",
                "effectiveFrom": "2026-01-01",
                "currency": "EUR",
                "meters": [{"meterId": WIN, "unitPrice": "1"}],
            }
        ),
        catalogue(),
    )
    with pytest.raises(SheetRejectedError, match="one currency"):
        store.put(euro, subscriptions)
    assert len(list(account.table(PRICES).list_entities())) == 1
    assert store.all() == [priced({WIN: "0.05"})]


def test_a_finalised_statement_never_changes_when_late_usage_arrives(
    make_settings: Callable[..., Settings],
) -> None:
    """November closes, its statement is stored; usage of November reported on 1 December
    lands on December's statement at November's price, and November's stays as it was."""
    settings = make_settings()
    account = StorageAccount(settings)
    scripted = source()
    last = NOV.last_hour
    scripted.by_hour[last - HOUR] = [vm_record(TENANT_A, last - HOUR, quantity=8.0)]
    scripted.by_hour[last] = [vm_record(TENANT_A, last, quantity=8.0)]
    scripted.by_hour[DEC.first_hour] = [
        vm_record(TENANT_A, last - 2 * HOUR, name="late", quantity=4.0),  # November's usage
        vm_record(TENANT_A, DEC.first_hour, quantity=8.0),
    ]
    collect(settings, scripted, [last - HOUR, last])
    subscriptions = SubscriptionStore(account)
    SheetStore(account).put(priced({WIN: "0.05"}), subscriptions)
    SheetStore(account).put(priced({WIN: "0.07"}, effective="2026-12-01"), subscriptions)
    app = FunctionApp(settings)
    statements = app.statements
    known = subscriptions.all()

    assert app.rate_usage().rated_through == last
    preview = statements.statement(TENANT_A, NOV, Level.RETAIL, known)
    assert preview is not None
    assert preview["status"] == "provisional"
    run = app.finalise_statements()
    assert run.months_closed == ["2026-11"]
    assert run.statements_frozen == 1
    final = statements.statement(TENANT_A, NOV, Level.RETAIL, known)
    assert final is not None
    assert final["status"] == "final"
    assert final["total"] == "0.80" == preview["total"]  # 16 hours x 0.05

    collect(settings, scripted, [DEC.first_hour])
    app.rate_usage()
    again_final = statements.statement(TENANT_A, NOV, Level.RETAIL, known)
    assert again_final is not None
    assert {k: v for k, v in again_final.items() if k != "computedAt"} == {
        k: v for k, v in final.items() if k != "computedAt"
    }
    again = app.finalise_statements()
    assert (again.months_closed, again.statements_frozen) == ([], 0)
    december = statements.statement(TENANT_A, DEC, Level.RETAIL, known)
    assert december is not None
    late = [line for line in december["lines"] if line["late"]]
    assert [(x["usagePeriod"]["month"], x["unitPrices"], x["amount"]) for x in late] == [
        ("2026-11", ["0.05"], "0.20")
    ]
    assert december["total"] == "0.76"  # 0.20 late + 8 x 0.07


def test_two_levels_are_finalised_and_rolled_up_per_provider(
    make_settings: Callable[..., Settings],
) -> None:
    """The delegated provider's tenant: retail by the reseller's sheet, wholesale by the
    admin's; the reseller's roll-up shows revenue, cost and margin; the root's roll-up
    shows what the reseller owes for its tenants."""
    settings = make_settings()
    account = StorageAccount(settings)
    scripted = source()
    last = NOV.last_hour
    scripted.by_hour[last] = [
        vm_record(TENANT_C, last, quantity=10.0),
        vm_record(TENANT_A, last, quantity=1.0),
    ]
    collect(settings, scripted, [last])
    subscriptions = SubscriptionStore(account)
    SheetStore(account).put(priced({WIN: "1"}), subscriptions)
    SheetStore(account).put(priced({WIN: "1.25"}, scope=f"provider:{DELEGATED}"), subscriptions)
    app = FunctionApp(settings)
    app.rate_usage()
    assert app.finalise_statements().statements_frozen == 3  # A retail, C retail + wholesale
    known = subscriptions.all()
    reseller = app.rollups.rollup(known[DELEGATED], NOV, known, [TENANT_C])
    assert (reseller["status"], reseller["kind"], reseller["directTenantsTotal"]) == (
        "final",
        "delegated",
        "12.50",
    )
    assert (reseller["wholesaleTotal"], reseller["margin"]) == ("10.00", "2.50")
    assert reseller["grandTotal"] == "12.50"
    root = app.rollups.rollup(known[PROVIDER], NOV, known, [TENANT_A, DELEGATED])
    assert [t["subscriptionId"] for t in root["tenants"]] == [TENANT_A]
    assert [(r["subscriptionId"], r["wholesaleTotal"]) for r in root["resellers"]] == [
        (DELEGATED, "10.00")
    ]
    assert (root["directTenantsTotal"], root["resellersTotal"]) == ("1.00", "10.00")
    assert Decimal(root["grandTotal"]) == Decimal("11.00")  # A's 1.00 + the reseller's 10.00
    cloud = app.rollups.cloud(NOV, known)
    # Every tenant once, at what it is charged: A 1.00 + C 12.50 (C's wholesale is not added).
    assert cloud["cloudTotal"] == "13.50"


def test_ops_prices_refuses_a_bad_file_whole_and_statements_prints_the_month(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``prices import`` of a bad CSV: exit 2, one line per problem, nothing stored; a good
    one imports; ``statements`` prints the month as a table, JSON and CSV."""
    settings = make_settings()
    scripted = source()
    hour = datetime(2026, 11, 2, tzinfo=UTC)
    scripted.by_hour[hour] = [vm_record(TENANT_A, hour, quantity=8.0)]
    collect(settings, scripted, [hour])
    settings_file = str(settings_file_for(settings, tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "meter_id,tier_start,unit_price,included_quantity\n"
        "not-a-meter,0,1,\n"
        f"{WIN},0,-2,\n"
        f"{WIN},0,1,\n"
    )
    code, _, err = run_ops(
        capsys,
        "prices",
        "import",
        str(bad),
        "--scope",
        "default",
        "--effective",
        "2026-11-01",
        "--currency",
        "USD",
        "--settings-file",
        settings_file,
    )
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(problems) == 3, err
    assert SheetStore(StorageAccount(settings)).all() == []
    good = tmp_path / "good.csv"
    good.write_text(
        f"meter_id,tier_start,unit_price,included_quantity,currency\n{WIN},0,0.05,,USD\n"
    )
    code, out, _ = run_ops(
        capsys,
        "prices",
        "import",
        str(good),
        "--scope",
        "default",
        "--effective",
        "2026-11-01",
        "--settings-file",
        settings_file,
    )
    assert code == 0
    assert "stored" in out
    code, out, _ = run_ops(capsys, "statements", "rate", "--settings-file", settings_file)
    assert code == 0, out
    assert "rated through 2026-11-02T00Z" in out
    for output in ("table", "json", "csv"):
        code, out, _ = run_ops(
            capsys,
            "statements",
            "--subscription",
            TENANT_A,
            "--month",
            "2026-11",
            "--output",
            output,
            "--settings-file",
            settings_file,
        )
        assert code == 0
        assert "0.40" in out  # 8 x 0.05
    code, out, _ = run_ops(
        capsys,
        "statements",
        "--provider",
        PROVIDER,
        "--month",
        "2026-11",
        "--output",
        "json",
        "--settings-file",
        settings_file,
    )
    assert json.loads(out)["grandTotal"] == "0.40"
    code, out, _ = run_ops(
        capsys, "prices", "show", "--subscription", TENANT_A, "--settings-file", settings_file
    )
    assert json.loads(out)["retail"]["meters"][0]["unitPrices"] == {"0": "0.05"}


# --- regressions of the ledger issue: written against interfaces main has too (the CLI and
# the export files), so each fails on the code before the ledger ---------------------------


def ops_in(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``python -m ops`` with the test's settings file."""
    settings_file = str(settings_file_for(settings, tmp_path))

    def ops(*argv: str) -> tuple[int, str, str]:
        return run_ops(capsys, *argv, "--settings-file", settings_file)

    return ops


def sheet_file(tmp_path: Path, meters: dict[str, str], effective: str) -> str:
    path = tmp_path / f"default-{effective}.json"
    path.write_text(
        json.dumps(
            {
                "scope": "default",
                "effectiveFrom": effective,
                "currency": "USD",
                "meters": [{"meterId": m, "unitPrice": p} for m, p in meters.items()],
            }
        )
    )
    return str(path)


def exported_billed_cost(
    settings: Settings, ops: Callable[..., tuple[int, str, str]]
) -> dict[str, Decimal]:
    """Run the admin's FOCUS export of November now; BilledCost summed per InvoiceId."""
    container = "r" + uuid.uuid4().hex[:12]
    name = "focus-" + uuid.uuid4().hex[:6]
    code, out, err = ops("exports", "set", "--name", name, "--container", container)
    assert code == 0, out + err
    code, out, err = ops("export", "--name", name, "--month", "2026-11")
    assert code == 0, out + err
    blobs = BlobStore(settings)
    sums: dict[str, Decimal] = {}
    for blob in blobs.names(container, ""):
        if blob.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(blobs.read(container, blob) or b""))
            for row in table.select(["InvoiceId", "BilledCost"]).to_pylist():
                sums[row["InvoiceId"]] = sums.get(row["InvoiceId"], Decimal(0)) + row["BilledCost"]
    return sums


def test_partial_pricing_keeps_its_money_on_the_final_statement(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Windows VM hours join the sheet on 15 November: 5 hours used on the 10th (no price)
    and 5 on the 20th (2.00) give a priced line of 10.00 beside 5 unpriced hours, on the
    final statement and in the FOCUS export alike. (Before the ledger: the whole line was
    unpriced, the final statement said 0.00 for good, and the export said 10.00.)"""
    settings = make_settings()
    scripted = source()
    last = NOV.last_hour
    scripted.by_hour[last - HOUR] = [
        vm_record(TENANT_A, datetime(2026, 11, 10, tzinfo=UTC), quantity=5.0)
    ]
    scripted.by_hour[last] = [vm_record(TENANT_A, datetime(2026, 11, 20, tzinfo=UTC), quantity=5.0)]
    collect(settings, scripted, [last - HOUR, last])
    ops = ops_in(settings, tmp_path, capsys)
    base_vm = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"
    for path in (
        sheet_file(tmp_path, {base_vm: "0.01"}, "2026-01-01"),
        sheet_file(tmp_path, {base_vm: "0.01", WIN: "2.00"}, "2026-11-15"),
    ):
        code, out, err = ops("prices", "import", path)
        assert code == 0, out + err
    code, out, err = ops("statements", "finalise")
    assert code == 0, out + err
    code, out, err = ops("statements", "--subscription", TENANT_A, "--month", "2026-11",
                         "--output", "json")  # fmt: skip
    assert code == 0, out + err
    statement = json.loads(out)
    assert statement["status"] == "final"
    windows = [line for line in statement["lines"] if line["meterId"].lower() == WIN.lower()]
    assert sorted((x["priced"], x["quantity"], x["amount"]) for x in windows) == [
        (False, "5.0", "0.00"),
        (True, "5.0", "10.00"),
    ]
    assert statement["total"] == "10.00"
    billed = exported_billed_cost(settings, ops)
    assert billed[f"202611-{TENANT_A}-retail"] == Decimal("10.00")


def test_a_back_dated_sheet_cannot_rewrite_a_finalised_month(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """November is final at 0.05 an hour; a sheet effective 15 November is refused with one
    line naming the month, and the statement and the export still agree, unchanged.
    (Before the ledger: the sheet was stored and the export re-priced the closed month.)"""
    settings = make_settings()
    scripted = source()
    last = NOV.last_hour
    scripted.by_hour[last] = [vm_record(TENANT_A, last, quantity=8.0)]
    collect(settings, scripted, [last])
    ops = ops_in(settings, tmp_path, capsys)
    code, out, err = ops("prices", "import", sheet_file(tmp_path, {WIN: "0.05"}, "2026-01-01"))
    assert code == 0, out + err
    code, out, err = ops("statements", "finalise")
    assert code == 0, out + err
    before = exported_billed_cost(settings, ops)
    assert before == {f"202611-{TENANT_A}-retail": Decimal("0.40")}
    code, out, err = ops("prices", "import", sheet_file(tmp_path, {WIN: "0.07"}, "2026-11-15"))
    assert code == 2, out + err
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(problems) == 1, err
    assert "2026-11" in problems[0]
    assert "finalised" in problems[0]
    code, out, err = ops("statements", "--subscription", TENANT_A, "--month", "2026-11",
                         "--output", "json")  # fmt: skip
    assert json.loads(out)["total"] == "0.40"
    assert exported_billed_cost(settings, ops) == before
