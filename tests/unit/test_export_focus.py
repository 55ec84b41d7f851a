"""The FOCUS mapping and export configurations, without storage: units, services,
resource ids, tags, row figures, configuration checks, due months and part writing."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO

import pyarrow.parquet as pq
import pytest

from shared.core.errors import BadInputError
from shared.core.hours import floor_day
from shared.core.meters import catalogue
from shared.export.configs import Layout, make_config
from shared.export.exporter import due_months, period_folder, time_frame
from shared.export.files import FileFormat, PartWriter
from shared.export.focus import (
    SERVICE_CATEGORIES,
    UNITS,
    Buyer,
    SubscriptionMonth,
    _resource_parts,
    _tags,
    service_of,
)
from shared.rating.adjustments import Adjustment, Category
from shared.rating.charges import DayCharges
from shared.rating.engine import Level, Month, MonthRater, PriceBook
from shared.rating.sheets import PriceSheet, SheetDraft, SheetRow, build_sheet
from shared.storage.usage_rows import UsageRow

SUBSCRIPTION = "11111111-2222-4333-8444-555555555555"
VM_HOURS = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"  # Base VM Size Hours (Virtual core hours)
ALLOWED_UNIT = r"^(\d+ )?([A-Z][A-Za-z]*|[KMGTPE]i?B|B)( [A-Z][A-Za-z]*)*(-[A-Z][a-z]+)?$"


def test_every_catalogue_unit_has_an_explicit_focus_spelling() -> None:
    """No meter's unit is guessed: each catalogue unit is mapped, to FOCUS UnitFormat."""
    import re

    units = {meter.unit for meter in catalogue()}
    assert units <= set(UNITS), sorted(units - set(UNITS))
    for unit in units:
        assert re.match(ALLOWED_UNIT, UNITS[unit]), (unit, UNITS[unit])


def test_every_resource_provider_maps_to_an_allowed_category() -> None:
    """ServiceCategory is an allowed value for every meter; disks are Storage/Disk."""
    for meter in catalogue():
        name, category, subcategory = service_of(meter)
        assert category in SERVICE_CATEGORIES, meter
        assert name
        assert subcategory
    disk = next(m for m in catalogue() if "Disks" in m.unit)
    assert service_of(disk)[1:] == ("Storage", "Disk")
    assert service_of(None) == ("Other", "Other", "Other (Other)")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
            ("vm1", "Microsoft.Compute/virtualMachines"),
        ),
        (
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/blue",
            ("blue", "Microsoft.Web/sites/slots"),
        ),
        ("/subscriptions/s/resourceGroups/rg", ("rg", None)),
        ("", (None, None)),
    ],
)
def test_resource_name_and_type_come_from_the_arm_id(
    uri: str, expected: tuple[str | None, str | None]
) -> None:
    """ResourceName is the id's last name; ResourceType its provider namespace and types."""
    assert _resource_parts(uri) == expected


def test_tags_are_a_json_object_of_scalars_or_null() -> None:
    """Tags: a JSON object (scalars only), never an empty string or a non-object."""
    assert json.loads(_tags('{"env":"prod","n":1,"x":{"deep":1}}') or "") == {"env": "prod", "n": 1}
    assert _tags("[1,2]") is None
    assert _tags("not json") is None
    assert _tags("{}") is None
    assert _tags(None) is None


def _row(hour: int, quantity: float) -> UsageRow:
    start = datetime(2026, 11, 20, tzinfo=UTC) + timedelta(hours=hour)
    return UsageRow(
        SUBSCRIPTION,
        VM_HOURS,
        start,
        start + timedelta(hours=1),
        quantity,
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        "local",
        '{"env":"prod"}',
        None,
    )


def _sheet(scope: str, effective: str, *rows: SheetRow) -> PriceSheet:
    currency = "" if scope.startswith("subscription:") else "EUR"
    return build_sheet(SheetDraft(scope, effective, currency, rows), catalogue())


def _book(*rows: SheetRow) -> PriceBook:
    return PriceBook([_sheet("default", "2026-01-01", *rows)])


def _days(
    book: PriceBook, rows: list[tuple[datetime, UsageRow]], subscription: str = SUBSCRIPTION
) -> list[DayCharges]:
    """The ledger's charge lines of ``(reported hour, row)`` pairs, rated in order (what
    ``shared.rating.rater`` stores per usage day)."""
    pricing = book.pricing(subscription, {}, Level.RETAIL)
    assert pricing is not None
    rater = MonthRater(pricing)
    days: dict[datetime, DayCharges] = {}
    for reported, row in rows:
        rated = rater.rate(row.meter_id, row.usage_start, Decimal(repr(row.quantity)))
        day = floor_day(row.usage_start)
        days.setdefault(day, DayCharges(day)).add(reported, row, rated)
    return list(days.values())


BUYER = Buyer(Level.RETAIL, f"/subscriptions/{SUBSCRIPTION}", None, "Subscription", "op")


def test_a_row_crossing_a_tier_splits_so_list_cost_is_unit_price_times_quantity() -> None:
    """Tier 0-10 at 0.5, 10+ at 0.25: 12 units in a day become 10 x 0.5 and 2 x 0.25."""
    book = _book(
        SheetRow("1", VM_HOURS, "0", "0.5"),
        SheetRow("2", VM_HOURS, "10", "0.25"),
    )
    month = SubscriptionMonth(None, SUBSCRIPTION, Month(2026, 11), BUYER, "EUR", catalogue())
    rated = [
        (_row(hour, 3.0).usage_start + timedelta(hours=1), _row(hour, 3.0)) for hour in range(4)
    ]
    rows = month.rows(_days(book, rated))
    assert [(r["PricingQuantity"], r["ListUnitPrice"], r["ListCost"]) for r in rows] == [
        (Decimal(10), Decimal("0.5"), Decimal(5)),
        (Decimal(2), Decimal("0.25"), Decimal("0.5")),
    ]
    # The second tier starts with the hour reported at 04:00 (units 9-12 cross it).
    assert [r["x_ReportedPeriodStart"].hour for r in rows] == [1, 4]
    assert [r["SkuPriceId"] for r in rows] == [
        f"{VM_HOURS}/default/tier-0",
        f"{VM_HOURS}/default/tier-10",
    ]
    for row in rows:
        assert row["BilledCost"] == row["ContractedCost"] == row["EffectiveCost"]
        assert row["PricingUnit"] == row["ConsumedUnit"] == "Core-Hours"
        assert row["ServiceCategory"] == "Compute"
        assert row["SkuId"] == VM_HOURS
        assert row["x_ReportedPeriodEnd"] == datetime(2026, 11, 20, 5, tzinfo=UTC)
        assert row["BillingPeriodStart"] == datetime(2026, 11, 1, tzinfo=UTC)
        assert row["ChargePeriodStart"] == datetime(2026, 11, 20, tzinfo=UTC)
        assert row["Tags"] == '{"env":"prod"}'


def test_a_meter_no_sheet_prices_costs_zero_at_unit_prices_of_zero() -> None:
    """No price: costs 0 (as statements show it), unit prices 0 and a SKU price (FOCUS wants
    neither null on a Usage row), NotPriced."""
    book = _book(SheetRow("1", "F271A8A388C44D93956A063E1D2FA80B", "0", "0.01"))
    month = SubscriptionMonth(None, SUBSCRIPTION, Month(2026, 11), BUYER, "EUR", catalogue())
    row = _row(0, 2.0)
    (focus,) = month.rows(_days(book, [(row.usage_end, row)]))
    assert focus["BilledCost"] == focus["ListCost"] == focus["ContractedCost"] == Decimal(0)
    assert focus["ListUnitPrice"] == focus["ContractedUnitPrice"] == Decimal(0)
    assert focus["SkuPriceId"] == f"{VM_HOURS}/not-priced"
    assert focus["SkuId"] == VM_HOURS
    assert focus["PricingCategory"] == "Other"
    assert focus["x_PriceStatus"] == "NotPriced"
    assert focus["PricingQuantity"] == Decimal(2)


def test_sku_price_ids_stay_the_same_over_time_and_across_accounts() -> None:
    """A new sheet version mid-month changes the price, not the SkuPriceId; another tenant
    on the same sheet gets the same ids; an override is the custom list, with no
    subscription id, date or version inside any id."""
    other = "99999999-2222-4333-8444-555555555555"
    book = PriceBook(
        [
            _sheet("default", "2026-01-01", SheetRow("1", VM_HOURS, "0", "0.5")),
            _sheet("default", "2026-11-21", SheetRow("1", VM_HOURS, "0", "0.75")),
            _sheet(f"subscription:{other}", "2026-01-01", SheetRow("1", VM_HOURS, "0", "0.1")),
        ]
    )
    rows = [(_row(h, 1.0).usage_end, _row(h, 1.0)) for h in (0, 48)]  # Nov 20 and Nov 22
    mine = SubscriptionMonth(None, SUBSCRIPTION, Month(2026, 11), BUYER, "EUR", catalogue())
    first, second = mine.rows(_days(book, rows))
    assert (first["ListUnitPrice"], second["ListUnitPrice"]) == (Decimal("0.5"), Decimal("0.75"))
    assert first["SkuPriceId"] == second["SkuPriceId"] == f"{VM_HOURS}/default/tier-0"
    theirs = SubscriptionMonth(None, other, Month(2026, 11), BUYER, "EUR", catalogue())
    custom = theirs.rows(_days(book, rows, other))
    assert {r["SkuPriceId"] for r in custom} == {f"{VM_HOURS}/custom/tier-0"}
    assert {r["ContractedUnitPrice"] for r in custom} == {Decimal("0.1")}
    for row in [first, second, *custom]:
        assert not any(part in row["SkuPriceId"] for part in ("2026", "@", SUBSCRIPTION, other))


def test_figures_up_to_1e18_are_written_and_a_value_too_large_is_reported_not_fatal() -> None:
    """1e14 units at 10,000 each, a cost of 1e18 (decimal(38, 24) could not hold 1e14:
    pyarrow raised and the run died), are written to Parquet exactly; a quantity of 1e21
    does not fit, so that one row is left out and reported, and the others are kept."""
    book = _book(SheetRow("1", VM_HOURS, "0", "10000"))
    month = SubscriptionMonth(None, SUBSCRIPTION, Month(2026, 11), BUYER, "EUR", catalogue())
    fits = [(_row(h, q).usage_end, _row(h, q)) for h, q in ((0, 1e14), (48, 0.5))]
    huge = (_row(24, 1e21).usage_end, _row(24, 1e21))
    rows = month.rows(_days(book, [*fits, huge]))
    assert [r["PricingQuantity"] for r in rows] == [Decimal("1e14"), Decimal("0.5")]
    assert [r["ListCost"] for r in rows] == [Decimal("1e18"), Decimal(5000)]
    assert rows[0]["BilledCost"] == Decimal("1e18")
    (reason,) = month.rejected
    assert "2026-11-21" in reason
    assert "does not fit decimal(38, 18)" in reason
    uploaded: dict[str, bytes] = {}

    def upload(name: str, file: IO[bytes], content_type: str) -> None:
        file.seek(0)
        uploaded[name] = file.read()

    writer = PartWriter(FileFormat.PARQUET, lambda n: f"part_{n}", upload)
    for row in rows:
        writer.write(row)
    writer.finish()
    table = pq.read_table(io.BytesIO(uploaded["part_1"])).to_pylist()
    assert [r["ConsumedQuantity"] for r in table] == [Decimal("1e14"), Decimal("0.5")]
    assert [r["BilledCost"] for r in table] == [Decimal("1e18"), Decimal(5000)]


def test_billed_cost_is_the_statement_lines_cents_and_adjustments_are_rows() -> None:
    """Three days at 0.004 a day round per row to 0.00 each, but the statement line is
    0.012 -> 0.01: BilledCost gives that cent to one row (largest remainder), ContractedCost
    stays exact; a credit is a Credit row with a negative BilledCost, a correction of
    October is ChargeClass Correction in October's period."""
    book = _book(SheetRow("1", VM_HOURS, "0", "0.004"))
    rated = [(_row(24 * day, 1.0).usage_end, _row(24 * day, 1.0)) for day in range(3)]
    credit = Adjustment(
        "202611-20261125000000-abcdef", SUBSCRIPTION, Level.RETAIL, Month(2026, 11),
        Category.CREDIT, Decimal("-2.50"), "EUR", "SLA", "op", datetime(2026, 11, 25, tzinfo=UTC),
        corrects=Month(2026, 10),
    )  # fmt: skip
    month = SubscriptionMonth(None, SUBSCRIPTION, Month(2026, 11), BUYER, "EUR", catalogue())
    rows = month.rows(_days(book, rated), [credit])
    usage = [r for r in rows if r["ChargeCategory"] == "Usage"]
    assert [r["BilledCost"] for r in usage] == [Decimal("0.01"), Decimal(0), Decimal(0)]
    assert [r["ContractedCost"] for r in usage] == [Decimal("0.004")] * 3
    (row,) = [r for r in rows if r["ChargeCategory"] == "Credit"]
    assert (row["BilledCost"], row["ChargeClass"]) == (Decimal("-2.50"), "Correction")
    assert row["ChargePeriodStart"] == datetime(2026, 10, 1, tzinfo=UTC)
    assert row["BillingPeriodStart"] == datetime(2026, 11, 1, tzinfo=UTC)
    assert row["ListCost"] == row["ContractedCost"] == row["BilledCost"]
    assert sum(r["BilledCost"] for r in rows) == Decimal("-2.49")
    assert {r["InvoiceId"] for r in rows} == {f"202611-{SUBSCRIPTION}-retail"}


def test_configurations_are_checked_whole() -> None:
    """Every problem of a configuration is named; hubs take Parquet only."""
    with pytest.raises(BadInputError) as refused:
        make_config("x", "provider:nope", "xls", "Bad_Container", "a/../b", "ftp")
    message = refused.value.message
    for word in ("name", "scope", "format", "container", "root folder", "layout"):
        assert word in message, word
    with pytest.raises(BadInputError, match="Parquet only"):
        make_config("hub", "admin", "csv", "ingestion", "", "finopshubs")
    config = make_config("Focus-1", f"provider:{SUBSCRIPTION.upper()}", "CSV")
    assert config.scope == f"provider:{SUBSCRIPTION}"
    assert config.file_format is FileFormat.CSV
    assert config.layout is Layout.COST_MANAGEMENT
    assert config.resource_id.startswith(f"/subscriptions/{SUBSCRIPTION}/providers/")


def test_due_months_include_the_previous_month_on_days_one_to_five() -> None:
    """Like Cost Management's daily exports: days 1-5 re-export the previous month."""
    assert due_months(datetime(2026, 12, 5, 0, 30, tzinfo=UTC)) == [
        Month(2026, 11),
        Month(2026, 12),
    ]
    assert due_months(datetime(2026, 12, 6, 0, 30, tzinfo=UTC)) == [Month(2026, 12)]
    assert due_months(datetime(2027, 1, 1, tzinfo=UTC)) == [Month(2026, 12), Month(2027, 1)]
    assert period_folder(Month(2026, 2)) == "20260201-20260228"
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert time_frame(Month(2026, 12), now) == "MonthToDate"
    assert time_frame(Month(2026, 11), now) == "TheLastMonth"
    assert time_frame(Month(2026, 9), now) == "Custom"


@pytest.mark.parametrize("file_format", list(FileFormat))
def test_parts_are_bounded_and_row_groups_stream(file_format: FileFormat) -> None:
    """2,500 rows with parts of 1,000 and row groups of 300: three parts, every row kept."""
    book = _book(SheetRow("1", VM_HOURS, "0", "0.5"))
    month = SubscriptionMonth(None, SUBSCRIPTION, Month(2026, 11), BUYER, "EUR", catalogue())
    row = _row(0, 1.0)
    (focus,) = month.rows(_days(book, [(row.usage_end, row)]))
    uploaded: dict[str, bytes] = {}

    def upload(name: str, file: IO[bytes], content_type: str) -> None:
        file.seek(0)
        uploaded[name] = file.read()

    writer = PartWriter(
        file_format, lambda n: f"part_0_{n:04d}", upload, part_rows=1000, row_group_rows=300
    )
    for _ in range(2500):
        writer.write(focus)
    blobs = writer.finish()
    assert [b.row_count for b in blobs] == [1000, 1000, 500]
    assert [b.name for b in blobs] == ["part_0_0001", "part_0_0002", "part_0_0003"]
    first = uploaded["part_0_0001"]
    if file_format is FileFormat.PARQUET:
        metadata = pq.ParquetFile(io.BytesIO(first)).metadata
        assert metadata.num_rows == 1000
        assert metadata.num_row_groups == 4  # 300 + 300 + 300 + 100
        assert metadata.row_group(0).column(1).compression == "SNAPPY"
    else:
        lines = gzip.decompress(first).decode().splitlines()
        assert len(lines) == 1001  # the header and 1,000 rows
