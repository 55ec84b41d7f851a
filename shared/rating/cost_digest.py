"""The cost digest: each subscription's billed money of a statement month, stored where a
provider's or the whole cloud's cost query reads it a page per 1,000 subscriptions.

**Why.** The ledger keeps charge lines in each subscription's own table
(``shared.rating.ledger``), so a cost series of one subscription is one range read, but one
of a provider's tenants, or of the whole cloud, was a range read per subscription with
charges: about 2,100 per query at 300 directory tenants, five queries per cost view. The
digest holds the same money in one table, one entity per subscription and statement month,
partitioned as the charges index is, so the read follows the answer, not the fleet.

**Layout.** ``{prefix}costdigests``: ``PartitionKey = {YYYYMM}_{provider}`` (the statement
month and the subscription's provider, as in the index), ``RowKey`` = subscription. Its
document holds each level's billed items (retail; wholesale for a delegated provider's
tenant): the charge lines' billed shares (``shared.rating.cost_lines.statement_items``, the
function the per-subscription read uses, so both give the same figure to the cent), summed
per usage day, meter, resource, location, tags and whether priced (every dimension the cost
query groups or filters by is one of these or follows from them: a price part or tier is
not). Resource ids and tags are named once. A digest too big for an entity (tens of
thousands of resource-days) is stored as ``Oversize`` with no items.

**Written** by rating after each write of a subscription's month (``Rater``), from the whole
month it has just written, before the rated mark moves: a crash between the ledger's write
and the digest's leaves the batch unrated, and its rerun writes the digest again. A
subscription that moves to another provider has its digest in the old partition emptied
before its month is written under the new one. The write is not conditional (it would
need a read): two rating runs on one subscription at once (the timer runs one at a time,
but ``ops prices import`` re-rates through the same code) could leave the earlier run's
digest last, until the subscription is rated again. Finalising a month writes every
digest again from the frozen ledger (``shared.rating.finaliser``), so a closed month's
cost is its statement's whatever happened before.

**Read** (:class:`ProviderCostLines`): per statement month, the index and the digests of the
provider's partition (or of every provider's, for the whole cloud): a page per 1,000 of
each. A subscription indexed without a digest (rated before digests existed, or
``Oversize``) is read from its ledger days instead, so the answer never depends on the
digest being there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

from azure.core.exceptions import ResourceNotFoundError

from shared.core.hours import day_key, hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.rating.adjustments import AdjustmentStore
from shared.rating.cost_lines import (
    USAGE_CHARGE,
    CostItem,
    CostLines,
    in_window,
    months_between,
    statement_items,
)
from shared.rating.engine import RATING_CONTEXT, Level, Month
from shared.rating.ledger import (
    ChargeLedger,
    LedgerDocumentTooLargeError,
    LoadedMonth,
    document_text,
    index_partition,
    provider_partitions,
    upsert_replacing,
    with_document,
)
from shared.storage.account import StorageAccount

DIGEST_ROLE: Final = "costdigests"
VERSION: Final = 1

# One item: usage day (YYYYMMDD), meter, resource (index into "r"), location, tags (index
# into "t", -1 for none), quantity, billed cost, priced (1) or not (0).
_Key = tuple[str, str, int, str, int, bool]


def digest_document(loaded: LoadedMonth) -> str:
    """The digest of a month rating holds whole (every day of every level it rates)."""
    resources: dict[str, int] = {}
    tags: dict[str, int] = {}
    levels: dict[str, list[list[Any]]] = {}
    for level, charges in sorted(loaded.months.items(), key=lambda item: item[0].value):
        days = [stored.charges for (lvl, _), stored in loaded.days.items() if lvl is level]
        sums: dict[_Key, list[Decimal]] = {}
        for item in statement_items(
            loaded.subscription_id, loaded.month, days, charges.currency, level
        ):
            key = (
                day_key(item.usage_day),
                item.meter_id,
                resources.setdefault(item.resource_uri, len(resources)),
                item.location,
                -1 if item.tags is None else tags.setdefault(item.tags, len(tags)),
                item.priced,
            )
            total = sums.setdefault(key, [Decimal(0), Decimal(0)])
            with localcontext(RATING_CONTEXT):  # exact, as the charge lines are
                total[0] += item.quantity
                total[1] += item.cost
        levels[level.value] = [
            [*key[:5], _text(quantity), _text(cost), int(key[5])]
            for key, (quantity, cost) in sorted(sums.items())
        ]
    body = {"v": VERSION, "r": list(resources), "t": list(tags), "levels": levels}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


@dataclass(frozen=True, slots=True)
class Digest:
    """One subscription's stored digest of one statement month."""

    provider: str  # the partition's: the subscription's provider when it was written
    subscription_id: str
    statement_month: Month
    body: dict[str, Any]

    def items(self, level: Level) -> list[CostItem]:
        resources, tags = self.body["r"], self.body["t"]
        return [
            CostItem(
                subscription_id=self.subscription_id,
                usage_day=parse_hour_key(day + "00"),
                statement_month=self.statement_month,
                charge_type=USAGE_CHARGE,
                cost=Decimal(cost),
                level=level,
                quantity=Decimal(quantity),
                meter_id=meter,
                resource_uri=resources[resource],
                location=location,
                tags=None if tag < 0 else tags[tag],
                priced=bool(priced),
            )
            for day, meter, resource, location, tag, quantity, cost, priced in self.body[
                "levels"
            ].get(level.value, [])
        ]


class CostDigests:
    """The digests table (see the module docstring)."""

    def __init__(self, account: StorageAccount) -> None:
        self.account = account

    def _table(self) -> Any:
        return self.account.table(DIGEST_ROLE)

    def write(self, loaded: LoadedMonth, provider: str) -> None:
        """Store the digest of ``loaded`` (a month as rating has just written it, every day
        loaded) under ``provider``."""
        entity: dict[str, Any] = {
            "PartitionKey": index_partition(loaded.month, provider),
            "RowKey": loaded.subscription_id.lower(),
            "Through": _through(loaded),
        }
        try:
            entity = with_document(entity, digest_document(loaded))
        except LedgerDocumentTooLargeError:
            entity = {**entity, "Oversize": True}
        self._upsert(entity, f"write the cost digest of {loaded.subscription_id}")

    def empty(self, month: Month, subscription_id: str, provider: str) -> None:
        """Empty the subscription's digest under ``provider`` (it moved to another one)."""
        body = json.dumps({"v": VERSION, "r": [], "t": [], "levels": {}})
        entity = with_document(
            {"PartitionKey": index_partition(month, provider), "RowKey": subscription_id.lower()},
            body,
        )
        self._upsert(entity, f"empty the cost digest of {subscription_id} under {provider}")

    def _upsert(self, entity: dict[str, Any], what: str) -> None:
        upsert_replacing(self.account, DIGEST_ROLE, entity, what)

    def get(self, month: Month, provider: str, subscription_id: str) -> Digest | None:
        """One subscription's digest of ``month`` under ``provider`` (None: not stored, or
        ``Oversize``)."""
        table = self._table()
        partition = index_partition(month, provider)

        def read() -> dict[str, Any] | None:
            try:
                return dict(table.get_entity(partition, subscription_id.lower()))
            except ResourceNotFoundError:
                return None

        entity = call_with_retry(read, what=f"read the cost digest of {subscription_id}")
        return None if entity is None else _digest(entity, month)

    def read(self, month: Month, provider: str | None) -> list[Digest]:
        """The digests of ``month`` under ``provider`` (None: every provider's), a page per
        1,000; an ``Oversize`` one is left out (its subscription is read from its days)."""
        query, parameters = provider_partitions(month, provider)
        table = self._table()

        def read() -> list[dict[str, Any]]:
            try:
                return self.account.transport.query_entities(table, query, parameters=parameters)
            except ResourceNotFoundError:
                return []

        found = (
            _digest(entity, month)
            for entity in call_with_retry(read, what=f"read cost digests {month}")
        )
        return [digest for digest in found if digest is not None]


def _digest(entity: dict[str, Any], month: Month) -> Digest | None:
    if entity.get("Oversize"):
        return None
    return Digest(
        entity["PartitionKey"].partition("_")[2],
        entity["RowKey"],
        month,
        json.loads(document_text(entity)),
    )


def _through(loaded: LoadedMonth) -> str:
    found = [charges.through for charges in loaded.months.values() if charges.through]
    return hour_key(max(found)) if found else ""


class ProviderCostLines:
    """``CostLines.items`` for a provider's subscriptions (or the whole cloud's), read from
    the digests (see the module docstring)."""

    def __init__(self, ledger: ChargeLedger, adjustments: AdjustmentStore) -> None:
        self._ledger = ledger
        self._lines = CostLines(ledger, adjustments)
        self._digests = CostDigests(ledger.account)

    def items(
        self,
        provider: str | None,
        wanted: Collection[str] | None,
        first_day: datetime,
        last_day: datetime,
        through: Month,
        currency: str | None,
        levels: Sequence[Level] = (Level.RETAIL,),
        *,
        indexed: Callable[[Month, str | None], dict[str, set[str]]] | None = None,
    ) -> list[CostItem]:
        """The billed amounts at ``levels`` (one read of the digests, which hold every
        level) on usage days ``first_day`` .. ``last_day`` of
        ``provider``'s subscriptions with charges (None: every provider's), of ``wanted``
        only if given, from the statements of ``Month.of(first_day)`` .. ``through``.
        ``indexed`` reads the charges index (``ChargeLedger.indexed`` unless given: a
        caller that has read it already)."""
        read_index = indexed or self._ledger.indexed
        chosen = None if wanted is None else {subscription.lower() for subscription in wanted}
        charged: set[str] = set()
        missing: set[str] = set()
        digests: list[Digest] = []
        for month in months_between(Month.of(first_day), through):
            in_index = {
                (owner, subscription)
                for owner, tenants in read_index(month, provider).items()
                for subscription in tenants
                if chosen is None or subscription in chosen
            }
            stored = [
                digest
                for digest in self._digests.read(month, provider)
                if (digest.provider, digest.subscription_id) in in_index
            ]
            missing |= {s for _, s in in_index - {(d.provider, d.subscription_id) for d in stored}}
            charged |= {subscription for _, subscription in in_index}
            digests += stored
        found: list[CostItem] = []
        for level in levels:
            if missing:
                found += self._lines.items(missing, first_day, last_day, through, currency, level)
            for digest in digests:
                if digest.subscription_id not in missing:
                    found += in_window(digest.items(level), first_day, last_day)
        found += self._lines.adjustment_items(
            sorted(charged - missing), first_day, last_day, Month.of(first_day), through, levels
        )
        return found
