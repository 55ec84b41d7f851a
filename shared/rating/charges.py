"""What the ledger holds for one subscription, level and statement month: rated charges.

Rating (``shared.rating.rater``) feeds a month's rows, in reported-hour order, through the
engine (``MonthRater``) and adds each rated row to two things, both stored
(``shared.rating.ledger``) and read by every surface that shows money:

- :class:`MonthCharges`, the statement-line state: lines per (meter, usage month, priced)
  with their tier parts (sheet version, entry, override, tier, unit and list prices,
  quantity, exact amounts), the tier counters per meter that rating resumes from, the rows
  rated, the last reported hour rated (``through``) and the fingerprint of the prices it
  was rated with. A statement is this plus the month's adjustments; it never reads rows.
- :class:`DayCharges`, per usage day, the charge lines: one per (meter, resource, sheet
  entry, tier part), with quantity, exact amounts, unit prices, location, the resource's
  tags and the first and last reported hour. This is the grain of a FOCUS row and of a
  cost series point (usage day; subscription, resource, meter; level).

A priced row and an unpriced one of the same meter never share a line (**partial pricing
keeps its money**): the unpriced quantity is a line of its own, ``priced: false``, beside
the priced line, which keeps its amount.

Amounts here are exact (60-digit decimals); rounding is ``shared.rating.rounding``'s, once,
when a statement line is shown. The documents are compact JSON (decimals as text, exact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

from shared.core.hours import hour_key, parse_hour_key
from shared.rating.engine import RATING_CONTEXT, Level, Month, Rated
from shared.rating.sheets import ZERO
from shared.storage.usage_rows import UsageRow, resource_hash

VERSION: Final = 1


def text(value: Decimal) -> str:
    """Decimal text without exponent (what documents and answers carry)."""
    return format(value, "f")


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _text_or_none(value: Decimal | None) -> str | None:
    return None if value is None else text(value)


# --- statement lines (the month) -------------------------------------------------------------


PartKey = tuple[str, str | None, Decimal | None, Decimal, Decimal]
LineKey = tuple[str, Month, bool]


@dataclass
class LinePart:
    """A line's quantity at one price: a tier of one sheet entry, or its included quantity."""

    sheet: str
    entry: str
    override: str | None
    tier_start: Decimal | None  # None: inside the month's included quantity (free)
    unit_price: Decimal
    list_unit_price: Decimal
    quantity: Decimal = ZERO
    amount: Decimal = ZERO
    list_amount: Decimal = ZERO

    @property
    def key(self) -> PartKey:
        return (self.entry, self.override, self.tier_start, self.unit_price, self.list_unit_price)

    def dump(self) -> list[Any]:
        return [
            self.sheet,
            self.entry,
            self.override,
            _text_or_none(self.tier_start),
            text(self.unit_price),
            text(self.list_unit_price),
            text(self.quantity),
            text(self.amount),
            text(self.list_amount),
        ]

    @classmethod
    def load(cls, item: list[Any]) -> LinePart:
        sheet, entry, override, tier, unit, listed, quantity, amount, list_amount = item
        return cls(
            sheet,
            entry,
            override,
            _decimal(tier),
            Decimal(unit),
            Decimal(listed),
            Decimal(quantity),
            Decimal(amount),
            Decimal(list_amount),
        )


@dataclass
class StatementLine:
    """One meter's usage of one usage month on one statement, priced or not (exact)."""

    meter_id: str
    usage_month: Month
    priced: bool
    usage_start: datetime
    usage_end: datetime
    quantity: Decimal = ZERO
    amount: Decimal = ZERO
    list_amount: Decimal = ZERO
    unit_prices: list[Decimal] = field(default_factory=list)
    parts: dict[PartKey, LinePart] = field(default_factory=dict)

    @property
    def key(self) -> LineKey:
        return (self.meter_id.lower(), self.usage_month, self.priced)

    def dump(self) -> list[Any]:
        return [
            self.meter_id,
            str(self.usage_month),
            self.priced,
            hour_key(self.usage_start),
            hour_key(self.usage_end),
            text(self.quantity),
            text(self.amount),
            text(self.list_amount),
            [text(price) for price in self.unit_prices],
            [part.dump() for part in self.parts.values()],
        ]

    @classmethod
    def load(cls, item: list[Any]) -> StatementLine:
        meter, month, priced, start, end, quantity, amount, list_amount, prices, parts = item
        usage_month = Month.parse(month)
        assert usage_month is not None  # written by dump
        loaded = [LinePart.load(part) for part in parts]
        return cls(
            meter,
            usage_month,
            bool(priced),
            parse_hour_key(start),
            parse_hour_key(end),
            Decimal(quantity),
            Decimal(amount),
            Decimal(list_amount),
            [Decimal(price) for price in prices],
            {part.key: part for part in loaded},
        )


@dataclass
class MonthCharges:
    """The statement-line state of one (subscription, level, statement month)."""

    subscription_id: str
    level: Level
    month: Month
    buyer: str
    currency: str | None
    fingerprint: str
    provider: str = ""  # the subscription's provider when rated (the charges index's key)
    through: datetime | None = None  # the last reported hour rated into it
    rows: int = 0
    used: dict[str, Decimal] = field(default_factory=dict)  # tier counters per meter key
    lines: dict[LineKey, StatementLine] = field(default_factory=dict)
    final: bool = False
    finalised_at: datetime | None = None

    def add(self, row: UsageRow, rated: Rated) -> None:
        """Add one rated row to its line (the engine already moved the tier counter)."""
        self.rows += 1
        priced = rated.price is not None
        key = (rated.meter_id.lower(), Month.of(row.usage_start), priced)
        line = self.lines.get(key)
        if line is None:
            line = StatementLine(rated.meter_id, key[1], priced, row.usage_start, row.usage_end)
            self.lines[key] = line
        else:
            line.usage_start = min(line.usage_start, row.usage_start)
            line.usage_end = max(line.usage_end, row.usage_end)
        with localcontext(RATING_CONTEXT):
            line.quantity += rated.quantity
            line.amount += rated.amount
            line.list_amount += rated.list_amount
            for rated_part in rated.parts:
                price = rated_part.price
                part_key = (
                    price.entry,
                    price.override,
                    rated_part.tier_start,
                    rated_part.unit_price,
                    rated_part.list_unit_price,
                )
                part = line.parts.get(part_key)
                if part is None:
                    part = line.parts[part_key] = LinePart(
                        price.sheet,
                        price.entry,
                        price.override,
                        rated_part.tier_start,
                        rated_part.unit_price,
                        rated_part.list_unit_price,
                    )
                    for unit_price in price.unit_prices():
                        if unit_price not in line.unit_prices:
                            line.unit_prices.append(unit_price)
                part.quantity += rated_part.quantity
                part.amount += rated_part.amount
                part.list_amount += rated_part.list_amount

    def ordered_lines(self) -> list[StatementLine]:
        """Lines in statement order: usage month, meter, priced before unpriced."""
        return [self.lines[key] for key in sorted(self.lines, key=lambda k: (k[1], k[0], not k[2]))]

    def document(self) -> str:
        """The state as compact JSON text (what the ledger stores)."""
        body = {
            "v": VERSION,
            "used": {meter: text(quantity) for meter, quantity in sorted(self.used.items())},
            "lines": [line.dump() for line in self.ordered_lines()],
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    def load_document(self, document: str) -> None:
        body = json.loads(document)
        self.used = {meter: Decimal(quantity) for meter, quantity in body["used"].items()}
        loaded = [StatementLine.load(item) for item in body["lines"]]
        self.lines = {line.key: line for line in loaded}


# --- charge lines (the days) -----------------------------------------------------------------

ChargeKey = tuple[str, str, str | None, Decimal | None, Decimal | None, Decimal | None]


@dataclass
class ChargeLine:
    """One usage day's charge of one resource's meter at one price part, exact."""

    usage_day: datetime
    meter_id: str
    resource_uri: str
    location: str
    tags: str | None  # the resource's tags (JSON text) as last reported
    entry: str | None  # the sheet entry (FOCUS SkuPriceId); None: no sheet prices the meter
    sheet: str | None
    override: str | None
    tier_start: Decimal | None  # None with an entry: the month's included quantity
    unit_price: Decimal | None
    list_unit_price: Decimal | None
    first_reported: datetime
    last_reported: datetime
    quantity: Decimal = ZERO
    amount: Decimal = ZERO
    list_amount: Decimal = ZERO

    @property
    def priced(self) -> bool:
        return self.entry is not None

    @property
    def key(self) -> ChargeKey:
        return (
            self.meter_id.lower(),
            self.resource_uri.lower(),
            self.entry,
            self.tier_start,
            self.unit_price,
            self.list_unit_price,
        )

    @property
    def line_key(self) -> LineKey:
        """The statement line this charge belongs to."""
        return (self.meter_id.lower(), Month.of(self.usage_day), self.priced)


def charge_order(key: ChargeKey) -> tuple[Any, ...]:
    """Key order of charge lines (FOCUS rows, the rounding's tie-break): meter, resource,
    entry, included before tiers, tier, prices; unpriced first."""
    meter, resource, entry, tier_start, unit_price, list_price = key
    return (
        meter,
        resource,
        entry or "",
        tier_start is not None,
        tier_start or ZERO,
        unit_price or ZERO,
        list_price or ZERO,
    )


@dataclass
class DayCharges:
    """The charge lines of one usage day in one statement month, for one level.

    ``through`` and ``fingerprint`` record the last reported hour and the prices this day
    was last written with: a rerun after a crash between writing a day and writing its
    month knows the day already holds the hours after the month's ``through`` (the ledger's
    write order; ``shared.rating.ledger``)."""

    usage_day: datetime
    through: datetime | None = None
    fingerprint: str = ""
    lines: dict[ChargeKey, ChargeLine] = field(default_factory=dict)

    def add(self, reported_hour: datetime, row: UsageRow, rated: Rated) -> None:
        """Add one rated row (each of its price parts) to this day's lines."""
        if rated.price is None:
            self._add(reported_hour, row, rated.meter_id, None, rated.quantity, ZERO, ZERO)
            return
        for part in rated.parts:
            self._add(
                reported_hour, row, rated.meter_id, part, part.quantity, part.amount,
                part.list_amount,
            )  # fmt: skip

    def _add(
        self,
        reported_hour: datetime,
        row: UsageRow,
        meter_id: str,
        part: Any,
        quantity: Decimal,
        amount: Decimal,
        list_amount: Decimal,
    ) -> None:
        price = part.price if part is not None else None
        key: ChargeKey = (
            meter_id.lower(),
            row.resource_uri.lower(),
            price.entry if price else None,
            part.tier_start if part is not None else None,
            part.unit_price if part is not None else None,
            part.list_unit_price if part is not None else None,
        )
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = ChargeLine(
                usage_day=self.usage_day,
                meter_id=meter_id,
                resource_uri=row.resource_uri,
                location=row.location,
                tags=row.tags_json,
                entry=price.entry if price else None,
                sheet=price.sheet if price else None,
                override=price.override if price else None,
                tier_start=key[3],
                unit_price=key[4],
                list_unit_price=key[5],
                first_reported=reported_hour,
                last_reported=reported_hour,
            )
        else:
            line.first_reported = min(line.first_reported, reported_hour)
            line.last_reported = max(line.last_reported, reported_hour)
            line.tags = row.tags_json if row.tags_json is not None else line.tags
        with localcontext(RATING_CONTEXT):
            line.quantity += quantity
            line.amount += amount
            line.list_amount += list_amount

    def ordered(self) -> list[ChargeLine]:
        return [self.lines[key] for key in sorted(self.lines, key=charge_order)]

    def shards(self, max_chars: int) -> list[str]:
        """The lines as JSON documents of at most about ``max_chars`` characters each, cut
        in key order (so the same lines always give the same documents); one at least.
        Each document names its resources once (``r``: hash -> URI), its lines by hash."""
        documents: list[str] = []
        resources: dict[str, str] = {}
        items: list[list[Any]] = []
        size = 0
        for line in self.ordered():
            resource = resource_hash(line.resource_uri)
            item = _charge_item(line, resource)
            item_cost = len(json.dumps(item, ensure_ascii=False)) + 1
            uri_cost = len(json.dumps(line.resource_uri, ensure_ascii=False)) + len(resource) + 4
            cost = item_cost + (0 if resource in resources else uri_cost)
            if items and size + cost > max_chars:
                documents.append(_day_document(resources, items))
                resources, items, size = {}, [], 0
                cost = item_cost + uri_cost
            resources.setdefault(resource, line.resource_uri)
            items.append(item)
            size += cost
        documents.append(_day_document(resources, items))
        return documents

    def load_shard(self, document: str) -> None:
        body = json.loads(document)
        resources = body["r"]
        for item in body["l"]:
            line = _charge_line(self.usage_day, item, resources)
            self.lines[line.key] = line


def _charge_item(line: ChargeLine, resource: str) -> list[Any]:
    return [
        line.meter_id,
        resource,
        line.location,
        line.entry,
        line.sheet,
        line.override,
        _text_or_none(line.tier_start),
        _text_or_none(line.unit_price),
        _text_or_none(line.list_unit_price),
        hour_key(line.first_reported),
        hour_key(line.last_reported),
        text(line.quantity),
        text(line.amount),
        text(line.list_amount),
        line.tags,
    ]


def _charge_line(day: datetime, item: list[Any], resources: dict[str, str]) -> ChargeLine:
    meter, resource, location, entry, sheet, override, tier, unit, listed = item[:9]
    first, last, quantity, amount, list_amount, tags = item[9:]
    return ChargeLine(
        usage_day=day,
        meter_id=meter,
        resource_uri=resources[resource],
        location=location,
        tags=tags,
        entry=entry,
        sheet=sheet,
        override=override,
        tier_start=_decimal(tier),
        unit_price=_decimal(unit),
        list_unit_price=_decimal(listed),
        first_reported=parse_hour_key(first),
        last_reported=parse_hour_key(last),
        quantity=Decimal(quantity),
        amount=Decimal(amount),
        list_amount=Decimal(list_amount),
    )


def _day_document(resources: dict[str, str], items: list[list[Any]]) -> str:
    return json.dumps({"v": VERSION, "r": resources, "l": items}, separators=(",", ":"),
                      ensure_ascii=False)  # fmt: skip
