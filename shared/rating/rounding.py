"""The one rounding rule of money, and how a rounded statement line is spread over its rows.

**Rule.** Rating is exact (``shared.rating.engine``); money is rounded once, per statement
line: one meter's usage of one usage month on one statement (its priced quantity, or its
unpriced quantity, which is a line of its own), rounded half-even to the currency's minor
unit. Everything above a line is a sum of rounded lines and adjustments (which are whole
minor units): the statement total, a provider's roll-up, the admin's grand total. Below a
line, the ledger's charge lines (one per usage day, resource and price part) carry exact
amounts; a line's rounded amount is spread over them by **largest remainder**: each gets
its exact amount rounded down to the minor unit, and the minor units still missing go one
each to the charge lines with the largest remainders (ties: the earlier line in key order).
So every FOCUS row's ``BilledCost`` is a whole number of minor units, a line's rows add up
to the line, and an ``InvoiceId``'s rows to the statement total, to the cent.

Why per line and not per row: a row of one resource's day is often a fraction of a cent
(a static IP's hour is 0.0036), and rounding thousands of such rows one by one would drop
or invent money at the scale of the row count; a line rounds once, so a statement is never
more than half a minor unit per line away from its exact sum.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final, Protocol

from shared.rating.engine import RATING_CONTEXT
from shared.rating.sheets import ZERO, minor_unit

ROUNDING_RULE: Final = (
    "each statement line (a meter's priced, or unpriced, usage of one usage month) is rounded "
    "half-even to the currency's minor unit once; totals are sums of rounded lines and "
    "adjustments; a line's FOCUS rows share its rounded amount by largest remainder"
)


def quantum(currency: str | None) -> Decimal | None:
    """The currency's minor unit (``0.01`` for USD); None without a currency (nothing priced)."""
    return None if currency is None else minor_unit(currency)


def round_amount(amount: Decimal, currency: str | None) -> Decimal:
    """An exact amount rounded half-even to the currency's minor unit (the one rounding)."""
    step = quantum(currency)
    if step is None:
        return amount
    with localcontext(RATING_CONTEXT):
        return amount.quantize(step, rounding=ROUND_HALF_EVEN)


def allocate(amounts: Sequence[Decimal], currency: str | None) -> list[Decimal]:
    """``amounts`` (the exact charge lines of one statement line, in key order) as whole
    minor units that add up to the line's rounded amount (largest remainder; see the
    module docstring). Without a currency nothing is priced and the amounts stay as they are.
    """
    step = quantum(currency)
    if step is None or not amounts:
        return list(amounts)
    with localcontext(RATING_CONTEXT):
        target = round_amount(sum(amounts, ZERO), currency)
        floors = [amount.quantize(step, rounding=ROUND_FLOOR) for amount in amounts]
        missing = int((target - sum(floors, ZERO)) / step)
        if not 0 <= missing <= len(amounts):  # pragma: no cover - arithmetic guarantees it
            raise ArithmeticError(f"cannot spread {target} over {len(amounts)} amounts")
        by_remainder = sorted(
            range(len(amounts)), key=lambda index: (floors[index] - amounts[index], index)
        )
        for index in by_remainder[:missing]:
            floors[index] += step
    return floors


class RoundedLine(Protocol):
    """What spreading a statement line needs of a charge line: the statement line it
    belongs to and its exact amount (``shared.rating.charges.ChargeLine``)."""

    @property
    def line_key(self) -> Hashable: ...

    @property
    def amount(self) -> Decimal: ...


def billed_amounts(lines: Sequence[RoundedLine], currency: str | None) -> list[Decimal]:
    """Each charge line's billed amount (FOCUS ``BilledCost``, the cost query's ``Cost``):
    its statement line's rounded amount spread over the line's charges by largest
    remainder, so the charges of a statement line add up to it and a statement's to its
    total. ``lines`` are one statement's (one subscription, statement month and level), in
    key order; every charge line of a statement line must be among them."""
    groups: dict[Hashable, list[int]] = {}
    for index, line in enumerate(lines):
        groups.setdefault(line.line_key, []).append(index)
    billed = [ZERO] * len(lines)
    for indexes in groups.values():
        for index, amount in zip(
            indexes, allocate([lines[i].amount for i in indexes], currency), strict=True
        ):
            billed[index] = amount
    return billed
