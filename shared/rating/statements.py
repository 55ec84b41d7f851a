"""Statements: one subscription's rated month, line by line, as JSON and CSV.

A statement covers the rows *reported* in one calendar month (UTC) for one buyer
(``Level``): the subscription itself (retail) or, for a delegated provider's tenant, the
provider's wholesale cost of the same usage. Lines are per (meter, usage month): usage of
the statement month on one line, late usage of an earlier month on its own line, marked
``late`` with its usage period. A line holds the quantity, the unit, the tier breakdown
(each part naming the sheet version and entry it used), the unit prices and the amount.

**Rounding rule**: a line's amount is the exact sum of its parts rounded half-even to the
currency's minor unit, once; the statement's total is the sum of its rounded lines (so the
total always equals what the lines show, which ``round(sum of exact amounts)`` would not).
Meters that no sheet prices are lines with ``priced: false`` and amount 0, so they are seen.

Money and quantities are decimal strings in the documents (exact; never floats).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Final

from shared.core.hours import HOUR, iso
from shared.core.meters import MeterCatalogue
from shared.rating.engine import RATING_CONTEXT, Level, Month, MonthRater, Pricing, Rated, exact
from shared.rating.sheets import ZERO, minor_unit
from shared.storage.usage_rows import UsageRow

FINAL: Final = "final"
PROVISIONAL: Final = "provisional"
ROUNDING_RULE: Final = (
    "each line's amount is rounded half-even to the currency's minor unit once; "
    "the total is the sum of the rounded lines"
)


def money(value: Decimal) -> str:
    """Decimal text without exponent (``1E+1`` would confuse spreadsheets)."""
    return format(value, "f")


def round_line(amount: Decimal, currency: str | None) -> Decimal:
    """An exact line amount rounded half-even to the currency's minor unit (the one rounding)."""
    if currency is None:
        return amount
    with localcontext(RATING_CONTEXT):
        return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_EVEN)


@dataclass
class _Part:
    sheet: str
    entry: str
    override: str | None
    tier_start: Decimal | None
    unit_price: Decimal
    list_unit_price: Decimal
    quantity: Decimal = ZERO
    amount: Decimal = ZERO
    list_amount: Decimal = ZERO


@dataclass
class _Line:
    meter_id: str
    usage_month: Month
    usage_start: datetime
    usage_end: datetime
    priced: bool = True
    quantity: Decimal = ZERO
    amount: Decimal = ZERO  # exact
    list_amount: Decimal = ZERO
    unit_prices: list[Decimal] = field(default_factory=list)
    parts: dict[tuple[Any, ...], _Part] = field(default_factory=dict)


class StatementBuilder:
    """Accumulates one buyer's rated rows of one subscription-month into statement lines.

    Feed rows in reported-hour order (then storage order), as ``MonthRater`` requires.
    """

    def __init__(self, pricing: Pricing, month: Month) -> None:
        self.pricing = pricing
        self.month = month
        self._rater = MonthRater(pricing)
        self._lines: dict[tuple[str, Month], _Line] = {}
        self.rows = 0

    def add(self, row: UsageRow) -> Rated:
        rated = self._rater.rate(row.meter_id, row.usage_start, exact(row.quantity))
        self.rows += 1
        usage_month = Month.of(row.usage_start)
        key = (rated.meter_id.lower(), usage_month)
        line = self._lines.get(key)
        if line is None:
            line = _Line(rated.meter_id, usage_month, row.usage_start, row.usage_end)
            self._lines[key] = line
        else:
            line.usage_start = min(line.usage_start, row.usage_start)
            line.usage_end = max(line.usage_end, row.usage_end)
        with localcontext(RATING_CONTEXT):
            line.quantity += rated.quantity
            if rated.price is None:
                line.priced = False
                return rated
            line.amount += rated.amount
            line.list_amount += rated.list_amount
            for part in rated.parts:
                price = part.price
                part_key = (
                    price.entry,
                    price.override,
                    part.tier_start,
                    part.unit_price,
                    part.list_unit_price,
                )
                total = line.parts.get(part_key)
                if total is None:
                    total = line.parts[part_key] = _Part(
                        price.sheet,
                        price.entry,
                        price.override,
                        part.tier_start,
                        part.unit_price,
                        part.list_unit_price,
                    )
                    for unit_price in price.unit_prices():
                        if unit_price not in line.unit_prices:
                            line.unit_prices.append(unit_price)
                total.quantity += part.quantity
                total.amount += part.amount
                total.list_amount += part.list_amount
        return rated

    def build(
        self,
        meters: MeterCatalogue,
        *,
        status: str,
        collected_through: datetime | None,
        at: datetime,
    ) -> dict[str, Any]:
        """The statement document (see the module docstring for the rounding rule)."""
        currency = self.pricing.book.currency
        lines = []
        total = list_total = ZERO
        versions: set[str] = set()
        for (_, usage_month), line in sorted(self._lines.items(), key=_line_order):
            meter = meters.lookup(line.meter_id)
            amount = round_line(line.amount if line.priced else ZERO, currency)
            list_amount = round_line(line.list_amount if line.priced else ZERO, currency)
            with localcontext(RATING_CONTEXT):
                total += amount
                list_total += list_amount
            parts = sorted(line.parts.values(), key=_part_order)
            versions |= {p.sheet for p in parts} | {p.override for p in parts if p.override}
            lines.append(
                {
                    "meterId": line.meter_id,
                    "meterName": meter.name if meter else "",
                    "unit": meter.unit if meter else "",
                    "usagePeriod": {
                        "month": str(usage_month),
                        "start": iso(line.usage_start),
                        "end": iso(line.usage_end),
                    },
                    "late": usage_month != self.month,
                    "priced": line.priced,
                    "quantity": money(line.quantity),
                    "unitPrices": [money(p) for p in line.unit_prices],
                    "tiers": [_part_document(p) for p in parts],
                    "amount": money(amount),
                    "listAmount": money(list_amount),
                }
            )
        return {
            "subscriptionId": self.pricing.subscription_id,
            "month": str(self.month),
            "level": self.pricing.level.value,
            "buyerSubscriptionId": self.pricing.buyer,
            "status": status,
            "currency": currency,
            "reportedPeriod": {
                "start": iso(self.month.first_hour),
                "end": iso(self.month.next.first_hour),
            },
            "collectedThrough": iso(collected_through + HOUR) if collected_through else None,
            "rows": self.rows,
            "lines": lines,
            # Sums of rounded amounts: rounding again only spells zero as 0.00.
            "total": money(round_line(total, currency)),
            "listTotal": money(round_line(list_total, currency)),
            "sheetVersions": sorted(versions),
            "rounding": ROUNDING_RULE,
            "computedAt": iso(at),
        }


def _line_order(item: tuple[tuple[str, Month], _Line]) -> tuple[Month, str]:
    (meter_key, usage_month), _ = item
    return (usage_month, meter_key)


def _part_order(part: _Part) -> tuple[str, bool, Decimal]:
    return (part.entry, part.tier_start is not None, part.tier_start or ZERO)


def _part_document(part: _Part) -> dict[str, Any]:
    return {
        "sheetVersion": part.sheet,
        "sheetEntry": part.entry,
        "override": part.override,
        "included": part.tier_start is None,
        "tierStart": None if part.tier_start is None else money(part.tier_start),
        "unitPrice": money(part.unit_price),
        "listUnitPrice": money(part.list_unit_price),
        "quantity": money(part.quantity),
        "amount": money(part.amount),
        "listAmount": money(part.list_amount),
    }


def empty_statement(
    subscription_id: str,
    buyer: str,
    level: Level,
    month: Month,
    currency: str | None,
    *,
    status: str,
    collected_through: datetime | None,
    at: datetime,
) -> dict[str, Any]:
    """The statement of a month in which the subscription reported nothing."""
    return {
        "subscriptionId": subscription_id,
        "month": str(month),
        "level": level.value,
        "buyerSubscriptionId": buyer,
        "status": status,
        "currency": currency,
        "reportedPeriod": {"start": iso(month.first_hour), "end": iso(month.next.first_hour)},
        "collectedThrough": iso(collected_through + HOUR) if collected_through else None,
        "rows": 0,
        "lines": [],
        "total": "0",
        "listTotal": "0",
        "sheetVersions": [],
        "rounding": ROUNDING_RULE,
        "computedAt": iso(at),
    }


STATEMENT_CSV_COLUMNS: Final = (
    "subscriptionId",
    "month",
    "level",
    "status",
    "currency",
    "meterId",
    "meterName",
    "unit",
    "usageMonth",
    "late",
    "priced",
    "quantity",
    "unitPrices",
    "amount",
    "sheetEntries",
)


def statement_csv(documents: Iterable[Mapping[str, Any]]) -> str:
    """Statements as CSV: one row per line, then one ``TOTAL`` row per statement."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(STATEMENT_CSV_COLUMNS)
    for document in documents:
        head = [
            document["subscriptionId"],
            document["month"],
            document["level"],
            document["status"],
            document["currency"] or "",
        ]
        for line in document["lines"]:
            writer.writerow(
                [
                    *head,
                    line["meterId"],
                    line["meterName"],
                    line["unit"],
                    line["usagePeriod"]["month"],
                    str(line["late"]).lower(),
                    str(line["priced"]).lower(),
                    line["quantity"],
                    ";".join(line["unitPrices"]),
                    line["amount"],
                    ";".join(sorted({part["sheetEntry"] for part in line["tiers"]})),
                ]
            )
        writer.writerow([*head, "TOTAL", "", "", "", "", "", "", "", document["total"], ""])
    return out.getvalue()


CSV_ROLLUP_COLUMNS: Final = (
    "providerSubscriptionId",
    "month",
    "subscriptionId",
    "displayName",
    "status",
    "currency",
    "total",
    "wholesaleTotal",
    "resoldWholesaleTotal",
)


def rollup_csv(rollup: Mapping[str, Any]) -> str:
    """A roll-up as CSV: one row per tenant, then a ``TOTAL`` row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_ROLLUP_COLUMNS)
    head = [rollup["providerSubscriptionId"], rollup["month"]]
    for tenant in rollup["tenants"]:
        writer.writerow(
            [
                *head,
                tenant["subscriptionId"],
                tenant["displayName"],
                tenant["status"],
                rollup["currency"] or "",
                tenant["total"],
                tenant.get("wholesaleTotal", ""),
                tenant.get("resoldWholesaleTotal", ""),
            ]
        )
    writer.writerow(
        [
            *head,
            "TOTAL",
            "",
            rollup["status"],
            rollup["currency"] or "",
            rollup["total"],
            rollup["wholesaleTotal"] or "",
            "",
        ]
    )
    return out.getvalue()
