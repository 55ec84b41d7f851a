"""Price sheets: what a meter costs, for whom, from when; and the checks a sheet must pass.

A sheet is data (``spec/rating.md``): a **scope**, an **effective date** (its version), a
currency and one entry per meter. Scopes:

- ``default``: the service admin's sheet. It prices the default provider's tenants and
  every delegated provider's wholesale cost;
- ``provider:{id}``: a delegated provider's sheet for its own tenants (resale);
- ``subscription:{id}``: an override for one subscription, on top of the sheet that prices
  it: a percentage discount and/or custom prices for some meters. An override has no
  currency of its own: it prices in the currency of the sheet it sits on.

An entry holds the unit price in tiers (RateCard ``MeterRates``: the tier starting at
quantity 0, then one per threshold) and a monthly included quantity. Thresholds and the
included quantity count the subscription's cumulative quantity of the meter in the
statement month (``shared.rating.engine``). Every sheet of a deployment uses one currency
(checked when a sheet is stored), so statements, roll-ups and margins never mix currencies.

Numbers are ``Decimal`` from their text, never floats: a price keeps the precision it was
given. At most 15 significant digits, because RateCard clients read ``MeterRates`` into
doubles, which hold 15 digits exactly.

:func:`build_sheet` checks everything and raises ``SheetRejectedError`` with one line per
problem (unknown meter, negative price, tiers out of order, unknown currency, ...); a sheet
that is built is valid, and the store saves it whole or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from shared.core.errors import BadInputError, SheetRejectedError
from shared.core.hours import as_utc, is_on_hour
from shared.core.meters import MeterCatalogue

# ISO 4217 codes accepted in sheets, with the digits of their minor unit (what a statement
# line rounds to): the currencies Azure's RateCard offers, plus the three-decimal ones.
CURRENCY_MINOR_UNITS: Final[Mapping[str, int]] = {
    **dict.fromkeys(
        (
            "ARS",
            "AUD",
            "BRL",
            "CAD",
            "CHF",
            "CNY",
            "CZK",
            "DKK",
            "EUR",
            "GBP",
            "HKD",
            "IDR",
            "INR",
            "MXN",
            "MYR",
            "NOK",
            "NZD",
            "PLN",
            "RUB",
            "SAR",
            "SEK",
            "SGD",
            "THB",
            "TRY",
            "TWD",
            "USD",
            "ZAR",
        ),
        2,
    ),
    **dict.fromkeys(("JPY", "KRW", "CLP", "ISK"), 0),
    **dict.fromkeys(("BHD", "KWD", "OMR", "JOD"), 3),
}
MAX_SIGNIFICANT_DIGITS: Final = 15
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ZERO: Final = Decimal(0)
HUNDRED: Final = Decimal(100)


class ScopeKind(StrEnum):
    DEFAULT = "default"
    PROVIDER = "provider"
    SUBSCRIPTION = "subscription"


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """Whose sheet: the admin's default, a delegated provider's, or one subscription's."""

    kind: ScopeKind
    subject: str = ""  # the provider's or subscription's id, lower case; "" for default

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``default``, ``provider:{id}`` or ``subscription:{id}`` (BadInputError otherwise)."""
        kind, _, subject = text.strip().lower().partition(":")
        if kind == ScopeKind.DEFAULT and not subject:
            return cls(ScopeKind.DEFAULT)
        if kind in (ScopeKind.PROVIDER, ScopeKind.SUBSCRIPTION) and _GUID.match(subject):
            return cls(ScopeKind(kind), subject)
        raise BadInputError(
            f"scope {text!r} must be 'default', 'provider:<subscription id>' or "
            "'subscription:<subscription id>'",
            code="InvalidScope",
        )

    @classmethod
    def default(cls) -> Scope:
        return cls(ScopeKind.DEFAULT)

    @classmethod
    def provider(cls, subscription_id: str) -> Scope:
        return cls(ScopeKind.PROVIDER, subscription_id.lower())

    @classmethod
    def subscription(cls, subscription_id: str) -> Scope:
        return cls(ScopeKind.SUBSCRIPTION, subscription_id.lower())

    @property
    def is_override(self) -> bool:
        return self.kind is ScopeKind.SUBSCRIPTION

    def __str__(self) -> str:
        return self.kind.value if not self.subject else f"{self.kind.value}:{self.subject}"


@dataclass(frozen=True, slots=True)
class Tier:
    """``unit_price`` applies to the month's cumulative quantity from ``start`` on."""

    start: Decimal
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One meter's price: tiers (the first starts at 0) and a monthly included quantity."""

    meter_id: str  # as the catalogue spells it
    tiers: tuple[Tier, ...]
    included_quantity: Decimal = ZERO

    @property
    def meter_key(self) -> str:
        return self.meter_id.lower()


@dataclass(frozen=True)
class PriceSheet:
    """One version of one scope's prices (valid: made by :func:`build_sheet`)."""

    scope: Scope
    effective_from: datetime  # UTC, on the hour
    currency: str | None  # None for overrides
    entries: Mapping[str, PriceEntry]  # by meter key
    discount_percent: Decimal = ZERO  # overrides only
    _ids: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def version(self) -> str:
        """The version's name, recorded by every figure rated with it."""
        return f"{self.scope}@{version_time(self.effective_from)}"

    def entry_id(self, meter_key: str) -> str:
        """The name of one entry (the FOCUS ``SkuPriceId``): ``{version}/{meter id}``."""
        name = self._ids.get(meter_key)
        if name is None:
            name = self._ids[meter_key] = f"{self.version}/{meter_key}"
        return name


def version_time(moment: datetime) -> str:
    return f"{as_utc(moment):%Y-%m-%dT%H:%MZ}"


@dataclass(frozen=True, slots=True)
class SheetRow:
    """One tier of one meter as a file states it, before any check (``where`` names its line)."""

    where: str
    meter_id: str
    tier_start: str
    unit_price: str
    included_quantity: str = ""


@dataclass(frozen=True, slots=True)
class SheetDraft:
    """A sheet as read from a file: text everywhere, nothing checked yet."""

    scope: str
    effective_from: str
    currency: str
    rows: Sequence[SheetRow]
    discount_percent: str = ""


def parse_amount(text: str) -> Decimal | None:
    """A plain decimal number (no exponent, NaN, infinity or separators), or None."""
    cleaned = text.strip()
    if not _DECIMAL_TEXT.match(cleaned):
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        return None


def parse_effective(text: str) -> datetime | None:
    """A date (midnight UTC) or an ISO time on the hour (UTC if no offset), or None."""
    cleaned = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment if is_on_hour(moment) else None


def _significant_digits(value: Decimal) -> int:
    return len(value.normalize().as_tuple().digits)


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def number(self, text: str, where: str, what: str, *, allow_negative: bool = False) -> Decimal:
        value = parse_amount(text)
        if value is None:
            self.add(f"{where}: {what} {text.strip()!r} is not a plain decimal number")
            return ZERO
        if value < 0 and not allow_negative:
            self.add(f"{where}: negative {what} {text.strip()}")
        elif _significant_digits(value) > MAX_SIGNIFICANT_DIGITS:
            self.add(
                f"{where}: {what} {text.strip()} has more than "
                f"{MAX_SIGNIFICANT_DIGITS} significant digits"
            )
        return value


def build_sheet(draft: SheetDraft, meters: MeterCatalogue) -> PriceSheet:
    """The checked sheet ``draft`` describes; SheetRejectedError lists every problem."""
    problems = _Problems()
    scope: Scope | None = None
    try:
        scope = Scope.parse(draft.scope)
    except BadInputError as error:
        problems.add(error.message)
    effective = parse_effective(draft.effective_from)
    if effective is None:
        problems.add(
            f"effective date {draft.effective_from.strip()!r} must be a date or an ISO time "
            "on the hour (UTC)"
        )
    currency = draft.currency.strip().upper() or None
    override = scope is not None and scope.is_override
    if override and currency is not None:
        problems.add(
            "a subscription override has no currency: it prices in the currency of the sheet "
            "it sits on"
        )
    elif not override and currency is None:
        problems.add("currency is missing")
    elif currency is not None and currency not in CURRENCY_MINOR_UNITS:
        problems.add(f"unknown currency {currency!r} (an ISO 4217 code, e.g. USD)")
    discount = ZERO
    if draft.discount_percent.strip():
        discount = problems.number(draft.discount_percent, "sheet", "discount percent")
        if not override:
            problems.add("a discount percent belongs to a subscription override only")
        elif discount > HUNDRED:
            problems.add(f"sheet: discount percent {discount} is above 100")
    entries = _entries(draft.rows, meters, problems)
    if not entries and not (override and discount):
        problems.add("the sheet prices no meter")
    if problems.lines:
        raise SheetRejectedError(problems.lines)
    assert scope is not None  # no problems: both parsed
    assert effective is not None
    return PriceSheet(scope, effective, currency, entries, discount)


def _entries(
    rows: Iterable[SheetRow], meters: MeterCatalogue, problems: _Problems
) -> dict[str, PriceEntry]:
    """Rows grouped into entries by meter, tiers in the order given (which must be rising)."""
    grouped: dict[str, list[SheetRow]] = {}
    spelling: dict[str, str] = {}
    for row in rows:
        meter = meters.lookup(row.meter_id)
        if meter is None:
            problems.add(f"{row.where}: unknown meter {row.meter_id.strip()!r}")
            continue
        grouped.setdefault(meter.key, []).append(row)
        spelling[meter.key] = meter.meter_id
    entries: dict[str, PriceEntry] = {}
    for key, meter_rows in grouped.items():
        tiers: list[Tier] = []
        included: Decimal | None = None
        for row in meter_rows:
            start = problems.number(row.tier_start or "0", row.where, "tier start")
            price = problems.number(row.unit_price, row.where, "price")
            if tiers and start <= tiers[-1].start:
                problems.add(
                    f"{row.where}: meter {spelling[key]}: tiers out of order "
                    f"(tier starting at {start} after the one starting at {tiers[-1].start})"
                )
            elif not tiers and start != 0:
                problems.add(
                    f"{row.where}: meter {spelling[key]}: the first tier must start at 0, "
                    f"not {start}"
                )
            tiers.append(Tier(start, price))
            if row.included_quantity.strip():
                value = problems.number(row.included_quantity, row.where, "included quantity")
                if included is not None and value != included:
                    problems.add(
                        f"{row.where}: meter {spelling[key]}: included quantity given twice, "
                        f"differently ({included} and {value})"
                    )
                included = value
        entries[key] = PriceEntry(spelling[key], tuple(tiers), included or ZERO)
    return entries


def minor_unit(currency: str) -> Decimal:
    """The currency's smallest amount as a quantum: ``Decimal('0.01')`` for USD."""
    return Decimal(1).scaleb(-CURRENCY_MINOR_UNITS[currency])
