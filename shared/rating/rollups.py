"""A provider's month in money: one definition, read from the ledger, shown everywhere.

The run summary, ``python -m ops statements``, the roll-up route and the portal all show
this document and its labels (``LABELS``), so the same question gets the same number under
the same name. For a provider subscription P and a month, from its statements (each a sum
of rounded lines and adjustments, ``shared.rating.statements``):

- **direct tenants**: the subscriptions P offered (its tenants, and a delegated provider's
  own subscription when it has usage of its own), each with its retail statement total:
  ``directTenantsTotal``, what they are charged;
- a **delegated** provider also pays the operator for its tenants' usage: ``wholesaleTotal``
  (its tenants' wholesale statements) and ``margin`` = ``directTenantsTotal`` -
  ``wholesaleTotal``;
- the **default** provider (the root) also charges each delegated provider it offered that
  provider's wholesale: ``resellers`` and ``resellersTotal``;
- ``grandTotal``: everything P bills, ``directTenantsTotal`` + ``resellersTotal``.

The admin's **whole cloud** (``cloud``, on the root's roll-up for the admin only, and
``ops statements --cloud``): each provider's figures once, and ``cloudTotal``, the sum of
every provider's ``directTenantsTotal``: every subscription once, at what it is charged,
never a delegated provider's tenants twice (their wholesale is money between providers,
shown per provider, not added again).

Tenants with nothing charged in the month are left out. Reads: the charges index of the
month, the month's adjustments, and one small read per charged subscription (its month
totals), several at once: never a row of usage.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

from shared.core.hours import iso, utc_now
from shared.rating.adjustments import AdjustmentStore, totals
from shared.rating.engine import RATING_CONTEXT, Level, Month
from shared.rating.ledger import ChargeLedger
from shared.rating.sheets import ZERO
from shared.rating.statements import FINAL, PROVISIONAL, MonthStatus, Statements, money
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription

LABELS: Final[Mapping[str, str]] = {
    "directTenantsTotal": "Charged to direct tenants",
    "wholesaleTotal": "Wholesale paid for them",
    "margin": "Margin",
    "resellersTotal": "Wholesale charged to delegated providers",
    "grandTotal": "Total billed",
    "cloudTotal": "Whole cloud (every tenant once)",
}
ROUNDING: Final = "sums of statement totals (each a sum of rounded lines and adjustments)"
READERS: Final = 8


def _provider_of(subscription: Subscription) -> str:
    return (subscription.provider_subscription_id or "").lower()


@dataclass(frozen=True, slots=True)
class _MonthMoney:
    """Every statement total of a month that a roll-up needs, read once."""

    totals: Mapping[tuple[str, Level], Decimal]

    def total(self, subscription_id: str, level: Level) -> Decimal | None:
        return self.totals.get((subscription_id.lower(), level))


class Rollups:
    """Provider roll-ups and the admin's whole cloud (see the module docstring)."""

    def __init__(
        self,
        account: StorageAccount,
        statements: Statements,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.account = account
        self.statements = statements
        self.ledger = ChargeLedger(account)
        self.adjustments = AdjustmentStore(account)
        self._clock = clock

    def charged(
        self, provider_id: str, month: Month, subscriptions: Mapping[str, Subscription]
    ) -> set[str]:
        """Subscriptions that may be in ``provider_id``'s roll-up of ``month``: its index
        entries, every subscription with an adjustment that month, and the delegated
        providers it offered (the caller's scope narrows them to its direct subscriptions)."""
        provider_id = provider_id.lower()
        index = self.ledger.indexed(month, provider_id)
        found = {s for subscriptions_of in index.values() for s in subscriptions_of}
        found |= {a.subscription_id for a in self.adjustments.of_month(month)}
        return found | {
            s for s, sub in subscriptions.items()
            if _is_delegated(sub) and _provider_of(sub) == provider_id
        }  # fmt: skip

    def _money(self, month: Month, subscription_ids: Iterable[str]) -> _MonthMoney:
        """Statement totals (usage + adjustments) per (subscription, level)."""
        wanted = sorted({s.lower() for s in subscription_ids})
        with ThreadPoolExecutor(READERS, thread_name_prefix="rollup") as pool:
            found = list(pool.map(lambda s: self.ledger.month_totals(s, month), wanted))
        adjusted = totals(
            a for a in self.adjustments.of_month(month) if a.subscription_id in wanted
        )
        result: dict[tuple[str, Level], Decimal] = {}
        with localcontext(RATING_CONTEXT):
            for subscription_totals in found:
                for level, total in subscription_totals.items():
                    result[(total.subscription_id, level)] = total.total
            for key, amount in adjusted.items():
                result[key] = result.get(key, ZERO) + amount
        return _MonthMoney(result)

    def rollup(
        self,
        provider: Subscription,
        month: Month,
        subscriptions: Mapping[str, Subscription],
        tenants: Iterable[str],
        *,
        with_cloud: bool = False,
    ) -> dict[str, Any]:
        """P's month over ``tenants`` (its direct subscriptions in the caller's scope); with
        ``with_cloud`` (the admin, on the root) the whole cloud too."""
        provider.subscription_id.lower()
        status = self.statements.status()
        direct = sorted({t.lower() for t in tenants} & set(subscriptions))
        resellers = [s for s in direct if _is_delegated(subscriptions[s])]
        resold = {
            reseller: sorted(s for s, sub in subscriptions.items() if _provider_of(sub) == reseller)
            for reseller in resellers
        }
        wanted = set(direct) | {t for ts in resold.values() for t in ts}
        amounts = self._money(month, wanted)
        currency = self.statements.price_book().currency
        document = self._provider_document(
            provider, month, subscriptions, direct, resold, amounts, status, currency
        )
        if with_cloud:
            document["cloud"] = self.cloud(month, subscriptions, status=status)
        return document

    def _provider_document(
        self,
        provider: Subscription,
        month: Month,
        subscriptions: Mapping[str, Subscription],
        direct: list[str],
        resold: Mapping[str, list[str]],
        amounts: _MonthMoney,
        status: MonthStatus,
        currency: str | None,
    ) -> dict[str, Any]:
        delegated = _is_delegated(provider)
        final = status.final(month)
        listed: list[dict[str, Any]] = []
        charged = wholesale = resold_total = ZERO
        with localcontext(RATING_CONTEXT):
            for tenant in direct:
                retail = amounts.total(tenant, Level.RETAIL)
                cost = amounts.total(tenant, Level.WHOLESALE) if delegated else None
                if retail is None and cost is None:
                    continue
                item: dict[str, Any] = {
                    "subscriptionId": tenant,
                    "displayName": subscriptions[tenant].display_name,
                    "status": FINAL if final else PROVISIONAL,
                    "total": money(retail or ZERO),
                }
                charged += retail or ZERO
                if delegated:
                    item["wholesaleTotal"] = money(cost or ZERO)
                    wholesale += cost or ZERO
                listed.append(item)
            reseller_items = []
            for reseller, its_tenants in sorted(resold.items()):
                costs = [amounts.total(t, Level.WHOLESALE) for t in its_tenants]
                paid = [c for c in costs if c is not None]
                if not paid:
                    continue
                owed = sum(paid, ZERO)
                resold_total += owed
                reseller_items.append(
                    {
                        "subscriptionId": reseller,
                        "displayName": subscriptions[reseller].display_name,
                        "tenants": len(paid),
                        "wholesaleTotal": money(owed),
                    }
                )
            grand = charged + resold_total
        return {
            "providerSubscriptionId": provider.subscription_id.lower(),
            "displayName": provider.display_name,
            "kind": "delegated" if delegated else "default",
            "month": str(month),
            "status": FINAL if final else PROVISIONAL,
            "currency": currency,
            "tenants": listed,
            "resellers": reseller_items,
            "directTenantsTotal": money(charged),
            "wholesaleTotal": money(wholesale) if delegated else None,
            "margin": money(charged - wholesale) if delegated else None,
            "resellersTotal": None if delegated else money(resold_total),
            "grandTotal": money(grand),
            "labels": dict(LABELS),
            "rounding": ROUNDING,
            "computedAt": iso(self._clock()),
        }

    def cloud(
        self,
        month: Month,
        subscriptions: Mapping[str, Subscription],
        *,
        status: MonthStatus | None = None,
    ) -> dict[str, Any]:
        """The whole cloud's month: each provider's figures, and every tenant once."""
        status = status or self.statements.status()
        index = self.ledger.indexed(month)
        charged = {s for subs in index.values() for s in subs}
        charged |= {a.subscription_id for a in self.adjustments.of_month(month)}
        amounts = self._money(month, charged)
        providers = sorted(
            (s for s in subscriptions.values() if s.is_provider),
            key=lambda s: (_is_delegated(s), s.display_name, s.subscription_id),
        )
        offered: dict[str, list[str]] = {}
        for subscription_id, subscription in subscriptions.items():
            offered.setdefault(_provider_of(subscription), []).append(subscription_id)
        currency = self.statements.price_book().currency
        items = []
        cloud_total = ZERO
        with localcontext(RATING_CONTEXT):
            for provider in providers:
                provider_id = provider.subscription_id.lower()
                its = offered.get(provider_id, [])
                direct = sorted(s for s in its if s in charged or _is_delegated(subscriptions[s]))
                resold = {
                    r: sorted(s for s in offered.get(r, []) if s in charged)
                    for r in direct
                    if _is_delegated(subscriptions[r])
                }
                document = self._provider_document(
                    provider, month, subscriptions, direct, resold, amounts, status, currency
                )
                cloud_total += Decimal(document["directTenantsTotal"])
                items.append(
                    {
                        key: document[key]
                        for key in (
                            "providerSubscriptionId",
                            "displayName",
                            "kind",
                            "directTenantsTotal",
                            "wholesaleTotal",
                            "margin",
                            "resellersTotal",
                            "grandTotal",
                        )
                    }
                    | {"tenants": len(document["tenants"])}
                )
        return {
            "month": str(month),
            "status": FINAL if status.final(month) else PROVISIONAL,
            "currency": currency,
            "providers": items,
            "cloudTotal": money(cloud_total),
            "labels": dict(LABELS),
            "rounding": ROUNDING,
        }


def _is_delegated(subscription: Subscription) -> bool:
    """A delegated provider: a provider subscription offered by another one."""
    return subscription.is_provider and subscription.provider_subscription_id is not None


CSV_ROLLUP_COLUMNS: Final = (
    "providerSubscriptionId",
    "month",
    "kind",
    "subscriptionId",
    "displayName",
    "status",
    "currency",
    "total",
    "wholesaleTotal",
)


def rollup_csv(rollup: Mapping[str, Any]) -> str:
    """A roll-up as CSV: a row per direct tenant (kind ``tenant``), per delegated provider
    (``reseller``: its wholesale), then one row per figure of the definition, named by its
    label (kind ``figure``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_ROLLUP_COLUMNS)
    head = [rollup["providerSubscriptionId"], rollup["month"]]
    currency = rollup["currency"] or ""
    for tenant in rollup["tenants"]:
        writer.writerow(
            [
                *head,
                "tenant",
                tenant["subscriptionId"],
                tenant["displayName"],
                tenant["status"],
                currency,
                tenant["total"],
                tenant.get("wholesaleTotal", ""),
            ]
        )
    for reseller in rollup["resellers"]:
        writer.writerow(
            [
                *head,
                "reseller",
                reseller["subscriptionId"],
                reseller["displayName"],
                rollup["status"],
                currency,
                "",
                reseller["wholesaleTotal"],
            ]
        )
    for key in ("directTenantsTotal", "wholesaleTotal", "margin", "resellersTotal", "grandTotal"):
        if rollup.get(key) is not None:
            writer.writerow(
                [*head, "figure", key, LABELS[key], rollup["status"], currency, rollup[key], ""]
            )
    return out.getvalue()
