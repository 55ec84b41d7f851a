"""Statements kept and served: finalised ones stored for good, the open month previewed.

The ``{prefix}statements`` table: ``PartitionKey`` = the month (``YYYYMM``), ``RowKey`` =
``{subscription}_{level}`` (retail, or the delegated provider's wholesale cost of that
subscription's usage), the document as JSON text split over ``Doc00``, ``Doc01``, ... and
the summary a roll-up reads (``Total``, ``Rows``, ``Buyer``, ``Provider``). A row
``closed`` marks a month whose every statement is stored.

**Final means never changes.** A month closes when the collection watermark has passed
its last reported hour: every row reported in it is stored, and closed hours never
change (invariant 3). :meth:`Statements.finalise_due` then rates each subscription with
rows in the month and stores its statements with ``create_entity`` (insert if absent): a
second run, a race with another instance, or a run resumed after its time budget ran out
keeps what was stored first. Late usage that arrives after the month closed is reported in
a later month and appears on that month's statement (marked late), never on this one.

**Provisional** is everything else: a month not closed yet (or closed but not yet
finalised) is rated on request from the rows collected so far (up to the watermark, the
same visibility as the usage API), with ``status: provisional``.

The finaliser runs as its own timer (``finalise_statements``), not inside a collection
run: it has its own time budget and failure domain, so a slow month-end never holds up
collection, and collection never cuts a finalisation short. It finalises every closed
month after the newest one already closed, oldest first (walking back at most until a
month with no usage at all), so a missed month-end is caught up like a missed hour.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.core.hours import iso, utc_now
from shared.core.meters import MeterCatalogue
from shared.core.retry import call_with_retry
from shared.rating.engine import RATING_CONTEXT, Level, Month, PriceBook
from shared.rating.sheet_store import SheetStore
from shared.rating.statements import (
    FINAL,
    PROVISIONAL,
    StatementBuilder,
    empty_statement,
    money,
)
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import has_entries, read_manifest
from shared.storage.subscriptions import Subscription, SubscriptionStore
from shared.storage.usage_rows import read_hourly_rows
from shared.storage.watermark import collected_through

log = logging.getLogger(__name__)

ROLE: Final = "statements"
CLOSED: Final = "closed"
_CHUNK = 30_000
_MAX_CHUNKS = 30
_MAX_MONTHS_BACK = 120


def _row_key(subscription_id: str, level: Level) -> str:
    return f"{subscription_id.lower()}_{level.value}"


class StatementStore:
    """Stored (final) statements and the months' closed markers."""

    def __init__(self, account: StorageAccount):
        self._account = account

    def _table_call(self, operation: Callable[[], Any], what: str) -> Any:
        try:
            return call_with_retry(operation, what=what)
        except ResourceNotFoundError:
            self._account.create_table(self._account.settings.table_name(ROLE))
            return call_with_retry(operation, what=what)

    def get(self, month: Month, subscription_id: str, level: Level) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                entity = self._account.table(ROLE).get_entity(
                    month.key, _row_key(subscription_id, level)
                )
            except ResourceNotFoundError:
                return None
            return _document(entity)

        result: dict[str, Any] | None = call_with_retry(read, what="read statement")
        return result

    def put(self, month: Month, document: Mapping[str, Any], provider: str) -> bool:
        """Store a final statement unless one is stored already; True if this call stored it."""
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
        if len(chunks) > _MAX_CHUNKS:
            raise ValueError(f"statement of {document['subscriptionId']} is too large to store")
        entity: dict[str, Any] = {
            "PartitionKey": month.key,
            "RowKey": _row_key(document["subscriptionId"], Level(document["level"])),
            "Subscription": document["subscriptionId"],
            "Level": document["level"],
            "Buyer": document["buyerSubscriptionId"],
            "Provider": provider,
            "Currency": document["currency"] or "",
            "Total": document["total"],
            "Rows": int(document["rows"]),
            "Chunks": len(chunks),
        }
        for index, chunk in enumerate(chunks):
            entity[f"Doc{index:02d}"] = chunk

        def create() -> bool:
            try:
                self._account.table(ROLE).create_entity(entity)
                return True
            except ResourceExistsError:
                return False  # final already: the first stored statement stands

        return bool(self._table_call(create, f"store statement {entity['RowKey']}"))

    def stored_keys(self, month: Month) -> set[str]:
        """RowKeys stored for ``month`` (statements and the closed marker)."""

        def read() -> set[str]:
            try:
                entities = self._account.table(ROLE).query_entities(
                    "PartitionKey eq @month", parameters={"month": month.key}, select=["RowKey"]
                )
                return {entity["RowKey"] for entity in entities}
            except ResourceNotFoundError:
                return set()

        result: set[str] = call_with_retry(read, what="list statements")
        return result

    def summaries(self, month: Month) -> dict[str, dict[str, Any]]:
        """The summary columns of every stored statement of ``month``, by RowKey."""

        def read() -> dict[str, dict[str, Any]]:
            try:
                entities = self._account.table(ROLE).query_entities(
                    "PartitionKey eq @month",
                    parameters={"month": month.key},
                    select=["RowKey", "Subscription", "Level", "Provider", "Total", "Rows"],
                )
                return {entity["RowKey"]: dict(entity) for entity in entities}
            except ResourceNotFoundError:
                return {}

        result: dict[str, dict[str, Any]] = call_with_retry(read, what="read statement totals")
        return result

    def is_closed(self, month: Month) -> bool:
        """True once every statement of ``month`` is stored."""

        def read() -> bool:
            try:
                self._account.table(ROLE).get_entity(month.key, CLOSED, select=["RowKey"])
            except ResourceNotFoundError:
                return False
            return True

        result: bool = call_with_retry(read, what="read month marker")
        return result

    def close(self, month: Month, statements: int, at: datetime) -> None:
        entity = {
            "PartitionKey": month.key,
            "RowKey": CLOSED,
            "Statements": statements,
            "FinalisedAt": at,
        }

        def create() -> None:
            # Closed by another run: the same fact.
            with contextlib.suppress(ResourceExistsError):
                self._account.table(ROLE).create_entity(entity)

        self._table_call(create, f"close month {month}")


def _document(entity: Mapping[str, Any]) -> dict[str, Any]:
    text = "".join(entity[f"Doc{index:02d}"] for index in range(int(entity["Chunks"])))
    document: dict[str, Any] = json.loads(text)
    return document


@dataclass
class FinaliseRun:
    """What one finalising run did."""

    months_closed: list[str] = field(default_factory=list)
    statements_stored: int = 0
    statements_kept: int = 0  # already stored by an earlier or concurrent run
    stopped_by_budget: bool = False

    def summary_line(self) -> str:
        closed = ", ".join(self.months_closed) or "none"
        tail = "; stopped by time budget (the next run continues)" if self.stopped_by_budget else ""
        return (
            f"finalise_statements: months closed: {closed}; statements stored "
            f"{self.statements_stored}, already stored {self.statements_kept}{tail}"
        )


@dataclass(frozen=True)
class _RollupContext:
    """What one roll-up reads once: prices, subscriptions, the month's stored totals."""

    book: PriceBook
    subscriptions: Mapping[str, Subscription]
    stored: Mapping[str, Mapping[str, Any]]
    closed: bool
    watermark: datetime | None


class Statements:
    """Statements for the API, the CLI and the finaliser (see the module docstring)."""

    def __init__(
        self,
        account: StorageAccount,
        meters: MeterCatalogue,
        source_names: Sequence[str],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.account = account
        self.meters = meters
        self.store = StatementStore(account)
        self._source_names = tuple(source_names)
        self._clock = clock

    def _collected_through(self) -> datetime | None:
        """The last hour every usage source has written (statements close after it)."""
        return collected_through(self.account, self._source_names)

    # --- reading ------------------------------------------------------------------------

    def price_book(self) -> PriceBook:
        return PriceBook(SheetStore(self.account).all())

    def statement(
        self,
        subscription_id: str,
        month: Month,
        level: Level,
        subscriptions: Mapping[str, Subscription],
        *,
        book: PriceBook | None = None,
    ) -> dict[str, Any] | None:
        """The final statement if stored, else a provisional one; None if ``level`` does not
        apply (wholesale of a subscription no delegated provider offered)."""
        subscription_id = subscription_id.lower()
        book = book or self.price_book()
        pricing = book.pricing(subscription_id, subscriptions, level)
        if pricing is None:
            return None
        stored = self.store.get(month, subscription_id, level)
        if stored is not None:
            return stored
        watermark = self._collected_through()
        now = self._clock()
        if self.store.is_closed(month):  # closed, and nothing was reported for it
            return empty_statement(
                subscription_id,
                pricing.buyer,
                level,
                month,
                book.currency,
                status=FINAL,
                collected_through=month.last_hour,
                at=now,
            )
        return self.compute(subscription_id, month, [level], subscriptions, book, watermark)[0]

    def compute(
        self,
        subscription_id: str,
        month: Month,
        levels: Iterable[Level],
        subscriptions: Mapping[str, Subscription],
        book: PriceBook,
        last_hour: datetime | None,
        *,
        status: str = PROVISIONAL,
    ) -> list[dict[str, Any]]:
        """Statements of the subscription's rows of ``month`` reported up to ``last_hour``
        (None: no rows yet), one per level that applies, from one read of the rows. Not
        stored: the finaliser stores them; the API and the CLI show them as provisional."""
        now = self._clock()
        builders = []
        for level in levels:
            pricing = book.pricing(subscription_id, subscriptions, level)
            if pricing is not None:
                builders.append(StatementBuilder(pricing, month))
        bound = min(month.last_hour, last_hour) if last_hour is not None else None
        if bound is not None and bound >= month.first_hour:
            for _, row in read_hourly_rows(self.account, subscription_id, month.first_hour, bound):
                for builder in builders:
                    builder.add(row)
        return [
            builder.build(self.meters, status=status, collected_through=bound, at=now)
            for builder in builders
        ]

    def _totals(
        self,
        subscription_id: str,
        month: Month,
        levels: list[Level],
        context: _RollupContext,
    ) -> tuple[dict[Level, tuple[Decimal, int]], bool]:
        """The stored (final) or computed (provisional) totals and row counts per level."""
        found = {
            level: context.stored[key]
            for level in levels
            if (key := _row_key(subscription_id, level)) in context.stored
        }
        if len(found) == len(levels) or context.closed:
            totals = {lvl: (Decimal(e["Total"]), int(e["Rows"])) for lvl, e in found.items()}
            return totals, True
        computed = self.compute(
            subscription_id, month, levels, context.subscriptions, context.book, context.watermark
        )
        return {Level(d["level"]): (Decimal(d["total"]), int(d["rows"])) for d in computed}, False

    def rollup(
        self,
        provider: Subscription,
        month: Month,
        subscriptions: Mapping[str, Subscription],
        tenants: Iterable[str],
    ) -> dict[str, Any]:
        """A provider's month over ``tenants`` (its direct tenants in the caller's scope):
        each tenant's total (what the tenant pays) and their sum; for a delegated provider,
        its wholesale cost of the same usage and the margin; for a tenant that is itself a
        delegated provider, what it owes for its own tenants' usage (its wholesale cost).

        Tenants with nothing to pay for in the month are left out. Totals are sums of the
        statements' totals (each already a sum of rounded lines)."""
        provider_id = provider.subscription_id.lower()
        delegated = bool(provider.provider_subscription_id)
        stored = self.store.summaries(month)
        context = _RollupContext(
            self.price_book(), subscriptions, stored, CLOSED in stored, self._collected_through()
        )
        listed = []
        total = wholesale = Decimal(0)
        final = True
        levels = [Level.RETAIL, Level.WHOLESALE] if delegated else [Level.RETAIL]
        with localcontext(RATING_CONTEXT):
            for tenant in sorted(tenants):
                totals, is_final = self._totals(tenant, month, levels, context)
                rows = max((count for _, count in totals.values()), default=0)
                resale = self._resale(tenant, month, context)
                if rows == 0 and resale is None:
                    continue
                final = final and is_final and (resale is None or resale[1])
                retail_total = totals.get(Level.RETAIL, (Decimal(0), 0))[0]
                item: dict[str, Any] = {
                    "subscriptionId": tenant,
                    "displayName": subscriptions[tenant].display_name,
                    "status": FINAL if is_final else PROVISIONAL,
                    "total": money(retail_total),
                }
                total += retail_total
                if delegated:
                    cost = totals.get(Level.WHOLESALE, (Decimal(0), 0))[0]
                    item["wholesaleTotal"] = money(cost)
                    wholesale += cost
                if resale is not None:
                    item["resoldWholesaleTotal"] = money(resale[0])
                    total += resale[0]
                listed.append(item)
        return {
            "providerSubscriptionId": provider_id,
            "month": str(month),
            "status": FINAL if final else PROVISIONAL,
            "currency": context.book.currency,
            "tenants": listed,
            "total": money(total),
            "wholesaleTotal": money(wholesale) if delegated else None,
            "margin": money(total - wholesale) if delegated else None,
            "rounding": "sums of the statements' totals (each a sum of rounded lines)",
            "computedAt": iso(self._clock()),
        }

    def _resale(
        self, tenant: str, month: Month, context: _RollupContext
    ) -> tuple[Decimal, bool] | None:
        """For a tenant that is a delegated provider: its wholesale cost of its own tenants'
        usage (what it owes this provider for them), and whether all of it is final."""
        subscription = context.subscriptions.get(tenant)
        if subscription is None or not subscription.is_provider:
            return None
        cost, final = Decimal(0), True
        for sub in sorted(context.subscriptions):
            if (context.subscriptions[sub].provider_subscription_id or "").lower() != tenant:
                continue
            totals, is_final = self._totals(sub, month, [Level.WHOLESALE], context)
            if Level.WHOLESALE in totals:
                cost += totals[Level.WHOLESALE][0]
                final = final and is_final
        return cost, final

    # --- finalising ---------------------------------------------------------------------

    def finalise_due(self, budget_seconds: float) -> FinaliseRun:
        """Store the statements of every closed month not finalised yet, oldest first."""
        run = FinaliseRun()
        deadline = time.monotonic() + budget_seconds
        watermark = self._collected_through()
        if watermark is None:
            return run
        newest_closed = Month.of(watermark).previous
        if watermark == Month.of(watermark).last_hour:
            newest_closed = Month.of(watermark)
        due: list[Month] = []
        month = newest_closed
        for _ in range(_MAX_MONTHS_BACK):
            if self.store.is_closed(month) or not has_entries(
                self.account, month.first_hour, month.last_hour
            ):
                break
            due.append(month)
            month = month.previous
        for month in reversed(due):
            if not self._finalise_month(month, run, deadline):
                run.stopped_by_budget = True
                break
            run.months_closed.append(str(month))
        log.info(run.summary_line())
        return run

    def _finalise_month(self, month: Month, run: FinaliseRun, deadline: float) -> bool:
        """Store every statement of ``month``; False if the budget ran out first."""
        book = self.price_book()
        subscriptions = SubscriptionStore(self.account).all()
        stored = self.store.stored_keys(month)
        reported = sorted(
            {
                entry.subscription_id
                for _, entry in read_manifest(self.account, month.first_hour, month.last_hour)
            }
        )
        count = 0
        for subscription_id in reported:
            levels = [Level.RETAIL]
            if book.pricing(subscription_id, subscriptions, Level.WHOLESALE) is not None:
                levels.append(Level.WHOLESALE)
            missing = [lvl for lvl in levels if _row_key(subscription_id, lvl) not in stored]
            count += len(levels)
            if not missing:
                continue
            if time.monotonic() > deadline:
                return False
            documents = self.compute(
                subscription_id, month, missing, subscriptions, book, month.last_hour, status=FINAL
            )
            subscription = subscriptions.get(subscription_id)
            provider = (subscription.provider_subscription_id or "") if subscription else ""
            for document in documents:
                document["finalisedAt"] = document["computedAt"]
                if self.store.put(month, document, provider.lower()):
                    run.statements_stored += 1
                else:
                    run.statements_kept += 1
        self.store.close(month, count, self._clock())
        return True
