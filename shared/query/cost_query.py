"""The Cost Management Query route: money over time, as Azure's cost tools ask for it.

``POST /subscriptions/{id}[/resourceGroups/{rg}]/providers/Microsoft.CostManagement/query``
(a tenant subscription, or one of its resource groups) and
``POST /subscriptions/{providerId}/providers/Microsoft.Commerce.Admin/providers/
Microsoft.CostManagement/query`` (a provider's direct tenants; Azure has no such scope, so
it is spelled as a scope nested in the provider route's namespace, the way Azure nests
``/providers/Microsoft.Billing/billingAccounts/{id}/providers/Microsoft.CostManagement``).
Who may ask is what the other routes allow (``shared.query.caller_scope``): the admin, a
tenant's owners and readers, a provider subscription's owner. On the default provider's
scope the admin gets the **whole cloud**: every tenant once, at what it is charged (the
roll-up's ``cloudTotal``); anyone else on a provider's scope its direct tenants.

**Money comes from the ledger**, never computed here: each charge's billed share of its
statement line (``shared.rating.cost_lines``), so a subscription's days of a statement
month add up to its statement to the cent, and a provider's to the roll-up's
``directTenantsTotal``. Cost is what the subscriptions are charged (retail); adjustments
are rows of their own ``ChargeType`` (Credit, Adjustment, Purchase) dated the first day of
the month they are for. "Usage date" is the day of usage: late usage reported in a later
month is on that later month's statement but shows on the day it was used. A tenant's
scope reads its subscriptions' ledger days; a provider's scope and the whole cloud read
the same billed shares from the cost digests rating stores beside them
(``shared.rating.cost_digest``), a page per 1,000 subscriptions, not a read per
subscription.

**A provider's money, split** (the roll-up's figures, ``shared.rating.rollups``): on a
provider's scope a query that groups or filters by ``PricingLevel`` also reads the
wholesale statements, as rows whose ``PricingLevel`` is ``wholesale`` beside the
``retail`` ones. For a delegated provider they are its direct tenants' wholesale, under
each tenant: what it pays the operator for them (``wholesaleTotal``; ``margin`` is retail
minus wholesale). For the default provider they are the wholesale of each delegated
provider's tenants, under the delegated provider that pays it and without the tenants'
resources, groups, locations or tags (which are not the default provider's to read): what
it charges its resellers (``resellersTotal``; ``grandTotal`` is retail plus wholesale).
Without ``PricingLevel`` an answer is retail only, as before, and a tenant's scope never
has wholesale (it would show its provider's margin).

Answers follow Azure's ``QueryResult``: one column per aggregation (named by the column
summed: ``Cost``, ``PreTaxCost``, ``CostUSD``, ``UsageQuantity``), then ``UsageDate`` for
``Daily``, then one per grouping, then ``Currency``; rows sorted by date then group. Up to
``$top`` rows a page (1,000 by default, also the most), the rest through
``properties.nextLink`` (a POST of the same body to it; its ``$skiptoken`` is signed and
bound to the caller, the scope and the body). A query with nothing to show is ``200`` with
no rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote, urlencode

from shared.core.errors import BadInputError, UnknownResourceError
from shared.core.hours import utc_now
from shared.core.meters import MeterCatalogue
from shared.query.arguments import ApiPath, Route, query_arguments, versioned_arguments
from shared.query.arm_responses import HttpAnswer, answered, json_answer
from shared.query.auth import TokenValidator
from shared.query.caller_scope import CallerScope, resolve_scope
from shared.query.continuation import ContinuationCodec
from shared.query.cost_definition import (
    PRICING_LEVEL,
    Column,
    Combined,
    CostQuery,
    Filter,
    Kind,
    parse_definition,
)
from shared.query.usage_api import HttpCall
from shared.rating.cost_digest import ProviderCostLines
from shared.rating.cost_lines import CostItem, CostLines, months_between
from shared.rating.engine import Level, Month
from shared.rating.ledger import ChargeLedger
from shared.rating.sheets import ZERO
from shared.rating.statements import Statements
from shared.storage.subscriptions import Subscription, SubscriptionStore

# Documented versions of "Query - Usage" (the same core shape); the newest is what
# azure-mgmt-costmanagement 5 sends.
API_VERSIONS: Final = (
    "2019-11-01", "2020-06-01", "2021-10-01", "2022-10-01", "2023-03-01", "2023-08-01",
    "2023-09-01", "2023-11-01", "2024-08-01", "2025-03-01",
)  # fmt: skip
PAGE_ROWS: Final = 1_000
_QUERY = re.compile(
    r"^/?(?P<subscription>[^/]*)(?:/resourcegroups/(?P<group>[^/]+))?"
    r"(?P<admin>/providers/microsoft\.commerce\.admin)?"
    r"/providers/microsoft\.costmanagement/query/?$",
    re.IGNORECASE,
)
_RESOURCE_GROUP = re.compile(r"/resourcegroups/([^/]+)", re.IGNORECASE)
_PROVIDERS = "/providers/"


def handles(route_path: str) -> bool:
    """True for the paths this module answers."""
    return _QUERY.match(route_path) is not None


@dataclass(frozen=True, slots=True)
class _Request:
    """What the scope rules read of a cost query (``resolve_scope``'s request)."""

    path: ApiPath
    subscriber_id: str | None = None


def resource_group(resource_uri: str) -> str:
    found = _RESOURCE_GROUP.search(resource_uri)
    return found.group(1).lower() if found else ""


def resource_type(resource_uri: str) -> str:
    """``namespace/type[/child type]`` of an ARM resource id, lower case ("" if none)."""
    at = resource_uri.lower().rfind(_PROVIDERS)
    if at < 0:
        return ""
    parts = resource_uri[at + len(_PROVIDERS) :].strip("/").split("/")
    return "/".join([parts[0], *parts[1::2]]).lower() if parts and parts[0] else ""


class _Dimensions:
    """Each dimension's value of a cost item (Azure's meaning, mapped to ours)."""

    def __init__(self, subscriptions: dict[str, Subscription], meters: MeterCatalogue) -> None:
        self._subscriptions = subscriptions
        self._meters = meters

    def value(self, column: Column, item: CostItem) -> str:
        if column.kind is Kind.TAG:
            return _tag(item.tags, column.name)
        name = column.name
        if name == "SubscriptionId":
            return item.subscription_id
        if name == "SubscriptionName":
            found = self._subscriptions.get(item.subscription_id)
            return found.display_name if found else ""
        if name == "ChargeType":
            return item.charge_type
        if name == PRICING_LEVEL:
            return item.level.value
        if name in ("ResourceGroup", "ResourceGroupName"):
            return resource_group(item.resource_uri)
        if name == "ResourceId":
            return item.resource_uri.lower()
        if name == "ResourceType":
            return resource_type(item.resource_uri)
        if name == "ResourceLocation":
            return item.location.lower()
        if not item.meter_id:
            return ""  # an adjustment has no meter
        meter = self._meters.lookup(item.meter_id)
        if name in ("ServiceName", "MeterCategory"):  # the resource provider
            return meter.provider if meter else ""
        if name == "Meter":
            return meter.name if meter else item.meter_id
        return meter.meter_id if meter else item.meter_id  # MeterId

    def matches(self, condition: Filter, item: CostItem) -> bool:
        if isinstance(condition, Combined):
            results = (self.matches(part, item) for part in condition.parts)
            if condition.operator == "and":
                return all(results)
            if condition.operator == "or":
                return any(results)
            return not next(results)
        return self.value(condition.column, item).lower() in condition.values


def _tag(tags: str | None, key: str) -> str:
    if not tags:
        return ""
    try:
        parsed = json.loads(tags)
    except ValueError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    wanted = key.lower()
    return next((str(v) for k, v in parsed.items() if str(k).lower() == wanted), "")


def _number(value: Decimal) -> float | int:
    """A sum as a JSON number (money is whole minor units: exact as a double)."""
    return int(value) if value == value.to_integral_value() else float(value)


class CostQueryApi:
    """The cost query route; built once per process by ``shared.app``."""

    def __init__(
        self,
        *,
        validator: TokenValidator,
        statements: Statements,
        meters: MeterCatalogue,
        codec: ContinuationCodec,
        base_url: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._validator = validator
        self._statements = statements
        self._account = statements.account
        self._ledger = ChargeLedger(statements.account)
        self._lines = CostLines(self._ledger, statements.adjustments)
        self._many = ProviderCostLines(self._ledger, statements.adjustments)
        self._meters = meters
        self._codec = codec
        self._base_url = base_url
        self._clock = clock

    def answer(self, call: HttpCall) -> HttpAnswer:
        """The answer to ``call``; never raises."""
        return answered(call.method, lambda _: self._serve(call), allowed="POST")

    def _serve(self, call: HttpCall) -> HttpAnswer:
        match = _QUERY.match(call.route_path)
        if match is None:
            raise UnknownResourceError("the requested resource does not exist")
        subscription_id = match.group("subscription").strip().lower()
        if not subscription_id:
            raise BadInputError(
                "the request path has no subscription id",
                code="SubscriptionIdMissingInRequest",
                target="subscriptionId",
            )
        group = (match.group("group") or "").lower()
        admin_scope = match.group("admin") is not None
        if group and admin_scope:
            raise UnknownResourceError("the requested resource does not exist")
        caller = self._validator.validate(call.header("Authorization"))
        args = versioned_arguments(query_arguments(call.url), API_VERSIONS)
        now = self._clock()
        query = parse_definition(call.body, now)
        page_rows = _top(args.get("$top"))
        through = Month.of(now)
        months = months_between(query.first_month, through)
        store = SubscriptionStore(self._account)
        route = Route.PROVIDER if admin_scope else Route.TENANT

        index = _IndexReads(self._ledger)

        def charged(provider: str) -> set[str]:
            return {
                subscription
                for month in months
                for subscription in index.indexed(month, provider).get(provider, set())
            }

        scope = resolve_scope(caller, _Request(ApiPath(route, subscription_id)), store, charged)
        provider = None if scope.path.route is Route.TENANT else _provider(scope)
        binding = _binding(scope, call.route_path, call.body, args.get("api-version", ""))
        token = args.get("$skiptoken")
        offset = 0 if token is None else self._codec.open_offset(token, binding, now)
        currency = self._statements.price_book().currency
        if any(a.column == "CostUSD" for a in query.aggregations) and currency not in (
            None,
            "USD",
        ):
            raise BadInputError(
                f"CostUSD is not available: the price sheets are in {currency}; ask for Cost",
                code="BadRequest",
                target="dataset.aggregation",
            )
        if provider is None:  # a tenant's scope: its subscriptions' ledger days
            if not scope.subscription_ids:
                raise UnknownResourceError(
                    f"subscription {scope.path.subscription_id} is not known"
                )
            items = self._lines.items(
                scope.subscription_ids, query.first_day, query.last_day, through, currency
            )
        else:  # a provider's tenants, or the whole cloud: the cost digests
            owner, wanted = _provider_scope(scope, provider)
            split = query.mentions(PRICING_LEVEL)
            delegated = provider.provider_subscription_id is not None
            # A delegated provider's wholesale is its own tenants' (the same digests).
            levels = (Level.RETAIL, Level.WHOLESALE) if split and delegated else (Level.RETAIL,)
            items = self._many.items(
                owner, wanted, query.first_day, query.last_day, through, currency, levels,
                indexed=index.indexed,
            )  # fmt: skip
            if split and not delegated:
                items += self._resellers(store, provider, query, through, currency, index)
        # Names only when asked for, of the subscriptions answered: the answer's size, not
        # the fleet's (a tenant's query reads one subscription, not the table).
        names = (
            store.among(item.subscription_id for item in items)
            if query.mentions("SubscriptionName")
            else {}
        )
        dimensions = _Dimensions(names, self._meters)
        if group:
            items = [item for item in items if resource_group(item.resource_uri) == group]
        if query.filter is not None:
            items = [item for item in items if dimensions.matches(query.filter, item)]
        columns, rows = _table(query, items, dimensions, currency or "")
        page = rows[offset : offset + page_rows]
        next_link = None
        if offset + page_rows < len(rows):
            next_token = self._codec.issue_offset(binding, offset + page_rows, now)
            next_link = self._next_link(call.route_path, args, next_token)
        name = str(uuid.uuid4())
        scope_path = f"subscriptions/{call.route_path.strip('/')}"
        return json_answer(
            200,
            {
                "id": f"{scope_path}/{name}",
                "name": name,
                "type": "Microsoft.CostManagement/query",
                "location": None,
                "sku": None,
                "eTag": None,
                "properties": {"nextLink": next_link, "columns": columns, "rows": page},
            },
        )

    def _resellers(
        self,
        store: SubscriptionStore,
        provider: Subscription,
        query: CostQuery,
        through: Month,
        currency: str | None,
        index: _IndexReads,
    ) -> list[CostItem]:
        """The default provider's wholesale: what each delegated provider pays it for its
        tenants, under the delegated provider (the module docstring says why so)."""
        own = provider.subscription_id.lower()
        resellers = sorted(
            key
            for key, subscription in store.all().items()  # the default provider's resellers
            if subscription.is_provider
            and (subscription.provider_subscription_id or "").lower() == own
        )
        found: list[CostItem] = []
        for reseller in resellers:  # the default provider: what each reseller pays it
            for item in self._many.items(
                reseller, None, query.first_day, query.last_day, through, currency,
                (Level.WHOLESALE,), indexed=index.indexed,
            ):  # fmt: skip
                found.append(
                    replace(item, subscription_id=reseller, resource_uri="", location="", tags=None)
                )
        return found

    def _next_link(self, route_path: str, args: dict[str, str], token: str) -> str:
        path = "/subscriptions/" + "/".join(
            quote(part, safe="") for part in route_path.strip("/").split("/")
        )
        arguments = [("api-version", args["api-version"].strip())]
        if "$top" in args:
            arguments.append(("$top", args["$top"].strip()))
        arguments.append(("$skiptoken", token))
        return f"{self._base_url}{path}?{urlencode(arguments, quote_via=quote, safe='')}"


class _IndexReads:
    """The charges index as one request reads it: each (month, provider) read once (the
    scope and the digests' read both need it)."""

    def __init__(self, ledger: ChargeLedger) -> None:
        self._ledger = ledger
        self._read: dict[tuple[Month, str | None], dict[str, set[str]]] = {}

    def indexed(self, month: Month, provider: str | None) -> dict[str, set[str]]:
        key = (month, provider)
        if key not in self._read:
            self._read[key] = self._ledger.indexed(month, provider)
        return self._read[key]


def _provider(scope: CallerScope) -> Subscription:
    """The provider a provider-scope query names (the scope's own read of it: the wholesale
    read needs it too)."""
    provider = scope.target
    if provider is None or not provider.is_provider:
        raise UnknownResourceError(
            f"provider subscription {scope.path.subscription_id} is not known"
        )
    return provider


def _provider_scope(
    scope: CallerScope, provider: Subscription
) -> tuple[str | None, tuple[str, ...] | None]:
    """(provider, subscriptions) a provider's scope reads: the admin on the default
    provider reads the whole cloud (every provider's subscriptions with charges, each once),
    anyone else the provider's direct tenants it may read."""
    if scope.caller.is_admin and provider.provider_subscription_id is None:
        return None, None
    return provider.subscription_id.lower(), scope.subscription_ids


def _top(text: str | None) -> int:
    if text is None:
        return PAGE_ROWS
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= PAGE_ROWS:
        raise BadInputError(
            f"$top must be a whole number from 1 to {PAGE_ROWS}", code="BadRequest", target="$top"
        )
    return value


def _binding(scope: CallerScope, route_path: str, body: bytes, api_version: str) -> list[str]:
    """What a ``$skiptoken`` is bound to: the caller, the scope as asked and the query."""
    return [
        scope.caller.object_id,
        route_path.strip("/").lower(),
        api_version.strip(),
        hashlib.sha256(body).hexdigest(),
    ]


def _table(
    query: CostQuery, items: Iterable[CostItem], dimensions: _Dimensions, currency: str
) -> tuple[list[dict[str, str]], list[list[Any]]]:
    """Azure's columns and the rows: the items summed per (day, group)."""
    sums: dict[tuple[Any, ...], list[Decimal]] = {}
    for item in items:
        key: tuple[Any, ...] = tuple(dimensions.value(column, item) for column in query.groupings)
        if query.daily:
            key = (int(item.usage_day.strftime("%Y%m%d")), *key)
        totals = sums.setdefault(key, [ZERO] * len(query.aggregations))
        for index, aggregation in enumerate(query.aggregations):
            totals[index] += item.cost if aggregation.is_cost else item.quantity
    columns = [{"name": a.column, "type": "Number"} for a in query.aggregations]
    if query.daily:
        columns.append({"name": "UsageDate", "type": "Number"})
    columns += [{"name": column.header, "type": "String"} for column in query.groupings]
    columns.append({"name": "Currency", "type": "String"})
    rows = [
        [*(_number(total) for total in totals), *key, currency]
        for key, totals in sorted(sums.items(), key=lambda entry: entry[0])
    ]
    return columns, rows
