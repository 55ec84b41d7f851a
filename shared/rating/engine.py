"""The rating engine: which price applies to a usage row, and what the row costs.

Decisions (``spec/rating.md``, invariant 10):

- **Which price**: the sheet version effective at the row's *usage* start (late usage is
  priced as of when it was used). **Which month**: the row's *reported* hour decides the
  statement month; the rater rates one subscription's rows of one statement month.
- **Two levels.** A subscription's usage is *retail*-priced for the subscription itself:
  by its delegated provider's sheet (resale), else by the admin's default sheet (the
  default provider's tenants; and a delegated provider's tenants in hours before its own
  sheet took effect). The same usage of a delegated provider's tenant is *wholesale*-priced
  for that provider by the admin's default sheet. A subscription override applies wherever
  its subscription is the buyer: ``subscription:{tenant}`` on retail, ``subscription:{provider}``
  on the provider's wholesale.
- **Override**: a custom price for a meter replaces the sheet's entry; otherwise the sheet's
  prices less the discount percent. The sheet's own price stays the *list* price.
- **Tiers and included quantity** count the subscription's cumulative quantity of a meter
  in the statement month, in the order rows are fed: reported hour, then storage order
  (usage hour, meter, resource) inside an hour, which is deterministic and the same
  however the hours were collected. The included quantity is free; tier thresholds count
  it (a tier starting at 100 starts at the month's 100th unit, included or not). A row
  that crosses a tier (or the included quantity) is split at the boundary.
- **Exact**: quantities are the stored doubles' shortest decimal text, prices the sheet's
  decimals, and all arithmetic runs in :data:`RATING_CONTEXT` (60 digits), so nothing is
  rounded here. Rounding happens once, on a statement line (``shared.rating.statements``).

Every rated part names the sheet version and entry it used (and the override, if any):
what a statement line shows and what an export's ``SkuPriceId`` is.

The rater (``shared.rating.rater``) makes a ``Pricing`` per (subscription, level) and a
``MonthRater`` per statement month, fed the month's rows in order (resuming from the stored
tier counters); each ``Rated`` carries the row's exact amounts, which ``shared.rating.charges``
groups into the stored charge lines every surface reads.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from enum import StrEnum
from typing import Final

from shared.core.hours import HOUR
from shared.core.shapes import month_parts
from shared.rating.sheets import HUNDRED, ZERO, PriceSheet, Scope, Tier
from shared.storage.subscriptions import Subscription

RATING_CONTEXT: Final = Context(prec=60, rounding=ROUND_HALF_EVEN)


def exact(quantity: float) -> Decimal:
    """A stored double as the decimal it was written as (its shortest round-trip text)."""
    return Decimal(repr(quantity))


@dataclass(frozen=True, order=True, slots=True)
class Month:
    """A calendar month (UTC): the period of one statement."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month | None:
        """Exactly ``yyyy-MM`` in ASCII digits (e.g. ``2026-11``), 1970-01 to 9998-12, or None
        (``shared.core.shapes``: ``²`` or a full-width digit is not a digit here)."""
        parts = month_parts(text)
        if parts is None:
            return None
        year, month = parts
        return cls(year, month) if 1970 <= year <= 9998 else None

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @property
    def first_hour(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @property
    def last_hour(self) -> datetime:
        return self.next.first_hour - HOUR

    @property
    def key(self) -> str:
        return f"{self.year:04d}{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


class Level(StrEnum):
    """Who pays: the subscription itself (retail) or its delegated provider (wholesale)."""

    RETAIL = "retail"
    WHOLESALE = "wholesale"


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """The price of one meter for one buyer at one moment, with where it came from."""

    meter_id: str
    sheet: str  # the version of the sheet that priced it (the override's when custom-priced)
    entry: str  # the entry used: the FOCUS SkuPriceId
    override: str | None  # the override version applied, if any
    tiers: tuple[Tier, ...]  # what the buyer pays (override applied)
    list_tiers: tuple[Tier, ...]  # the sheet's own prices
    included: Decimal
    effective_from: datetime  # when this combination of sheet and override took effect
    _breaks: tuple[Decimal, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(
        cls,
        meter_id: str,
        sheets: tuple[PriceSheet | None, PriceSheet | None],
        entry: str,
        tiers: tuple[Tier, ...],
        list_tiers: tuple[Tier, ...],
        included: Decimal,
        *,
        custom: bool,
    ) -> ResolvedPrice:
        base, override = sheets
        priced_by = override if custom else base
        assert priced_by is not None  # a price comes from a sheet
        applied = (
            override if override is not None and (custom or override.discount_percent) else None
        )
        effective = max(s.effective_from for s in (base, applied) if s is not None)
        breaks = {t.start for t in tiers} | {t.start for t in list_tiers} | {included}
        return cls(
            meter_id,
            priced_by.version,
            entry,
            applied.version if applied else None,
            tiers,
            list_tiers,
            included,
            effective,
            tuple(sorted(breaks)),
        )

    def unit_prices(self) -> tuple[Decimal, ...]:
        return tuple(t.unit_price for t in self.tiers)


def _tier_at(tiers: tuple[Tier, ...], position: Decimal) -> Tier:
    """The tier that prices the unit starting at ``position`` (tiers start at 0, rising)."""
    chosen = tiers[0]
    for tier in tiers:
        if tier.start > position:
            break
        chosen = tier
    return chosen


@dataclass(frozen=True, slots=True)
class RatedPart:
    """Part of a row's quantity at one unit price: a tier, or the included quantity."""

    price: ResolvedPrice
    tier_start: Decimal | None  # None: inside the month's included quantity (free)
    unit_price: Decimal
    list_unit_price: Decimal
    quantity: Decimal
    amount: Decimal  # quantity x unit_price, exact
    list_amount: Decimal


@dataclass(frozen=True, slots=True)
class Rated:
    """One row rated: its parts and exact amounts; ``price`` None means no sheet prices it."""

    meter_id: str
    quantity: Decimal
    price: ResolvedPrice | None
    parts: tuple[RatedPart, ...]
    amount: Decimal
    list_amount: Decimal


class PriceBook:
    """Every stored sheet version, indexed by scope and effective time."""

    def __init__(self, sheets: Iterable[PriceSheet]):
        by_scope: dict[Scope, list[PriceSheet]] = {}
        for sheet in sheets:
            by_scope.setdefault(sheet.scope, []).append(sheet)
        self._versions = {
            scope: sorted(versions, key=lambda s: s.effective_from)
            for scope, versions in by_scope.items()
        }
        self._starts = {
            scope: [sheet.effective_from for sheet in versions]
            for scope, versions in self._versions.items()
        }
        self.currency = next(
            (s.currency for v in self._versions.values() for s in v if s.currency), None
        )

    def sheets(self) -> list[PriceSheet]:
        return [sheet for versions in self._versions.values() for sheet in versions]

    def version_at(self, scope: Scope, moment: datetime) -> PriceSheet | None:
        """The version of ``scope`` in effect at ``moment`` (the latest not after it)."""
        starts = self._starts.get(scope)
        if not starts:
            return None
        index = bisect.bisect_right(starts, moment) - 1
        return self._versions[scope][index] if index >= 0 else None

    def pricing(
        self, subscription_id: str, subscriptions: Mapping[str, Subscription], level: Level
    ) -> Pricing | None:
        """How ``level`` pays for the subscription's usage; None if that level does not
        exist for it (wholesale of a subscription that no delegated provider offered)."""
        subscription_id = subscription_id.lower()
        provider = _delegated_provider(subscription_id, subscriptions)
        if level is Level.RETAIL:
            bases = (Scope.provider(provider), Scope.default()) if provider else (Scope.default(),)
            return Pricing(self, subscription_id, subscription_id, level, bases)
        if provider is None:
            return None
        return Pricing(self, subscription_id, provider, level, (Scope.default(),))


def _delegated_provider(
    subscription_id: str, subscriptions: Mapping[str, Subscription]
) -> str | None:
    """The delegated provider that offered the subscription, or None (the default one's)."""
    subscription = subscriptions.get(subscription_id)
    provider_id = (subscription.provider_subscription_id or "").lower() if subscription else ""
    provider = subscriptions.get(provider_id) if provider_id else None
    if provider is None or not provider.provider_subscription_id:
        return None  # offered by the default provider subscription (the root), or unknown
    return provider_id


class Pricing:
    """The prices one buyer pays for one subscription's usage, resolved per meter and time."""

    def __init__(
        self,
        book: PriceBook,
        subscription_id: str,
        buyer: str,
        level: Level,
        bases: tuple[Scope, ...],
    ) -> None:
        self.book = book
        self.subscription_id = subscription_id
        self.buyer = buyer
        self.level = level
        self.bases = bases
        self.override_scope = Scope.subscription(buyer)
        self._sheets_at: dict[datetime, tuple[PriceSheet | None, PriceSheet | None]] = {}
        self._prices: dict[tuple[str, str, str], ResolvedPrice | None] = {}

    def sheets_at(self, moment: datetime) -> tuple[PriceSheet | None, PriceSheet | None]:
        """(the base sheet, the override) in effect at ``moment`` (cached per usage hour)."""
        found = self._sheets_at.get(moment)
        if found is None:
            base = next(
                (s for s in (self.book.version_at(b, moment) for b in self.bases) if s), None
            )
            found = (base, self.book.version_at(self.override_scope, moment))
            self._sheets_at[moment] = found
        return found

    def price(self, meter_key: str, moment: datetime) -> ResolvedPrice | None:
        """The meter's price at ``moment``; None if no sheet in effect prices it."""
        base, override = self.sheets_at(moment)
        cache_key = (meter_key, base.version if base else "", override.version if override else "")
        if cache_key in self._prices:
            return self._prices[cache_key]
        resolved = _resolve(meter_key, base, override)
        self._prices[cache_key] = resolved
        return resolved

    def effective_prices(self, moment: datetime) -> list[ResolvedPrice]:
        """Every meter priced at ``moment`` (the RateCard's and ``prices show``'s view)."""
        base, override = self.sheets_at(moment)
        keys = set(base.entries if base else ()) | set(override.entries if override else ())
        found = (self.price(key, moment) for key in sorted(keys))
        return [price for price in found if price is not None]


def _resolve(
    meter_key: str, base: PriceSheet | None, override: PriceSheet | None
) -> ResolvedPrice | None:
    entry = base.entries.get(meter_key) if base else None
    custom = override.entries.get(meter_key) if override else None
    if custom is not None:
        assert override is not None
        list_tiers = entry.tiers if entry is not None else custom.tiers
        return ResolvedPrice.of(
            custom.meter_id,
            (base, override),
            override.entry_id(meter_key),
            custom.tiers,
            list_tiers,
            custom.included_quantity,
            custom=True,
        )
    if entry is None:
        return None
    assert base is not None
    tiers = entry.tiers
    discount = override.discount_percent if override else ZERO
    if discount:
        with localcontext(RATING_CONTEXT):
            keep = (HUNDRED - discount) / HUNDRED
            tiers = tuple(Tier(t.start, t.unit_price * keep) for t in entry.tiers)
    return ResolvedPrice.of(
        entry.meter_id,
        (base, override),
        base.entry_id(meter_key),
        tiers,
        entry.tiers,
        entry.included_quantity,
        custom=False,
    )


class MonthRater:
    """Rates one subscription's rows of one statement month for one buyer.

    Feed rows in reported-hour order (then storage order): the cumulative quantity per
    meter, which places a row on the tiers, is this object's state.
    """

    def __init__(self, pricing: Pricing, used: dict[str, Decimal] | None = None) -> None:
        self.pricing = pricing
        # Cumulative quantity per meter key so far this month: shared with (and saved by)
        # the caller's month state, so rating resumes where the stored month left off.
        self._used: dict[str, Decimal] = {} if used is None else used

    def rate(self, meter_id: str, usage_start: datetime, quantity: Decimal) -> Rated:
        key = meter_id.lower()
        price = self.pricing.price(key, usage_start)
        if price is None:
            return Rated(meter_id, quantity, None, (), ZERO, ZERO)
        with localcontext(RATING_CONTEXT):
            start = self._used.get(key, ZERO)
            end = start + quantity
            self._used[key] = end
            parts = tuple(_parts(price, start, end))
            amount = sum((p.amount for p in parts), ZERO)
            list_amount = sum((p.list_amount for p in parts), ZERO)
        return Rated(price.meter_id, quantity, price, parts, amount, list_amount)


def _parts(price: ResolvedPrice, start: Decimal, end: Decimal) -> Iterable[RatedPart]:
    """The segments of [start, end) between tier and included-quantity boundaries."""
    cuts = [b for b in price._breaks if start < b < end]
    edges = [start, *cuts, end]
    for low, high in itertools.pairwise(edges):
        if high == low and low != start:
            continue
        quantity = high - low
        tier = _tier_at(price.tiers, low)
        list_price = _tier_at(price.list_tiers, low).unit_price
        free = low < price.included
        unit_price = ZERO if free else tier.unit_price
        yield RatedPart(
            price=price,
            tier_start=None if free else tier.start,
            unit_price=unit_price,
            list_unit_price=list_price,
            quantity=quantity,
            amount=quantity * unit_price,
            list_amount=quantity * list_price,
        )
