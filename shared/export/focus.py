"""FOCUS 1.2 Cost and Usage rows from the ledger of rated charges (``shared.rating``).

One row per charge line: (usage day, subscription, meter, resource) **and price**, split
only where one day's quantity of a resource was priced at more than one unit price (a tier
or the month's included quantity ends inside the day, or a new sheet version took effect),
because FOCUS requires ``ListCost = ListUnitPrice x PricingQuantity`` on every row, which
one row holding two prices cannot satisfy. Such splits are rare (a tier boundary is crossed
once a month per meter at most). Then one row per adjustment (credit, correction, one-off
charge) of the statement: ``ChargeCategory`` Credit, Adjustment or Purchase, ``ChargeClass``
Correction where it corrects an earlier month, a negative ``BilledCost`` for a credit.

The rows of one export cover one **billing period**: the calendar month in which usage was
*reported* (the statement month of ``spec/rating.md``), so a closed month's files never
change and late usage appears in the month it was reported, with its true usage day as
``ChargePeriodStart`` and the reported hours in ``x_ReportedPeriodStart``/``End``.

Figures (``spec/rating.md``): ``ListUnitPrice`` is the sheet's own price, ``ContractedUnitPrice``
what the buyer pays per unit (override or discount applied; 0 inside the month's included
quantity), ``ContractedCost`` and ``ListCost`` their exact products with the quantity.
``BilledCost`` (= ``EffectiveCost``) is the statement's money: each statement line's rounded
amount spread over its rows by largest remainder (``shared.rating.rounding``), so the rows of
an ``InvoiceId`` add up to its statement's total to the cent. Meters no sheet prices are
exported with cost 0, null unit prices and SKU price, ``PricingCategory`` ``Other`` and
``x_PriceStatus`` ``NotPriced`` (as statements show them with ``priced: false``): never a
made-up price. Amounts are carried as decimal(38, 24): 14 integer digits (a day of one
resource's largest meter, Byte-Hours, is about 1e12) and 24 decimals, which hold exactly
every quantity the fleet reports (duration shares such as 1/730 month are doubles of up to
20 decimals) and every sheet price (at most 15 significant digits), so a row's unit prices
and quantities are exact and its exact costs are the products rounded half-even at the
24th decimal.

Units are mapped explicitly from the catalogue's Azure Stack spelling to FOCUS's
(``UNITS``); ``ServiceName``/``ServiceCategory``/``ServiceSubcategory`` come from the resource
provider (``SERVICES``), with disk meters of ``Microsoft.Compute`` under ``Storage``/``Disk``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, localcontext
from typing import Any, Final

import pyarrow as pa

from shared.core.hours import HOUR
from shared.core.meters import Meter, MeterCatalogue
from shared.rating.adjustments import Adjustment
from shared.rating.charges import ChargeLine, DayCharges
from shared.rating.engine import RATING_CONTEXT, Level, Month
from shared.rating.rounding import allocate
from shared.storage.subscriptions import Subscription

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
ADJUSTMENT_SERVICE: Final = "Adjustments"  # credits, corrections, one-off charges

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
    ("x_MeterId", STRING, True),  # null on adjustment rows (no meter)
    ("x_MeterName", STRING, True),
    ("x_AzureStackUnit", STRING, True),
    ("x_ReportedPeriodStart", TIMESTAMP, False),
    ("x_ReportedPeriodEnd", TIMESTAMP, False),
    ("x_PriceSheetVersion", STRING, True),
    ("x_PriceOverride", STRING, True),
    ("x_PricingLevel", STRING, False),
    ("x_PriceStatus", STRING, False),
    ("x_AdjustmentId", STRING, True),
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


class SubscriptionMonth:
    """One subscription's charges of one billing period at one level, as FOCUS rows.

    Reads what the ledger holds (``shared.rating``): the month's charge lines, one FOCUS row
    each, and its adjustments, one row each. Rows come in a fixed order (usage day, meter,
    resource, price; then adjustments by id), so the same ledger always gives the same rows
    in the same order.
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

    @property
    def invoice_id(self) -> str:
        """The statement this subscription's rows sum to: its month at the buyer's level."""
        return f"{self.month.key}-{self.subscription_id}-{self.buyer.level.value}"

    def rows(
        self, days: Sequence[DayCharges], adjustments: Sequence[Adjustment] = ()
    ) -> list[dict[str, Any]]:
        """The FOCUS rows of the month's charge lines and adjustments, in order."""
        lines = [line for day in sorted(days, key=lambda d: d.usage_day) for line in day.ordered()]
        billed = billed_amounts(lines, self.currency)
        rows = [self._row(line, amount) for line, amount in zip(lines, billed, strict=True)]
        for adjustment in sorted(adjustments, key=lambda a: a.adjustment_id):
            rows.append(self._adjustment_row(adjustment))
        return rows

    def _common(self) -> dict[str, Any]:
        return {
            "AvailabilityZone": None,
            "BillingAccountId": self.buyer.account_id,
            "BillingAccountName": self.buyer.account_name or None,
            "BillingAccountType": self.buyer.account_type,
            "BillingCurrency": self.currency,
            "BillingPeriodEnd": self.month.next.first_hour,
            "BillingPeriodStart": self.month.first_hour,
            "InvoiceId": self.invoice_id,
            "InvoiceIssuerName": self.buyer.issuer_name,
            "ProviderName": PROVIDER_NAME,
            "PublisherName": PUBLISHER_NAME,
            "SubAccountId": f"/subscriptions/{self.subscription_id}",
            "SubAccountName": self.subscription_name or None,
            "SubAccountType": "Subscription",
            "x_PricingLevel": self.buyer.level.value,
        }

    def _row(self, line: ChargeLine, billed: Decimal) -> dict[str, Any]:
        meter = self.meters.lookup(line.meter_id)
        service, category, subcategory = service_of(meter)
        unit = focus_unit(meter)
        name, kind = _resource_parts(line.resource_uri)
        priced = line.priced
        quantity = exact(line.quantity)
        details = None
        if priced:
            details = json.dumps(
                {
                    "x_IncludedQuantity": line.tier_start is None,
                    "x_TierStart": None
                    if line.tier_start is None
                    else format(line.tier_start, "f"),
                },
                sort_keys=True,
                separators=(",", ":"),
            )
        return {
            **self._common(),
            "BilledCost": exact(billed),
            "ChargeCategory": "Usage",
            "ChargeClass": None,
            "ChargeDescription": meter.name if meter else line.meter_id,
            "ChargeFrequency": "Usage-Based",
            "ChargePeriodEnd": line.usage_day + DAY,
            "ChargePeriodStart": line.usage_day,
            "ConsumedQuantity": quantity,
            "ConsumedUnit": unit,
            "ContractedCost": exact(line.amount),
            "ContractedUnitPrice": exact(line.unit_price) if line.unit_price is not None else None,
            "EffectiveCost": exact(billed),
            "ListCost": exact(line.list_amount) if priced else exact(billed),
            "ListUnitPrice": (
                exact(line.list_unit_price) if line.list_unit_price is not None else None
            ),
            "PricingCategory": "Standard" if priced else "Other",
            "PricingQuantity": quantity,
            "PricingUnit": unit,
            "RegionId": line.location.lower() or None,
            "RegionName": line.location or None,
            "ResourceId": line.resource_uri or None,
            "ResourceName": name,
            "ResourceType": kind,
            "ServiceCategory": category,
            "ServiceName": service,
            "ServiceSubcategory": subcategory,
            "SkuId": meter.meter_id if meter else line.meter_id,
            "SkuMeter": meter.name if meter else None,
            "SkuPriceDetails": details,
            "SkuPriceId": line.entry,
            "Tags": _tags(line.tags),
            "x_MeterId": meter.meter_id if meter else line.meter_id,
            "x_MeterName": meter.name if meter else None,
            "x_AzureStackUnit": meter.unit if meter else None,
            "x_ReportedPeriodStart": line.first_reported,
            "x_ReportedPeriodEnd": line.last_reported + HOUR,
            "x_PriceSheetVersion": line.sheet,
            "x_PriceOverride": line.override,
            "x_PriceStatus": "Priced" if priced else "NotPriced",
            "x_AdjustmentId": None,
        }

    def _adjustment_row(self, adjustment: Adjustment) -> dict[str, Any]:
        """A credit, correction or one-off charge: its own row, in the period it corrects
        (``ChargeClass`` Correction) or else the billing period; no quantity, no unit price,
        so every cost column is its amount (FOCUS: a charge unrelated to other charges)."""
        period = adjustment.corrects or self.month
        amount = exact(adjustment.amount)
        return {
            **self._common(),
            "BilledCost": amount,
            "ChargeCategory": adjustment.category.focus_charge_category,
            "ChargeClass": "Correction" if adjustment.corrects else None,
            "ChargeDescription": f"{adjustment.category.value}: {adjustment.reason}",
            "ChargeFrequency": "One-Time",
            "ChargePeriodEnd": period.next.first_hour,
            "ChargePeriodStart": period.first_hour,
            "ConsumedQuantity": None,
            "ConsumedUnit": None,
            "ContractedCost": amount,
            "ContractedUnitPrice": None,
            "EffectiveCost": amount,
            "ListCost": amount,
            "ListUnitPrice": None,
            "PricingCategory": None,
            "PricingQuantity": None,
            "PricingUnit": None,
            "RegionId": None,
            "RegionName": None,
            "ResourceId": None,
            "ResourceName": None,
            "ResourceType": None,
            "ServiceCategory": OTHER_SERVICE[1],
            "ServiceName": ADJUSTMENT_SERVICE,
            "ServiceSubcategory": OTHER_SERVICE[2],
            "SkuId": None,
            "SkuMeter": None,
            "SkuPriceDetails": None,
            "SkuPriceId": None,
            "Tags": None,
            "x_MeterId": None,
            "x_MeterName": None,
            "x_AzureStackUnit": None,
            "x_ReportedPeriodStart": adjustment.month.first_hour,
            "x_ReportedPeriodEnd": adjustment.month.next.first_hour,
            "x_PriceSheetVersion": None,
            "x_PriceOverride": None,
            "x_PriceStatus": "Adjustment",
            "x_AdjustmentId": adjustment.adjustment_id,
        }


def billed_amounts(lines: Sequence[ChargeLine], currency: str | None) -> list[Decimal]:
    """Each charge line's ``BilledCost``: its statement line's rounded amount spread over the
    line's charges by largest remainder (``shared.rating.rounding``), so the rows of a
    statement line add up to it and an invoice's rows to the statement total."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, line in enumerate(lines):
        groups.setdefault(line.line_key, []).append(index)
    billed = [Decimal(0)] * len(lines)
    for indexes in groups.values():
        for index, amount in zip(
            indexes, allocate([lines[i].amount for i in indexes], currency), strict=True
        ):
            billed[index] = amount
    return billed
