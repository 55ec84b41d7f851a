"""Statements: one subscription's month at one level, read from the ledger, as JSON and CSV.

A statement covers the rows *reported* in one calendar month (UTC) for one buyer
(``Level``): the subscription itself (retail) or, for a delegated provider's tenant, the
provider's wholesale cost of the same usage. It is the ledger's month state
(``shared.rating.charges.MonthCharges``) and the month's adjustments, shown; nothing is
rated here. Lines are per (meter, usage month, priced): usage of the statement month on one
line, late usage of an earlier month on its own line (``late``, with its usage period), and
a meter's unpriced quantity on a line of its own (``priced: false``, amount 0) beside the
priced one, which keeps its money. A line holds the quantity, the unit, the tier breakdown
(each part naming the sheet version and entry it used), the unit prices and the amount;
adjustments (credits, corrections, one-off charges) follow as lines of their own.

Rounding (``shared.rating.rounding``): each line's amount is its exact amount rounded once;
``usageTotal`` is the sum of the rounded lines, ``adjustmentsTotal`` the sum of the
adjustments (whole minor units), ``total`` their sum. **Final** once the month is finalised
(``shared.rating.finaliser``: its ledger frozen), **provisional** before: what is rated so
far (``collectedThrough``: rows reported before it are on the statement).

Money and quantities are decimal strings in the documents (exact; never floats).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

from shared.core.hours import HOUR, iso, utc_now
from shared.core.meters import MeterCatalogue
from shared.rating.adjustments import Adjustment, AdjustmentStore
from shared.rating.charges import LinePart, MonthCharges, StatementLine, text
from shared.rating.engine import RATING_CONTEXT, Level, Month, MonthRater, PriceBook, Pricing, exact
from shared.rating.ledger import ChargeLedger, line_amount, usage_totals
from shared.rating.marks import RatingMarks
from shared.rating.rounding import ROUNDING_RULE, round_amount
from shared.rating.sheet_store import SheetStore
from shared.rating.sheets import ZERO
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription
from shared.storage.usage_rows import UsageRow

FINAL: Final = "final"
PROVISIONAL: Final = "provisional"


def money(value: Decimal) -> str:
    """Decimal text without exponent (``1E+1`` would confuse spreadsheets)."""
    return text(value)


def _part_document(part: LinePart) -> dict[str, Any]:
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


def _part_order(part: LinePart) -> tuple[str, bool, Decimal]:
    return (part.entry, part.tier_start is not None, part.tier_start or ZERO)


def _line_document(
    line: StatementLine, month: Month, currency: str | None, meters: MeterCatalogue
) -> dict[str, Any]:
    meter = meters.lookup(line.meter_id)
    parts = sorted(line.parts.values(), key=_part_order)
    return {
        "meterId": line.meter_id,
        "meterName": meter.name if meter else "",
        "unit": meter.unit if meter else "",
        "usagePeriod": {
            "month": str(line.usage_month),
            "start": iso(line.usage_start),
            "end": iso(line.usage_end),
        },
        "late": line.usage_month != month,
        "priced": line.priced,
        "quantity": money(line.quantity),
        "unitPrices": [money(price) for price in line.unit_prices],
        "tiers": [_part_document(part) for part in parts],
        "amount": money(line_amount(line, currency)),
        "listAmount": money(round_amount(line.list_amount, currency)),
    }


def adjustment_line(adjustment: Adjustment) -> dict[str, Any]:
    """An adjustment as a statement line (and as the adjustments routes list it)."""
    return {**adjustment.document(), "chargeCategory": adjustment.category.focus_charge_category}


def statement_document(
    charges: MonthCharges | None,
    adjustments: Sequence[Adjustment],
    *,
    subscription_id: str,
    level: Level,
    month: Month,
    buyer: str,
    currency: str | None,
    final: bool,
    rated_through: datetime | None,
    meters: MeterCatalogue,
    at: datetime,
) -> dict[str, Any]:
    """The statement of ``charges`` (None: nothing reported in the month) and ``adjustments``."""
    if charges is not None:
        currency, buyer = charges.currency, charges.buyer
    lines = [] if charges is None else charges.ordered_lines()
    usage_total, list_total = (ZERO, ZERO) if charges is None else usage_totals(charges)
    with localcontext(RATING_CONTEXT):
        adjusted = sum((adjustment.amount for adjustment in adjustments), ZERO)
        total = usage_total + adjusted
    versions: set[str] = set()
    for line in lines:
        versions |= {p.sheet for p in line.parts.values()}
        versions |= {p.override for p in line.parts.values() if p.override}
    bound = None
    if rated_through is not None and rated_through >= month.first_hour:
        bound = min(rated_through, month.last_hour)
    document: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "month": str(month),
        "level": level.value,
        "buyerSubscriptionId": buyer,
        "status": FINAL if final else PROVISIONAL,
        "currency": currency,
        "reportedPeriod": {"start": iso(month.first_hour), "end": iso(month.next.first_hour)},
        "collectedThrough": iso(bound + HOUR) if bound is not None else None,
        "rows": 0 if charges is None else charges.rows,
        "lines": [_line_document(line, month, currency, meters) for line in lines],
        "adjustments": [adjustment_line(adjustment) for adjustment in adjustments],
        "usageTotal": money(round_amount(usage_total, currency)),
        "adjustmentsTotal": money(round_amount(adjusted, currency)),
        # Sums of rounded amounts: rounding again only spells zero as 0.00.
        "total": money(round_amount(total, currency)),
        "listTotal": money(round_amount(list_total, currency)),
        "sheetVersions": sorted(versions),
        "rounding": ROUNDING_RULE,
        "computedAt": iso(at),
    }
    if charges is not None and charges.finalised_at is not None:
        document["finalisedAt"] = iso(charges.finalised_at)
    return document


def rate_in_memory(pricing: Pricing, month: Month, rows: Iterable[UsageRow]) -> MonthCharges:
    """A month's statement-line state from rows already read, in order (what the rater
    stores; for pure tests and the benchmark's in-memory figure)."""
    charges = MonthCharges(
        subscription_id=pricing.subscription_id,
        level=pricing.level,
        month=month,
        buyer=pricing.buyer,
        currency=pricing.book.currency,
        fingerprint="",
    )
    rater = MonthRater(pricing, charges.used)
    for row in rows:
        charges.add(row, rater.rate(row.meter_id, row.usage_start, exact(row.quantity)))
    return charges


@dataclass(frozen=True, slots=True)
class MonthStatus:
    """Where rating and finalising stand: what a statement's status and bound come from."""

    rated_through: datetime | None
    finalised_through: Month | None

    def final(self, month: Month) -> bool:
        return self.finalised_through is not None and month <= self.finalised_through


class Statements:
    """Statements for the API and the CLI: read from the ledger, never rated here."""

    def __init__(
        self,
        account: StorageAccount,
        meters: MeterCatalogue,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.account = account
        self.meters = meters
        self.ledger = ChargeLedger(account)
        self.adjustments = AdjustmentStore(account, clock=clock)
        self.marks = RatingMarks(account)
        self._clock = clock

    def price_book(self) -> PriceBook:
        return PriceBook(SheetStore(self.account).all())

    def status(self) -> MonthStatus:
        marks = self.marks.both()
        return MonthStatus(marks.rated.hour, marks.finalised)

    def statement(
        self,
        subscription_id: str,
        month: Month,
        level: Level,
        subscriptions: Mapping[str, Subscription],
        *,
        status: MonthStatus | None = None,
    ) -> dict[str, Any] | None:
        """The subscription's statement at ``level``; None if the level does not apply to it
        (wholesale of a subscription no delegated provider offered, and none stored)."""
        subscription_id = subscription_id.lower()
        status = status or self.status()
        charges = self.ledger.month_charges(subscription_id, month).get(level)
        buyer, currency = subscription_id, None
        if charges is None:
            book = self.price_book()
            pricing = book.pricing(subscription_id, subscriptions, level)
            if pricing is None:
                return None
            buyer, currency = pricing.buyer, book.currency
        adjustments = self.adjustments.of_subscription(subscription_id, month, level)
        return statement_document(
            charges,
            adjustments,
            subscription_id=subscription_id,
            level=level,
            month=month,
            buyer=buyer,
            currency=currency,
            final=status.final(month),
            rated_through=status.rated_through,
            meters=self.meters,
            at=self._clock(),
        )


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
    """Statements as CSV: one row per line, one ``ADJUSTMENT`` row per adjustment (its
    category as the name, the month it corrects as the usage month), then a ``TOTAL`` row."""
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
        for adjustment in document["adjustments"]:
            writer.writerow(
                [
                    *head,
                    "ADJUSTMENT",
                    f"{adjustment['category']}: {adjustment['reason']}",
                    "",
                    adjustment["corrects"] or "",
                    "false",
                    "true",
                    "",
                    "",
                    adjustment["amount"],
                    adjustment["id"],
                ]
            )
        writer.writerow([*head, "TOTAL", "", "", "", "", "", "", "", document["total"], ""])
    return out.getvalue()
