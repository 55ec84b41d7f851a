"""Money per usage day, read from the ledger of charges: what a cost series shows.

A cost series (the Cost Management Query route, the portal's cost view) needs, for some
subscriptions and a span of usage days, each charge's *billed* amount: the money the
statements hold, not a new rounding of it. So this reads the ledger's day charge lines
(``shared.rating.ledger``) and gives each the share of its statement line that the FOCUS
export gives its row (``shared.rating.rounding.billed_amounts``, largest remainder). A
statement line covers one meter's usage of one **usage month** on one statement, so the
share of a charge depends on every charge of that line: the read covers whole usage
months (the first to the last of the window's), in every statement month from the first
of them to ``through`` (late usage is on a later month's statement, as its own line), and
the days outside the window are dropped only after spreading. Then the adjustments of
those statement months, each one item on the first day of the month it is for (the month
it corrects, or else its statement's), as the FOCUS rows date them.

Reads: one range query per subscription (every statement month of the span in one query,
narrowed to the usage days) and one per statement month for the adjustments, whatever the
number of days: the cost follows the subscriptions and months asked for, never the rows of
usage behind them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from shared.rating.adjustments import AdjustmentStore
from shared.rating.charges import ChargeLine, DayCharges
from shared.rating.engine import Level, Month
from shared.rating.ledger import ChargeLedger
from shared.rating.rounding import billed_amounts
from shared.rating.sheets import ZERO

USAGE_CHARGE: Final = "Usage"
DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CostItem:
    """One billed amount on one usage day: a charge line's share of its statement line, or
    an adjustment (no meter, resource or quantity; ``charge_type`` its FOCUS category), at
    the ``level`` of the statement it is on (retail: what the subscription pays; wholesale:
    what its delegated provider pays for it)."""

    subscription_id: str
    usage_day: datetime
    statement_month: Month
    charge_type: str
    cost: Decimal
    level: Level = Level.RETAIL
    quantity: Decimal = ZERO
    meter_id: str = ""
    resource_uri: str = ""
    location: str = ""
    tags: str | None = None
    priced: bool = True


def months_between(first: Month, last: Month) -> list[Month]:
    """``first`` .. ``last``, both included (empty if ``last`` is before ``first``)."""
    months: list[Month] = []
    month = first
    while month.first_hour <= last.first_hour:
        months.append(month)
        month = month.next
    return months


class CostLines:
    """Billed amounts per usage day for a set of subscriptions (see the module docstring)."""

    def __init__(self, ledger: ChargeLedger, adjustments: AdjustmentStore) -> None:
        self._ledger = ledger
        self._adjustments = adjustments

    def items(
        self,
        subscription_ids: Iterable[str],
        first_day: datetime,
        last_day: datetime,
        through: Month,
        currency: str | None,
        level: Level = Level.RETAIL,
    ) -> list[CostItem]:
        """Every billed amount of ``subscription_ids`` on usage days ``first_day`` ..
        ``last_day`` (UTC midnights, both included) at ``level``, from the statements of
        ``Month.of(first_day)`` .. ``through``."""
        wanted = sorted({subscription_id.lower() for subscription_id in subscription_ids})
        first_month, last_month = Month.of(first_day), Month.of(last_day)
        if through.first_hour < first_month.first_hour:
            return []
        span = (first_month.first_hour, last_month.next.first_hour - DAY)
        found: list[CostItem] = []
        for subscription_id in wanted:
            days = self._ledger.days_between(
                subscription_id, level, first_month, through, usage_days=span
            )
            by_statement: dict[Month, list[DayCharges]] = {}
            for (statement_month, _), day in days.items():
                by_statement.setdefault(statement_month, []).append(day)
            for statement_month, statement_days in by_statement.items():
                found += in_window(
                    statement_items(
                        subscription_id, statement_month, statement_days, currency, level
                    ),
                    first_day,
                    last_day,
                )
        found.extend(
            self.adjustment_items(wanted, first_day, last_day, first_month, through, (level,))
        )
        return found

    def adjustment_items(
        self,
        subscription_ids: list[str],
        first_day: datetime,
        last_day: datetime,
        first: Month,
        through: Month,
        levels: Collection[Level],
    ) -> list[CostItem]:
        """The adjustments of ``subscription_ids`` at ``levels`` on statements ``first`` ..
        ``through``, each on the first day of the month it is for, if that is in the window
        (each month's adjustments read once, whatever the levels)."""
        wanted = set(subscription_ids)
        items: list[CostItem] = []
        for month in months_between(first, through):
            for adjustment in self._adjustments.of_month(month):
                day = (adjustment.corrects or adjustment.month).first_hour
                if (
                    adjustment.subscription_id.lower() in wanted
                    and adjustment.level in levels
                    and first_day <= day <= last_day
                ):
                    items.append(
                        CostItem(
                            subscription_id=adjustment.subscription_id.lower(),
                            usage_day=day,
                            statement_month=month,
                            charge_type=adjustment.category.focus_charge_category,
                            cost=adjustment.amount,
                            level=adjustment.level,
                        )
                    )
        return items


def statement_items(
    subscription_id: str,
    statement_month: Month,
    days: Iterable[DayCharges],
    currency: str | None,
    level: Level,
) -> list[CostItem]:
    """Every charge line of one statement (a subscription's ``statement_month`` at ``level``)
    as its billed share; ``days`` are the statement's usage days, all of them for the
    statement lines they hold (a line's share depends on every charge of its line), read in
    usage-day order as the FOCUS export reads them."""
    lines = [line for day in sorted(days, key=lambda day: day.usage_day) for line in day.ordered()]
    return [
        _usage_item(subscription_id, statement_month, line, billed, level)
        for line, billed in zip(lines, billed_amounts(lines, currency), strict=True)
    ]


def in_window(items: Iterable[CostItem], first_day: datetime, last_day: datetime) -> list[CostItem]:
    """The items used on ``first_day`` .. ``last_day`` (both included)."""
    return [item for item in items if first_day <= item.usage_day <= last_day]


def _usage_item(
    subscription_id: str, statement_month: Month, line: ChargeLine, billed: Decimal, level: Level
) -> CostItem:
    return CostItem(
        subscription_id=subscription_id,
        usage_day=line.usage_day,
        statement_month=statement_month,
        charge_type=USAGE_CHARGE,
        cost=billed,
        level=level,
        quantity=line.quantity,
        meter_id=line.meter_id,
        resource_uri=line.resource_uri,
        location=line.location,
        tags=line.tags,
        priced=line.priced,
    )
