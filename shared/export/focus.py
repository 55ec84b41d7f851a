"""FOCUS 1.2 Cost and Usage rows from stored usage and the rating engine's figures.

One row per (usage day, subscription, meter, resource) **and price**: the grain the issue
asks for, split only where one day's quantity of a resource was priced at more than one
unit price (a tier or the month's included quantity ends inside the day, or a new sheet
version took effect), because FOCUS requires ``ListCost = ListUnitPrice x PricingQuantity``
on every row, which one row holding two prices cannot satisfy. Such splits are rare (a
tier boundary is crossed once a month per meter at most).

The rows of one export cover one **billing period**: the calendar month in which usage was
*reported* (the statement month of ``spec/rating.md``), so a closed month's files never
change and late usage appears in the month it was reported, with its true usage day as
``ChargePeriodStart`` and the reported hours in ``x_ReportedPeriodStart``/``End``.

Figures (``spec/rating.md``): ``ListUnitPrice`` is the sheet's own price, ``ContractedUnitPrice``
what the buyer pays per unit (override or discount applied; 0 inside the month's included
quantity), ``BilledCost`` = ``EffectiveCost`` = ``ContractedCost`` = the exact rated amount.
Meters no sheet prices are exported with cost 0, null unit prices and SKU price,
``PricingCategory`` ``Other`` and ``x_PriceStatus`` ``NotPriced`` (as statements show them
with ``priced: false``): never a made-up price. Amounts are exact sums of the engine's
exact parts, carried as decimal(38, 24): 14 integer digits (a day of one resource's
largest meter, Byte-Hours, is about 1e12) and 24 decimals, which hold exactly every
quantity the fleet reports (duration shares such as 1/730 month are doubles of up to 20
decimals) and every sheet price (at most 15 significant digits), so a row's unit prices and
quantities are exact and its costs are the exact products rounded half-even at the 24th
decimal. A statement line rounds them once to the currency's minor unit.

Units are mapped explicitly from the catalogue's Azure Stack spelling to FOCUS's
(``UNITS``); ``ServiceName``/``ServiceCategory``/``ServiceSubcategory`` come from the resource
provider (``SERVICES``), with disk meters of ``Microsoft.Compute`` under ``Storage``/``Disk``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Final

import pyarrow as pa

from shared.core.hours import HOUR, floor_day
from shared.core.meters import Meter, MeterCatalogue
from shared.rating.engine import RATING_CONTEXT, Level, Month, Rated
from shared.storage.subscriptions import Subscription
from shared.storage.usage_rows import UsageRow

DAY: Final = timedelta(days=1)
SCALE: Final = 24
QUANTUM: Final = Decimal(1).scaleb(-SCALE)
DECIMAL: Final = pa.decimal128(38, SCALE)
TIMESTAMP: Final = pa.timestamp("ms", tz="UTC")  # Parquet has no second unit
STRING: Final = pa.string()

PROVIDER_NAME: Final = "Azure Stack Hub"
PUBLISHER_NAME: Final = "Microsoft"
ADMIN_ISSUER_NAME: Final = "Azure Stack Hub operator"

# Azure Stack unit (meters.csv) -> FOCUS UnitFormat: capitalised count nouns, data sizes as
# KB/MB/GB, compound units with a hyphen, a unit quantity as a leading integer.
UNITS: Final[Mapping[str, str]] = {
    "1 hour": "Hours",
    "10 Requests": "10 Requests",
    "10K transactions": "10000 Transactions",
    "Active site hours": "Site-Hours",
    "Byte*hours": "B-Hours",
    "Core*hours": "Core-Hours",
    "Count of Disks*hours": "Disk-Hours",
    "Count of Disks*month": "Disk-Months",
    "Egress in GB": "GB",
    "GB": "GB",
    "GB*hours": "GB-Hours",
    "GB*month": "GB-Months",
    "GB-s": "GB-Seconds",
    "IP addresses": "IP Addresses",
    "Ingress data in GB": "GB",
    "MB*hours": "MB-Hours",
    "Per IP Based SSL Binding": "IP SSL Bindings",
    "Per SNI SSL Binding": "SNI SSL Bindings",
    "Request count in 10000s": "10000 Requests",
    "Requests count in 10000s": "10000 Requests",
    "VM hours": "VM-Hours",
    "Virtual core hours": "Core-Hours",
}

# Resource provider -> (ServiceName, ServiceCategory, ServiceSubcategory); the pairs are
# from FOCUS 1.2's ServiceSubcategory table (each subcategory has one parent category).
SERVICES: Final[Mapping[str, tuple[str, str, str]]] = {
    "microsoft.compute": ("Compute", "Compute", "Virtual Machines"),
    "microsoft.storage": ("Storage", "Storage", "Object Storage"),
    "microsoft.network": ("Network", "Networking", "Other (Networking)"),
    "microsoft.web": ("App Service", "Web", "Other (Web)"),
    "microsoft.sqladapter": ("SQL Server", "Databases", "Relational"),
    "microsoft.mysqladapter": ("MySQL", "Databases", "Relational"),
    "microsoft.keyvault": ("Key Vault", "Security", "Credentials"),
    "microsoft.eventhub": ("Event Hubs", "Integration", "Messaging"),
}
DISK_SERVICE: Final = ("Managed Disks", "Storage", "Disk")
OTHER_SERVICE: Final = ("Other", "Other", "Other (Other)")

SERVICE_CATEGORIES: Final = frozenset(
    {
        "AI and Machine Learning", "Analytics", "Business Applications", "Compute",
        "Databases", "Developer Tools", "Multicloud", "Identity", "Integration",
        "Internet of Things", "Management and Governance", "Media", "Migration", "Mobile",
        "Networking", "Security", "Storage", "Web", "Other",
    }
)  # fmt: skip


def service_of(meter: Meter | None) -> tuple[str, str, str]:
    """(ServiceName, ServiceCategory, ServiceSubcategory) of a meter, by its provider."""
    if meter is None:
        return OTHER_SERVICE
    provider = meter.provider.lower()
    if provider == "microsoft.compute" and "disk" in meter.unit.lower():
        return DISK_SERVICE
    return SERVICES.get(provider, OTHER_SERVICE)


def focus_unit(meter: Meter | None) -> str:
    """The FOCUS spelling of a meter's unit (KeyError for a unit nobody mapped: a test checks
    every catalogue unit is mapped, so a new meter cannot ship with its unit guessed)."""
    return UNITS[meter.unit] if meter is not None else "Units"


# The columns in order: FOCUS columns first (mandatory, recommended, conditional), then x_.
COLUMNS: Final[tuple[tuple[str, pa.DataType, bool], ...]] = (
    # (name, type, nullable)
    ("AvailabilityZone", STRING, True),
    ("BilledCost", DECIMAL, False),
    ("BillingAccountId", STRING, False),
    ("BillingAccountName", STRING, True),
    ("BillingAccountType", STRING, True),
    ("BillingCurrency", STRING, False),
    ("BillingPeriodEnd", TIMESTAMP, False),
    ("BillingPeriodStart", TIMESTAMP, False),
    ("ChargeCategory", STRING, False),
    ("ChargeClass", STRING, True),
    ("ChargeDescription", STRING, True),
    ("ChargeFrequency", STRING, True),
    ("ChargePeriodEnd", TIMESTAMP, False),
    ("ChargePeriodStart", TIMESTAMP, False),
    ("ConsumedQuantity", DECIMAL, True),
    ("ConsumedUnit", STRING, True),
    ("ContractedCost", DECIMAL, False),
    ("ContractedUnitPrice", DECIMAL, True),
    ("EffectiveCost", DECIMAL, False),
    ("InvoiceId", STRING, True),
    ("InvoiceIssuerName", STRING, False),
    ("ListCost", DECIMAL, False),
    ("ListUnitPrice", DECIMAL, True),
    ("PricingCategory", STRING, True),
    ("PricingQuantity", DECIMAL, True),
    ("PricingUnit", STRING, True),
    ("ProviderName", STRING, False),
    ("PublisherName", STRING, False),
    ("RegionId", STRING, True),
    ("RegionName", STRING, True),
    ("ResourceId", STRING, True),
    ("ResourceName", STRING, True),
    ("ResourceType", STRING, True),
    ("ServiceCategory", STRING, False),
    ("ServiceName", STRING, False),
    ("ServiceSubcategory", STRING, True),
    ("SkuId", STRING, True),
    ("SkuMeter", STRING, True),
    ("SkuPriceDetails", STRING, True),
    ("SkuPriceId", STRING, True),
    ("SubAccountId", STRING, True),
    ("SubAccountName", STRING, True),
    ("SubAccountType", STRING, True),
    ("Tags", STRING, True),
    ("x_MeterId", STRING, False),
    ("x_MeterName", STRING, True),
    ("x_AzureStackUnit", STRING, True),
    ("x_ReportedPeriodStart", TIMESTAMP, False),
    ("x_ReportedPeriodEnd", TIMESTAMP, False),
    ("x_PriceSheetVersion", STRING, True),
    ("x_PriceOverride", STRING, True),
    ("x_PricingLevel", STRING, False),
    ("x_PriceStatus", STRING, False),
)
COLUMN_NAMES: Final = tuple(name for name, _, _ in COLUMNS)
SCHEMA: Final = pa.schema(
    [pa.field(name, kind, nullable=nullable) for name, kind, nullable in COLUMNS],
    metadata={"focus_version": "1.2", "dataset": "CostAndUsage"},
)
MANDATORY: Final = frozenset(
    {
        "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
        "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
        "ChargeDescription", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
        "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity", "PricingUnit",
        "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
    }
)  # fmt: skip


def exact(value: Decimal) -> Decimal:
    """A figure at the columns' scale (half-even; exact for every figure the fleet makes)."""
    with localcontext(RATING_CONTEXT):
        return value.quantize(QUANTUM)


def _resource_parts(resource_uri: str) -> tuple[str | None, str | None]:
    """(ResourceName, ResourceType) of an ARM id: its last segment and ``Namespace/type``."""
    segments = [part for part in resource_uri.split("/") if part]
    lowered = [part.lower() for part in segments]
    if "providers" not in lowered:
        return (segments[-1] if segments else None), None
    at = len(lowered) - 1 - lowered[::-1].index("providers")
    tail = segments[at + 1 :]
    if len(tail) < 3:
        return (segments[-1] if segments else None), None
    types = [tail[0], *tail[1::2]]
    return tail[-1] if len(tail) % 2 == 1 else segments[-1], "/".join(types)


def _tags(text: str | None) -> str | None:
    """A JSON object of scalar values (FOCUS's Tags), or null: anything else is not tags."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not value:
        return None
    scalars = {
        str(k): v for k, v in value.items() if v is None or isinstance(v, str | int | float | bool)
    }
    return json.dumps(scalars, sort_keys=True, separators=(",", ":"), ensure_ascii=False) or None


@dataclass(frozen=True, slots=True)
class Buyer:
    """Who the rows of one subscription are billed to, in this export."""

    level: Level
    account_id: str
    account_name: str | None
    account_type: str
    issuer_name: str


@dataclass(slots=True)
class _Cell:
    """One output row being summed: (usage day, meter, resource, price) of a subscription."""

    usage_day: datetime
    meter_id: str
    resource_uri: str
    location: str
    tags: str | None
    price_entry: str | None
    sheet: str | None
    override: str | None
    tier_start: Decimal | None
    unit_price: Decimal | None
    list_unit_price: Decimal | None
    first_reported: datetime
    last_reported: datetime
    quantity: Decimal = field(default_factory=Decimal)
    amount: Decimal = field(default_factory=Decimal)
    list_amount: Decimal = field(default_factory=Decimal)


class SubscriptionMonth:
    """One subscription's rows of one billing period, summed into FOCUS rows.

    Feed ``(reported hour, row, rated)`` in the order the rater needs (reported hour, then
    storage order); :meth:`rows` gives the FOCUS rows in a fixed order (usage day, meter,
    resource, price), so the same stored usage always gives the same rows in the same order.
    """

    def __init__(
        self,
        subscription: Subscription | None,
        subscription_id: str,
        month: Month,
        buyer: Buyer,
        currency: str,
        meters: MeterCatalogue,
    ) -> None:
        self.subscription_id = subscription_id
        self.subscription_name = subscription.display_name if subscription else None
        self.month = month
        self.buyer = buyer
        self.currency = currency
        self.meters = meters
        self._cells: dict[tuple[Any, ...], _Cell] = {}

    def add(self, reported_hour: datetime, row: UsageRow, rated: Rated) -> None:
        day = floor_day(row.usage_start)
        resource = row.resource_uri.lower()
        meter_key = rated.meter_id.lower()
        if rated.price is None:
            self._add(
                (day, meter_key, resource, None, None, None, None),
                reported_hour,
                row,
                rated.meter_id,
                None,
                rated.quantity,
                Decimal(0),
                Decimal(0),
            )
            return
        for part in rated.parts:
            price = part.price
            key = (
                day,
                meter_key,
                resource,
                price.entry,
                part.tier_start,
                part.unit_price,
                part.list_unit_price,
            )
            self._add(
                key,
                reported_hour,
                row,
                rated.meter_id,
                part,
                part.quantity,
                part.amount,
                part.list_amount,
            )

    def _add(
        self,
        key: tuple[Any, ...],
        reported_hour: datetime,
        row: UsageRow,
        meter_id: str,
        part: Any,
        quantity: Decimal,
        amount: Decimal,
        list_amount: Decimal,
    ) -> None:
        cell = self._cells.get(key)
        if cell is None:
            price = part.price if part is not None else None
            cell = self._cells[key] = _Cell(
                usage_day=key[0],
                meter_id=meter_id,
                resource_uri=row.resource_uri,
                location=row.location,
                tags=row.tags_json,
                price_entry=price.entry if price else None,
                sheet=price.sheet if price else None,
                override=price.override if price else None,
                tier_start=part.tier_start if part is not None else None,
                unit_price=part.unit_price if part is not None else None,
                list_unit_price=part.list_unit_price if part is not None else None,
                first_reported=reported_hour,
                last_reported=reported_hour,
            )
        else:
            cell.last_reported = max(cell.last_reported, reported_hour)
            cell.tags = row.tags_json if row.tags_json is not None else cell.tags
        with localcontext(RATING_CONTEXT):
            cell.quantity += quantity
            cell.amount += amount
            cell.list_amount += list_amount

    def __len__(self) -> int:
        return len(self._cells)

    def rows(self) -> list[dict[str, Any]]:
        """The FOCUS rows, sorted (see the class docstring)."""
        return [self._row(self._cells[key]) for key in sorted(self._cells, key=_order)]

    def _row(self, cell: _Cell) -> dict[str, Any]:
        meter = self.meters.lookup(cell.meter_id)
        service, category, subcategory = service_of(meter)
        unit = focus_unit(meter)
        name, kind = _resource_parts(cell.resource_uri)
        priced = cell.price_entry is not None
        quantity = exact(cell.quantity)
        amount = exact(cell.amount)
        details = None
        if priced:
            details = json.dumps(
                {
                    "x_IncludedQuantity": cell.tier_start is None,
                    "x_TierStart": None
                    if cell.tier_start is None
                    else format(cell.tier_start, "f"),
                },
                sort_keys=True,
                separators=(",", ":"),
            )
        return {
            "AvailabilityZone": None,
            "BilledCost": amount,
            "BillingAccountId": self.buyer.account_id,
            "BillingAccountName": self.buyer.account_name or None,
            "BillingAccountType": self.buyer.account_type,
            "BillingCurrency": self.currency,
            "BillingPeriodEnd": self.month.next.first_hour,
            "BillingPeriodStart": self.month.first_hour,
            "ChargeCategory": "Usage",
            "ChargeClass": None,
            "ChargeDescription": meter.name if meter else cell.meter_id,
            "ChargeFrequency": "Usage-Based",
            "ChargePeriodEnd": cell.usage_day + DAY,
            "ChargePeriodStart": cell.usage_day,
            "ConsumedQuantity": quantity,
            "ConsumedUnit": unit,
            "ContractedCost": amount,
            "ContractedUnitPrice": exact(cell.unit_price) if cell.unit_price is not None else None,
            "EffectiveCost": amount,
            "InvoiceId": f"{self.month.key}-{self.subscription_id}-{self.buyer.level.value}",
            "InvoiceIssuerName": self.buyer.issuer_name,
            "ListCost": exact(cell.list_amount) if priced else amount,
            "ListUnitPrice": (
                exact(cell.list_unit_price) if cell.list_unit_price is not None else None
            ),
            "PricingCategory": "Standard" if priced else "Other",
            "PricingQuantity": quantity,
            "PricingUnit": unit,
            "ProviderName": PROVIDER_NAME,
            "PublisherName": PUBLISHER_NAME,
            "RegionId": cell.location.lower() or None,
            "RegionName": cell.location or None,
            "ResourceId": cell.resource_uri or None,
            "ResourceName": name,
            "ResourceType": kind,
            "ServiceCategory": category,
            "ServiceName": service,
            "ServiceSubcategory": subcategory,
            "SkuId": meter.meter_id if meter else cell.meter_id,
            "SkuMeter": meter.name if meter else None,
            "SkuPriceDetails": details,
            "SkuPriceId": cell.price_entry,
            "SubAccountId": f"/subscriptions/{self.subscription_id}",
            "SubAccountName": self.subscription_name or None,
            "SubAccountType": "Subscription",
            "Tags": _tags(cell.tags),
            "x_MeterId": meter.meter_id if meter else cell.meter_id,
            "x_MeterName": meter.name if meter else None,
            "x_AzureStackUnit": meter.unit if meter else None,
            "x_ReportedPeriodStart": cell.first_reported,
            "x_ReportedPeriodEnd": cell.last_reported + HOUR,
            "x_PriceSheetVersion": cell.sheet,
            "x_PriceOverride": cell.override,
            "x_PricingLevel": self.buyer.level.value,
            "x_PriceStatus": "Priced" if priced else "NotPriced",
        }


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    day, meter, resource, entry, tier_start, unit_price, list_price = key
    return (
        day,
        meter,
        resource,
        entry or "",
        tier_start is not None,
        tier_start or Decimal(0),
        unit_price or Decimal(0),
        list_price or Decimal(0),
    )
