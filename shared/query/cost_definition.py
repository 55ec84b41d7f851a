"""The body of a cost query (Azure's ``QueryDefinition``), validated into a :class:`CostQuery`.

What is accepted (``../shared/spec/cost-query-api.md``, checked against Microsoft Learn's
"Query - Usage" reference), property names matched case-insensitively as ARM does:

- ``type``: ``ActualCost``, ``AmortizedCost`` or ``Usage``: the same numbers here. Azure
  amortises only reservation and savings-plan purchases over their term; this cloud sells
  neither, and its one-off charges (``Purchase`` adjustments) are not commitments, so
  Azure would not spread them either: each stays on its day in every type;
- ``timeframe``: ``MonthToDate``, ``BillingMonthToDate``, ``TheCurrentMonth`` (this month up
  to today), ``TheLastMonth``, ``TheLastBillingMonth`` (the last whole month), ``WeekToDate``
  (the ISO week: Monday to today) or ``Custom`` with ``timePeriod: {from, to}`` (ISO 8601; the
  UTC days of ``from`` through ``to``, both included, at most a year), every window ending
  today at the latest (UTC days; today is a partial day);
- ``dataset.granularity``: ``Daily`` (a ``UsageDate`` column, ``yyyyMMdd`` as a number) or
  ``None``/absent (one total per group);
- ``dataset.aggregation``: ``{alias: {"name": column, "function": "Sum"}}``, columns
  ``Cost``, ``PreTaxCost``, ``CostUSD`` (money; ``CostUSD`` only when the sheets are in USD)
  or ``UsageQuantity``; none given: ``Cost``;
- ``dataset.grouping``: up to two ``{"type": "Dimension", "name": ...}`` (``DIMENSIONS``);
  grouping by a tag is refused (filtering by one is not);
- ``dataset.filter``: ``and``/``or`` (two or more filters), ``not`` (one), ``dimensions`` or
  ``tags`` (``{"name", "operator": "In", "values": [...]}``), values compared
  case-insensitively.

Anything else is ``400 BadRequest`` naming what is wrong (an unknown dimension, a bad
timeframe, a third grouping, a period over a year).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from shared.core.errors import BadInputError
from shared.rating.engine import Month

DAY: Final = timedelta(days=1)
MAX_DAYS: Final = 366
MAX_GROUPINGS: Final = 2
MAX_BODY_BYTES: Final = 65_536
MAX_FILTER_DEPTH: Final = 8
COST_COLUMNS: Final = ("Cost", "PreTaxCost", "CostUSD")
QUANTITY_COLUMN: Final = "UsageQuantity"
TYPES: Final = ("ActualCost", "AmortizedCost", "Usage")
TIMEFRAMES: Final = (
    "MonthToDate",
    "BillingMonthToDate",
    "TheCurrentMonth",
    "TheLastMonth",
    "TheLastBillingMonth",
    "WeekToDate",
    "Custom",
)
# The dimensions a query may group and filter by, in Azure's spelling (what each means
# here: shared.query.cost_query.dimension_value).
DIMENSIONS: Final = (
    "SubscriptionId",
    "SubscriptionName",
    "ResourceGroup",
    "ResourceGroupName",
    "ResourceId",
    "ResourceType",
    "ResourceLocation",
    "ServiceName",
    "MeterCategory",
    "Meter",
    "MeterId",
    "ChargeType",
    "PricingLevel",
)
# Which statement money is on: what the subscription pays (retail) or what its delegated
# provider pays the operator for it (wholesale; the FOCUS export's x_PricingLevel). Only a
# provider's scope has wholesale, and only a query that groups or filters by PricingLevel
# reads it: any other query's money is what the subscriptions are charged.
PRICING_LEVEL: Final = "PricingLevel"
_DIMENSION_BY_LOWER: Final = {name.lower(): name for name in DIMENSIONS}


class Kind(StrEnum):
    DIMENSION = "Dimension"
    TAG = "TagKey"


@dataclass(frozen=True, slots=True)
class Column:
    """A dimension or a tag key: what rows are grouped or filtered by."""

    kind: Kind
    name: str  # the dimension's spelling in DIMENSIONS, or the tag key as given

    @property
    def header(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Condition:
    """``column`` In ``values`` (lower case)."""

    column: Column
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class Combined:
    """``and``/``or`` of filters, or ``not`` of one."""

    operator: str  # "and" | "or" | "not"
    parts: tuple[Filter, ...]


Filter = Condition | Combined


@dataclass(frozen=True, slots=True)
class Aggregation:
    column: str  # one of COST_COLUMNS or QUANTITY_COLUMN, Azure's spelling

    @property
    def is_cost(self) -> bool:
        return self.column != QUANTITY_COLUMN


@dataclass(frozen=True, slots=True)
class CostQuery:
    """A validated query: usage days ``first_day`` .. ``last_day`` (UTC midnights, included)."""

    type: str
    timeframe: str
    first_day: datetime
    last_day: datetime
    daily: bool
    aggregations: tuple[Aggregation, ...]
    groupings: tuple[Column, ...]
    filter: Filter | None

    @property
    def first_month(self) -> Month:
        return Month.of(self.first_day)

    def mentions(self, dimension: str) -> bool:
        """Whether the query groups or filters by ``dimension``."""
        return any(c.kind is Kind.DIMENSION and c.name == dimension for c in self.groupings) or (
            self.filter is not None and _mentions(self.filter, dimension)
        )


def _mentions(condition: Filter, dimension: str) -> bool:
    if isinstance(condition, Combined):
        return any(_mentions(part, dimension) for part in condition.parts)
    return condition.column.kind is Kind.DIMENSION and condition.column.name == dimension


def _bad(message: str, target: str | None = None) -> BadInputError:
    return BadInputError(message, code="BadRequest", target=target)


def _by_lower(document: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object's members by lower-case name (ARM reads property names that way)."""
    found: dict[str, Any] = {}
    for key, value in document.items():
        if key.lower() in found:
            raise _bad(f"property {key[:64]!r} is given more than once")
        found[key.lower()] = value
    return found


def _object(value: Any, target: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{target} must be a JSON object", target)
    return _by_lower(value)


def _choice(value: Any, choices: tuple[str, ...], target: str) -> str:
    if isinstance(value, str):
        for choice in choices:
            if choice.lower() == value.strip().lower():
                return choice
    raise _bad(f"{target} must be one of {', '.join(choices)}", target)


def parse_definition(body: bytes, now: datetime) -> CostQuery:
    """The query ``body`` asks (see the module docstring); ``now`` places the timeframes."""
    if len(body) > MAX_BODY_BYTES:
        raise _bad(f"the query definition is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeError, ValueError):
        raise _bad("the body is not a JSON query definition") from None
    definition = _object(document, "the body")
    kind = _choice(definition.get("type"), TYPES, "type")
    timeframe = _choice(definition.get("timeframe"), TIMEFRAMES, "timeframe")
    first_day, last_day = _window(timeframe, definition.get("timeperiod"), now)
    dataset = _object(definition.get("dataset", {}), "dataset")
    granularity = dataset.get("granularity")
    if granularity is None or (isinstance(granularity, str) and granularity.lower() == "none"):
        daily = False
    else:
        daily = _choice(granularity, ("Daily",), "dataset.granularity") == "Daily"
    return CostQuery(
        type=kind,
        timeframe=timeframe,
        first_day=first_day,
        last_day=last_day,
        daily=daily,
        aggregations=_aggregations(dataset.get("aggregation")),
        groupings=_groupings(dataset.get("grouping")),
        filter=None if dataset.get("filter") is None else _filter(dataset["filter"], 0),
    )


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _window(timeframe: str, period: Any, now: datetime) -> tuple[datetime, datetime]:
    today = _midnight(now)
    this_month = Month.of(today).first_hour
    relative: dict[str, Callable[[], tuple[datetime, datetime]]] = {
        "MonthToDate": lambda: (this_month, today),
        "BillingMonthToDate": lambda: (this_month, today),
        "TheCurrentMonth": lambda: (this_month, today),
        "TheLastMonth": lambda: (Month.of(today).previous.first_hour, this_month - DAY),
        "TheLastBillingMonth": lambda: (Month.of(today).previous.first_hour, this_month - DAY),
        "WeekToDate": lambda: (today - today.weekday() * DAY, today),
    }
    if timeframe != "Custom":
        if period is not None:
            raise _bad("timePeriod is only for the Custom timeframe", "timePeriod")
        return relative[timeframe]()
    fields = _object(period, "timePeriod")
    first, last = (
        _time(fields.get("from"), "timePeriod.from"),
        _time(fields.get("to"), "timePeriod.to"),
    )
    if last < first:
        raise _bad("timePeriod.to must not be before timePeriod.from", "timePeriod.to")
    if (last - first).days >= MAX_DAYS:
        raise _bad(f"the time period must be at most {MAX_DAYS} days", "timePeriod")
    if first > today:
        raise _bad("timePeriod.from must not be in the future", "timePeriod.from")
    return first, min(last, today)


def _time(value: Any, target: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{target} is required (ISO 8601, e.g. 2026-12-01T00:00:00Z)", target)
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise _bad(f"{target} is not an ISO 8601 time", target) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _midnight(moment)


def _aggregations(value: Any) -> tuple[Aggregation, ...]:
    if value is None:
        return (Aggregation("Cost"),)
    members = _object(value, "dataset.aggregation")
    if not members:
        raise _bad("dataset.aggregation has no column", "dataset.aggregation")
    found: list[Aggregation] = []
    for alias, spec in members.items():
        target = f"dataset.aggregation.{alias[:64]}"
        fields = _object(spec, target)
        column = _choice(fields.get("name"), (*COST_COLUMNS, QUANTITY_COLUMN), f"{target}.name")
        _choice(fields.get("function"), ("Sum",), f"{target}.function")
        found.append(Aggregation(column))
    return tuple(found)


def _column(fields: Mapping[str, Any], kind: Any, target: str) -> Column:
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(f"{target}.name is required", f"{target}.name")
    if _choice(kind, (Kind.DIMENSION.value, Kind.TAG.value), f"{target}.type") == Kind.TAG:
        return Column(Kind.TAG, name.strip())
    dimension = _DIMENSION_BY_LOWER.get(name.strip().lower())
    if dimension is None:
        raise _bad(
            f"unknown dimension {name[:64]!r}; known: {', '.join(DIMENSIONS)}", f"{target}.name"
        )
    return Column(Kind.DIMENSION, dimension)


def _groupings(value: Any) -> tuple[Column, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("dataset.grouping must be a list", "dataset.grouping")
    if len(value) > MAX_GROUPINGS:
        raise _bad(f"at most {MAX_GROUPINGS} groupings are allowed", "dataset.grouping")
    columns: list[Column] = []
    for index, item in enumerate(value):
        target = f"dataset.grouping[{index}]"
        fields = _object(item, target)
        column = _column(fields, fields.get("type"), target)
        if column.kind is Kind.TAG:
            raise _bad("grouping by a tag is not supported; filter by it instead", target)
        if column in columns:
            raise _bad(f"{column.name} is grouped by twice", target)
        columns.append(column)
    return tuple(columns)


def _filter(value: Any, depth: int) -> Filter:
    target = "dataset.filter"
    if depth > MAX_FILTER_DEPTH:
        raise _bad(f"filters nest at most {MAX_FILTER_DEPTH} deep", target)
    fields = _object(value, target)
    if len(fields) != 1:
        raise _bad("a filter has exactly one of and, or, not, dimensions, tags", target)
    ((operator, operand),) = fields.items()
    if operator in ("and", "or"):
        if not isinstance(operand, list) or len(operand) < 2:
            raise _bad(f"{operator} takes a list of at least two filters", target)
        return Combined(operator, tuple(_filter(part, depth + 1) for part in operand))
    if operator == "not":
        return Combined("not", (_filter(operand, depth + 1),))
    if operator not in ("dimensions", "tags"):
        raise _bad(f"unknown filter {operator[:64]!r}", target)
    condition = _object(operand, f"{target}.{operator}")
    kind = Kind.DIMENSION if operator == "dimensions" else Kind.TAG
    column = _column(condition, kind.value, f"{target}.{operator}")
    _choice(condition.get("operator"), ("In",), f"{target}.{operator}.operator")
    values = condition.get("values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _bad("values must be a non-empty list of strings", f"{target}.{operator}.values")
    return Condition(column, frozenset(v.strip().lower() for v in values))
