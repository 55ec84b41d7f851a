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
quantity), ``ContractedCost`` and ``ListCost`` their products with the row's quantity.
``BilledCost`` (= ``EffectiveCost``) is the statement's money: each statement line's rounded
amount spread over its rows by largest remainder (``shared.rating.rounding``), so the rows of
an ``InvoiceId`` add up to its statement's total to the cent. Meters no sheet prices are
exported with cost 0, unit prices 0, the SKU price ``{SkuId}/not-priced``,
``PricingCategory`` ``Other`` and ``x_PriceStatus`` ``NotPriced`` (as statements show them
with ``priced: false``): FOCUS wants no null price on a Usage row, and 0 is what they cost.

Amounts and quantities are decimal(38, 18): 20 integer digits, so any figure up to 10^18
(and below 10^20) fits, and 18 decimals, which hold every sheet price (at most 15
significant digits) and every quantity the fleet reports to within a double's own
resolution (duration shares such as 1/730 month are rounded half-even at the 18th decimal).
A value that does not fit is never written: its row is reported (``misfit``) and left out,
and the run writes the rest.

Units are mapped explicitly from the catalogue's Azure Stack spelling to FOCUS's
(``UNITS``); ``ServiceName``/``ServiceCategory``/``ServiceSubcategory`` come from the resource
provider (``SERVICES``), with disk meters of ``Microsoft.Compute`` under ``Storage``/``Disk``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Final

import pyarrow as pa

from shared.core.hours import HOUR
from shared.core.meters import Meter, MeterCatalogue
from shared.rating.adjustments import Adjustment
from shared.rating.charges import ChargeLine, DayCharges
from shared.rating.engine import RATING_CONTEXT, Level, Month
from shared.rating.rounding import billed_amounts
from shared.rating.sheets import ZERO
from shared.storage.subscriptions import Subscription

DAY: Final = timedelta(days=1)
PRECISION: Final = 38  # the widest decimal128 (what Parquet readers, DuckDB, Power BI read)
SCALE: Final = 18
QUANTUM: Final = Decimal(1).scaleb(-SCALE)
LIMIT: Final = Decimal(10) ** (PRECISION - SCALE)  # every decimal column holds |x| < 10^20
DECIMAL: Final = pa.decimal128(PRECISION, SCALE)
TIMESTAMP: Final = pa.timestamp("ms", tz="UTC")  # Parquet has no second unit
STRING: Final = pa.string()

# Who is who (FOCUS 1.2's definitions): the *provider* "made the resources and/or services
# available for purchase" and the *invoice issuer* is "responsible for invoicing" them: both
# are the seller of the export, the operator in the admin's export and the delegated
# provider (a reseller) in its own; the *publisher* "produced" them: Microsoft, whose Azure
# Stack Hub services these are (an adjustment is the seller's own product). One name for
# provider and issuer also keeps the validator's third-party rule (BilledCost 0 where they
# differ, "payments received by a third party") from zeroing every row.
OPERATOR_NAME: Final = "Azure Stack Hub operator"
PUBLISHER_NAME: Final = "Microsoft"

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
ADJUSTMENT_SKU: Final = "adjustment"  # a one-off charge's SkuId: adjustment-charge
ONE_OFF_PRICE: Final = "one-off"
ONE_OFF_UNIT: Final = "Charges"
ONE_OFF_METER: Final = "One-off charge"
NOT_PRICED: Final = "not-priced"
# Price sheet scope kind (``shared.rating.sheets.ScopeKind``) -> the price list's name in
# SkuPriceId.
PRICE_LISTS: Final[Mapping[str, str]] = {
    "default": "default",
    "provider": "resale",
    "subscription": "custom",
}

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
    ("CapacityReservationId", STRING, True),
    ("CapacityReservationStatus", STRING, True),
    ("ChargeCategory", STRING, False),
    ("ChargeClass", STRING, True),
    ("ChargeDescription", STRING, True),
    ("ChargeFrequency", STRING, True),
    ("ChargePeriodEnd", TIMESTAMP, False),
    ("ChargePeriodStart", TIMESTAMP, False),
    ("CommitmentDiscountCategory", STRING, True),
    ("CommitmentDiscountId", STRING, True),
    ("CommitmentDiscountName", STRING, True),
    ("CommitmentDiscountQuantity", DECIMAL, True),
    ("CommitmentDiscountStatus", STRING, True),
    ("CommitmentDiscountType", STRING, True),
    ("CommitmentDiscountUnit", STRING, True),
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
    ("PricingCurrency", STRING, True),
    ("PricingCurrencyContractedUnitPrice", DECIMAL, True),
    ("PricingCurrencyEffectiveCost", DECIMAL, True),
    ("PricingCurrencyListUnitPrice", DECIMAL, True),
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
    """A figure at the columns' scale (half-even); ArithmeticError for one too large to have
    18 decimals at the rating's precision (``misfit`` reports what is merely too large)."""
    with localcontext(RATING_CONTEXT) as context:
        context.traps[InvalidOperation] = True
        return value.quantize(QUANTUM)


DECIMAL_COLUMNS: Final = tuple(name for name, kind, _ in COLUMNS if kind == DECIMAL)


def misfit(row: Mapping[str, Any]) -> str | None:
    """The first decimal column of ``row`` whose value the Parquet type cannot hold, or None."""
    for name in DECIMAL_COLUMNS:
        value = row[name]
        if value is not None and not (value.is_finite() and abs(value) < LIMIT):
            return name
    return None


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
    seller_name: str  # ProviderName and InvoiceIssuerName: the operator, or the reseller


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
        self.rejected: list[str] = []  # rows left out, each with why (``_keep``)

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
        rows: list[dict[str, Any]] = []
        for line, amount in zip(lines, billed, strict=True):
            self._keep(rows, lambda: self._row(line, amount), line)  # noqa: B023 - called now
        for adjustment in sorted(adjustments, key=lambda a: a.adjustment_id):
            self._keep(rows, lambda: self._adjustment_row(adjustment), adjustment)  # noqa: B023
        return rows

    def _keep(
        self,
        rows: list[dict[str, Any]],
        make: Callable[[], dict[str, Any]],
        source: ChargeLine | Adjustment,
    ) -> None:
        """Add the row ``make`` builds, or, if one of its values cannot be written, report
        it in ``rejected`` and leave it out: one bad value never costs the rest of a run."""
        why = None
        try:
            row = make()
        except (ArithmeticError, KeyError, ValueError) as error:
            why = f"{type(error).__name__} {error}"
        else:
            column = misfit(row)
            if column is None:
                rows.append(row)
                return
            why = f"{column} {row[column]} does not fit decimal({PRECISION}, {SCALE})"
        if isinstance(source, Adjustment):
            what = f"adjustment {source.adjustment_id}"
        else:
            what = f"{source.usage_day:%Y-%m-%d} {source.meter_id} {source.resource_uri}"
        self.rejected.append(f"{self.invoice_id} {what}: {why}")

    def _common(self) -> dict[str, Any]:
        return {
            "AvailabilityZone": None,
            "BillingAccountId": self.buyer.account_id,
            "BillingAccountName": self.buyer.account_name or None,
            "BillingAccountType": self.buyer.account_type,
            "BillingCurrency": self.currency,
            "BillingPeriodEnd": self.month.next.first_hour,
            "BillingPeriodStart": self.month.first_hour,
            "CapacityReservationId": None,
            "CapacityReservationStatus": None,
            "CommitmentDiscountCategory": None,
            "CommitmentDiscountId": None,
            "CommitmentDiscountName": None,
            "CommitmentDiscountQuantity": None,
            "CommitmentDiscountStatus": None,
            "CommitmentDiscountType": None,
            "CommitmentDiscountUnit": None,
            "InvoiceId": self.invoice_id,
            "InvoiceIssuerName": self.buyer.seller_name,
            "PricingCurrency": self.currency,
            "ProviderName": self.buyer.seller_name,
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
        sku_id = meter.meter_id if meter else line.meter_id
        # FOCUS: no null unit price or SKU price on a Usage row; an unpriced meter's price is
        # 0 (``x_PriceStatus`` NotPriced says why), which is also what it costs. The costs
        # are the products of the row's own (written) price and quantity, as FOCUS requires
        # to the last decimal; they differ from the ledger's exact amounts by less than
        # price x 5e-19, and BilledCost, the money, is the statement's.
        unit_price = exact(line.unit_price) if line.unit_price is not None else exact(ZERO)
        list_price = exact(line.list_unit_price) if line.list_unit_price is not None else unit_price
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
            "ContractedCost": exact(unit_price * quantity),
            "ContractedUnitPrice": unit_price,
            "EffectiveCost": exact(billed),
            "ListCost": exact(list_price * quantity),
            "ListUnitPrice": list_price,
            "PricingCategory": "Standard" if priced else "Other",
            "PricingCurrencyContractedUnitPrice": unit_price,
            "PricingCurrencyEffectiveCost": exact(billed),
            "PricingCurrencyListUnitPrice": list_price,
            "PricingQuantity": quantity,
            "PricingUnit": unit,
            "PublisherName": PUBLISHER_NAME,
            "RegionId": line.location.lower() or None,
            "RegionName": line.location or None,
            "ResourceId": line.resource_uri or None,
            "ResourceName": name,
            "ResourceType": kind,
            "ServiceCategory": category,
            "ServiceName": service,
            "ServiceSubcategory": subcategory,
            "SkuId": sku_id,
            "SkuMeter": meter.name if meter else line.meter_id,
            "SkuPriceDetails": details,
            "SkuPriceId": sku_price_id(sku_id, line),
            "Tags": _tags(line.tags),
            "x_MeterId": sku_id,
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
        (``ChargeClass`` Correction) or else the billing period. A credit or an adjustment
        has no quantity or unit price, so every cost column is its amount (FOCUS: a charge
        unrelated to other charges); a one-off charge that corrects nothing is a Purchase,
        which FOCUS prices: one unit at its amount, under the seller's one-off SKU."""
        period = adjustment.corrects or self.month
        amount = exact(adjustment.amount)
        purchase = adjustment.category.focus_charge_category == "Purchase"
        priced = purchase and adjustment.corrects is None
        sku_id = f"{ADJUSTMENT_SKU}-{adjustment.category.value}" if priced else None
        price = amount if priced else None
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
            "ContractedUnitPrice": price,
            "EffectiveCost": amount,
            "ListCost": amount,
            "ListUnitPrice": price,
            "PricingCategory": "Other" if priced else None,
            "PricingCurrencyContractedUnitPrice": price,
            "PricingCurrencyEffectiveCost": amount,
            "PricingCurrencyListUnitPrice": price,
            "PricingQuantity": exact(Decimal(1)) if priced else None,
            "PricingUnit": ONE_OFF_UNIT if priced else None,
            "PublisherName": self.buyer.seller_name,
            "RegionId": None,
            "RegionName": None,
            "ResourceId": None,
            "ResourceName": None,
            "ResourceType": None,
            "ServiceCategory": OTHER_SERVICE[1],
            "ServiceName": ADJUSTMENT_SERVICE,
            "ServiceSubcategory": OTHER_SERVICE[2],
            "SkuId": sku_id,
            "SkuMeter": ONE_OFF_METER if priced else None,
            "SkuPriceDetails": None,
            "SkuPriceId": f"{sku_id}/{ONE_OFF_PRICE}" if sku_id else None,
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


def sku_price_id(sku_id: str, line: ChargeLine) -> str:
    """A charge line's ``SkuPriceId``: ``{SkuId}/{price list}/{price part}``.

    FOCUS 1.2: one parent ``SkuId`` (the meter), the same "over time" and "across billing
    accounts or contracts". So no sheet version or effective date (a new version of a price
    list keeps its ids) and no subscription id: the price list is named by its kind,
    ``default`` (the operator's sheet), ``resale`` (the delegated provider's own sheet, the
    only one in its export) or ``custom`` (a subscription's negotiated price), and the part
    is ``included`` (the month's included quantity) or ``tier-{start}``; a meter no sheet
    prices is ``{SkuId}/not-priced``. ``x_PriceSheetVersion`` keeps the exact version."""
    if line.entry is None:
        return f"{sku_id}/{NOT_PRICED}"
    scope = (line.sheet or "").split("@", 1)[0].split(":", 1)[0]
    price_list = PRICE_LISTS.get(scope, scope or "default")
    if line.tier_start is None:
        part = "included"
    else:
        part = f"tier-{format(line.tier_start.normalize(), 'f')}"
    return f"{sku_id}/{price_list}/{part}"
