"""The chargeback routes of ``query_usage``: Azure's RateCard and our statements.

Served beside the usage API under the same catch-all (``subscriptions/{*path}``), with the
same bearer-token validation, the same scope rules (``shared.query.caller_scope``) and the
same ARM-shaped errors (``shared.query.arm_responses``):

- ``GET /subscriptions/{id}/providers/Microsoft.Commerce/RateCard?api-version=2015-06-01-preview
  &$filter=OfferDurableId eq 'MS-AZR-0003P' and Currency eq 'USD' and Locale eq 'en-US' and
  RegionInfo eq 'US'``: the prices that apply to the subscription now (its retail pricing:
  its provider's or the default sheet, its override applied), in Azure's
  ``ResourceRateCardInfo`` shape (``spec/rating.md``). The ``$filter`` is checked as Azure
  checks it (``shared.query.rate_card_filter``): only ``eq`` and ``and``, all four terms,
  each once; ``OfferDurableId`` as ``MS-AZR-nnnnP``, a known ``Currency`` (the sheets' one),
  a locale, a two-letter region. Anything else is 400 with Azure's message. Every offer id
  reads the same sheet: a subscription's prices here do not depend on the offer named.
- ``GET /subscriptions/{id}/providers/Microsoft.Commerce/statements/{yyyy-MM}``: the
  subscription's statement of that month (tenant scope: the admin, its owners and
  readers); final once finalised, else provisional.
- ``GET /subscriptions/{providerId}/providers/Microsoft.Commerce.Admin/
  subscriberStatements/{yyyy-MM}``: the provider's roll-up (provider scope: the admin, or
  the provider subscription's owner; ``shared.rating.rollups``: direct tenants, wholesale,
  margin, delegated providers, grand total; for the admin on the default provider, the whole
  cloud too); ``subscriberId`` narrows it to one direct tenant's statement and, for a
  delegated provider, its wholesale statement.
- ``GET /subscriptions/{id}/providers/Microsoft.Commerce/adjustments/{yyyy-MM}``: the
  subscription's credits, corrections and one-off charges of that month (retail);
  ``GET /subscriptions/{providerId}/providers/Microsoft.Commerce.Admin/
  subscriberAdjustments/{yyyy-MM}[?subscriberId=]``: those of the provider's direct
  tenants, and for a delegated provider the wholesale ones it is charged for them. Read
  only: adjustments are written by the operator CLI (``python -m ops adjustments``).

Every figure is read from the ledger (``shared.rating``); nothing is rated here. Statements
and roll-ups answer JSON, or CSV with ``Accept: text/csv``. A tenant never sees a wholesale
figure: those are on the provider routes only. Every argument (the path's subscription, the
month, ``subscriberId``, ``$filter``) is checked for its exact shape before the caller's
scope is resolved (``shared.query.arguments``): a malformed one is the same 400 on any
subscription, and costs no storage call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.core.errors import BadInputError, UnknownResourceError
from shared.core.hours import iso, utc_now
from shared.core.meters import MeterCatalogue
from shared.query.arguments import (
    ApiPath,
    Route,
    path_subscription,
    query_arguments,
    subscriber_argument,
    versioned_arguments,
)
from shared.query.arm_responses import HttpAnswer, answered, json_answer
from shared.query.auth import TokenValidator
from shared.query.caller_scope import CallerScope, resolve_scope
from shared.query.rate_card_filter import RateCardFilter, filter_error, parse_rate_card_filter
from shared.query.usage_api import CSV_MIMETYPE, HttpCall, wants_csv
from shared.rating.engine import Level, Month, PriceBook, ResolvedPrice
from shared.rating.rollups import Rollups, rollup_csv
from shared.rating.statements import Statements, adjustment_line, statement_csv
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription, SubscriptionStore

_RATE_CARD = re.compile(
    r"^/?(?P<subscription>[^/]*)/providers/microsoft\.commerce/ratecard/?$", re.IGNORECASE
)
_STATEMENT = re.compile(
    r"^/?(?P<subscription>[^/]*)/providers/microsoft\.commerce/statements/(?P<month>[^/]*)/?$",
    re.IGNORECASE,
)
_ROLLUP = re.compile(
    r"^/?(?P<subscription>[^/]*)/providers/microsoft\.commerce\.admin/"
    r"subscriberstatements/(?P<month>[^/]*)/?$",
    re.IGNORECASE,
)
_ADJUSTMENTS = re.compile(
    r"^/?(?P<subscription>[^/]*)/providers/microsoft\.commerce/adjustments/(?P<month>[^/]*)/?$",
    re.IGNORECASE,
)
_SUBSCRIBER_ADJUSTMENTS = re.compile(
    r"^/?(?P<subscription>[^/]*)/providers/microsoft\.commerce\.admin/"
    r"subscriberadjustments/(?P<month>[^/]*)/?$",
    re.IGNORECASE,
)
_TENANT_ROUTES = (_RATE_CARD, _STATEMENT, _ADJUSTMENTS)
_ROUTES = (*_TENANT_ROUTES, _ROLLUP, _SUBSCRIBER_ADJUSTMENTS)


def handles(route_path: str) -> bool:
    """True for the paths this module answers (the rest is the usage API's)."""
    return any(pattern.match(route_path) for pattern in _ROUTES)


@dataclass(frozen=True, slots=True)
class ChargesRequest:
    """What the scope rules need of a request (``resolve_scope``'s query)."""

    path: ApiPath
    subscriber_id: str | None


class ChargesApi:
    """The RateCard and statement routes; built once per process by ``shared.app``."""

    def __init__(
        self,
        *,
        account: StorageAccount,
        validator: TokenValidator,
        statements: Statements,
        rollups: Rollups,
        meters: MeterCatalogue,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._account = account
        self._validator = validator
        self._statements = statements
        self._rollups = rollups
        self._meters = meters
        self._clock = clock

    def answer(self, call: HttpCall) -> HttpAnswer:
        """The answer to ``call``; never raises."""
        return answered(call.method, lambda correlation_id: self._serve(call, correlation_id))

    def _serve(self, call: HttpCall, correlation_id: str) -> HttpAnswer:
        matched = [(p, m) for p in _ROUTES if (m := p.match(call.route_path)) is not None]
        if not matched:
            raise UnknownResourceError("the requested resource does not exist")
        pattern, match = matched[0]
        subscription_id = path_subscription(match.group("subscription"))
        caller = self._validator.validate(call.header("Authorization"))
        args = versioned_arguments(query_arguments(call.url))
        route = Route.TENANT if pattern in _TENANT_ROUTES else Route.PROVIDER
        subscriber = subscriber_argument(args) if route is Route.PROVIDER else None
        request = ChargesRequest(ApiPath(route, subscription_id), subscriber)
        store = SubscriptionStore(self._account)
        if pattern is _RATE_CARD:
            terms = parse_rate_card_filter(args.get("$filter"))
            scope = resolve_scope(caller, request, store, _tenant_route)
            return self._rate_card(scope, terms)
        month = self._month(match.group("month"))
        known = store.all()

        def charged(provider: str) -> set[str]:
            """The provider's subscriptions with charges in the month (the charges index)."""
            return self._rollups.charged(provider, month, known)

        scope = resolve_scope(caller, request, store, charged)
        subscriptions = self._subscriptions(scope, known)
        if pattern is _STATEMENT:
            return self._statement(scope, month, call, subscriptions)
        if pattern in (_ADJUSTMENTS, _SUBSCRIBER_ADJUSTMENTS):
            return self._adjustments(scope, month, subscriptions)
        return self._rollup(scope, month, call, subscriptions)

    def _month(self, text: str) -> Month:
        month = Month.parse(text)
        if month is None:
            raise BadInputError(
                "the month must be yyyy-MM, e.g. 2026-11", code="InvalidMonth", target="month"
            )
        if month.first_hour > self._clock():
            raise BadInputError(
                "the month has not started yet", code="InvalidMonth", target="month"
            )
        return month

    def _subscriptions(
        self, scope: CallerScope, known: dict[str, Subscription] | None = None
    ) -> dict[str, Subscription]:
        subscriptions = known if known is not None else SubscriptionStore(self._account).all()
        if not scope.subscription_ids and scope.path.route is Route.TENANT:
            raise UnknownResourceError("the subscription is not known")
        return subscriptions

    def _rate_card(self, scope: CallerScope, terms: RateCardFilter) -> HttpAnswer:
        subscriptions = self._subscriptions(scope)
        book = self._statements.price_book()
        currency = terms.currency
        if book.currency is not None and currency != book.currency:
            raise filter_error()
        (subscription_id,) = scope.subscription_ids
        pricing = book.pricing(subscription_id, subscriptions, Level.RETAIL)
        assert pricing is not None  # every subscription has a retail price level
        prices = pricing.effective_prices(self._clock())
        return json_answer(200, self._rate_card_document(prices, book, currency, terms))

    def _rate_card_document(
        self,
        prices: list[ResolvedPrice],
        book: PriceBook,
        currency: str,
        terms: RateCardFilter,
    ) -> dict[str, Any]:
        meters: list[dict[str, Any]] = []
        for price in prices:
            meter = self._meters.lookup(price.meter_id)
            meters.append(
                {
                    "EffectiveDate": iso(price.effective_from).replace("+00:00", "Z"),
                    "IncludedQuantity": _number(price.included),
                    "MeterCategory": meter.provider if meter else "",
                    "MeterId": price.meter_id,
                    "MeterName": meter.name if meter else "",
                    "MeterRates": {
                        format(t.start, "f"): _number(t.unit_price) for t in price.tiers
                    },
                    "MeterRegion": "",
                    "MeterSubCategory": "",
                    "MeterTags": [],
                    "Unit": meter.unit if meter else "",
                }
            )
        return {
            "OfferTerms": [],
            "Meters": meters,
            "Currency": book.currency or currency,
            "Locale": terms.locale,
            "IsTaxIncluded": False,
        }

    def _statement(
        self,
        scope: CallerScope,
        month: Month,
        call: HttpCall,
        subscriptions: dict[str, Subscription],
    ) -> HttpAnswer:
        (subscription_id,) = scope.subscription_ids
        document = self._statements.statement(subscription_id, month, Level.RETAIL, subscriptions)
        assert document is not None  # every subscription has a retail statement
        if wants_csv(call.header("Accept")):
            return HttpAnswer(200, statement_csv([document]).encode("utf-8"), CSV_MIMETYPE)
        return json_answer(200, document)

    def _rollup(
        self,
        scope: CallerScope,
        month: Month,
        call: HttpCall,
        subscriptions: dict[str, Subscription],
    ) -> HttpAnswer:
        provider = subscriptions.get(scope.path.subscription_id)
        if provider is None:
            raise UnknownResourceError("the subscription is not known")
        csv_wanted = wants_csv(call.header("Accept"))
        if scope.subscriber_id is not None:
            status = self._statements.status()
            found = [
                self._statements.statement(
                    scope.subscriber_id, month, level, subscriptions, status=status
                )
                for level in (Level.RETAIL, Level.WHOLESALE)
            ]
            if csv_wanted:
                body = statement_csv([d for d in found if d is not None]).encode("utf-8")
                return HttpAnswer(200, body, CSV_MIMETYPE)
            return json_answer(
                200,
                {
                    "providerSubscriptionId": provider.subscription_id.lower(),
                    "month": str(month),
                    "statement": found[0],
                    "wholesaleStatement": found[1],
                },
            )
        # The whole cloud is the admin's view, on the root of the hierarchy.
        with_cloud = scope.caller.is_admin and provider.provider_subscription_id is None
        rollup = self._rollups.rollup(
            provider, month, subscriptions, scope.subscription_ids, with_cloud=with_cloud
        )
        if csv_wanted:
            return HttpAnswer(200, rollup_csv(rollup).encode("utf-8"), CSV_MIMETYPE)
        return json_answer(200, rollup)

    def _adjustments(
        self, scope: CallerScope, month: Month, subscriptions: dict[str, Subscription]
    ) -> HttpAnswer:
        """The adjustments of the month in scope: a tenant's retail ones; on a provider's
        route its direct tenants' retail ones and, for a delegated provider, the wholesale
        ones it is charged for them."""
        path = scope.path
        provider = subscriptions.get(path.subscription_id) if path.route is Route.PROVIDER else None
        if path.route is Route.PROVIDER and provider is None:
            raise UnknownResourceError("the subscription is not known")
        delegated = provider is not None and provider.provider_subscription_id is not None
        levels = {Level.RETAIL, Level.WHOLESALE} if delegated else {Level.RETAIL}
        value = [
            adjustment_line(adjustment)
            for subscription_id in scope.subscription_ids
            for adjustment in self._statements.adjustments.of_subscription(subscription_id, month)
            if adjustment.level in levels
        ]
        key = "subscriptionId" if path.route is Route.TENANT else "providerSubscriptionId"
        return json_answer(200, {key: path.subscription_id, "month": str(month), "value": value})


def _number(value: Decimal) -> float | int:
    """A sheet decimal as a JSON number, as RateCard clients read it (<= 15 digits: exact)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _tenant_route(provider: str) -> set[str]:
    """``resolve_scope``'s provider narrowing, for a request that is never a provider's."""
    raise AssertionError(f"a tenant route asked for provider {provider}'s tenants")
