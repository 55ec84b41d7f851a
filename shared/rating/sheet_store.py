"""The ``{prefix}prices`` table: every version of every price sheet, never rewritten.

One entity per sheet version: ``PartitionKey`` = the scope (``default``,
``provider_{id}``, ``subscription_{id}``), ``RowKey`` = the effective hour
(``YYYYMMDDHH``), so a scope's versions are one partition in time order. The entries are
JSON text split over ``Entries00``, ``Entries01``, ... (a property holds at most 64 KiB);
a sheet is one entity, so storing it is atomic: a sheet is there whole or not at all.

History is fixed (invariant 10): a version, once stored, is never replaced. Storing the
same version again with the same content changes nothing (an import can be retried);
with other content it is refused: publish a new version with a later effective date. A new
version effective in a finalised month is refused, naming the month (its statements are
final; corrections are adjustments in the open month). Storing a version changes what
open months cost: the caller re-rates them (``Rater.rerate_open_months``).
Storing checks what a single file cannot: the scope names a known subscription (a
delegated provider for ``provider:``), and the currency is the deployment's (the one
every stored sheet uses). The whole table is small (sheets x versions) and is read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.core.errors import SheetRejectedError
from shared.core.hours import hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.rating.engine import Month
from shared.rating.marks import RatingMarks
from shared.rating.sheets import PriceEntry, PriceSheet, Scope, ScopeKind, Tier, version_time
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionStore

ROLE: Final = "prices"
_CHUNK = 30_000  # characters per property: 60 KB of UTF-16, under the 64 KiB limit
_MAX_CHUNKS = 15  # entity size limit (1 MiB) with room to spare


class StoreOutcome(StrEnum):
    STORED = "stored"
    UNCHANGED = "unchanged"  # the same version with the same content was already there


def _partition(scope: Scope) -> str:
    return scope.kind.value if not scope.subject else f"{scope.kind.value}_{scope.subject}"


def _entries_text(sheet: PriceSheet) -> str:
    entries = [
        [
            entry.meter_id,
            format(entry.included_quantity, "f"),
            [[format(t.start, "f"), format(t.unit_price, "f")] for t in entry.tiers],
        ]
        for entry in sorted(sheet.entries.values(), key=lambda e: e.meter_key)
    ]
    return json.dumps(entries, separators=(",", ":"))


def _entity(sheet: PriceSheet) -> dict[str, Any]:
    text = _entries_text(sheet)
    chunks = [text[start : start + _CHUNK] for start in range(0, len(text), _CHUNK)] or [""]
    if len(chunks) > _MAX_CHUNKS:
        raise SheetRejectedError([f"the sheet is too large to store ({len(text):,} characters)"])
    entity: dict[str, Any] = {
        "PartitionKey": _partition(sheet.scope),
        "RowKey": hour_key(sheet.effective_from),
        "Scope": str(sheet.scope),
        "Currency": sheet.currency or "",
        "DiscountPercent": format(sheet.discount_percent, "f"),
        "Chunks": len(chunks),
    }
    for index, chunk in enumerate(chunks):
        entity[f"Entries{index:02d}"] = chunk
    return entity


def _sheet(entity: dict[str, Any]) -> PriceSheet:
    text = "".join(entity[f"Entries{index:02d}"] for index in range(int(entity["Chunks"])))
    entries = {}
    for meter_id, included, tiers in json.loads(text):
        entry = PriceEntry(
            meter_id,
            tuple(Tier(Decimal(start), Decimal(price)) for start, price in tiers),
            Decimal(included),
        )
        entries[entry.meter_key] = entry
    return PriceSheet(
        scope=Scope.parse(entity["Scope"]),
        effective_from=parse_hour_key(entity["RowKey"]),
        currency=entity.get("Currency") or None,
        entries=entries,
        discount_percent=Decimal(entity.get("DiscountPercent") or "0"),
    )


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    keys = set(wanted) - {"PartitionKey", "RowKey"}
    return all(stored.get(key) == wanted[key] for key in keys)


class SheetStore:
    def __init__(self, account: StorageAccount):
        self._account = account

    def all(self) -> list[PriceSheet]:
        """Every stored version of every scope (the table is small: read it whole)."""

        def read() -> list[PriceSheet]:
            try:
                return [_sheet(entity) for entity in self._account.table(ROLE).list_entities()]
            except ResourceNotFoundError:
                return []  # no sheet was ever stored

        return call_with_retry(read, what="read price sheets")

    def put(self, sheet: PriceSheet, subscriptions: SubscriptionStore) -> StoreOutcome:
        """Store a new version (see the module docstring for what is refused)."""
        stored = self.all()
        self._check(sheet, subscriptions, stored)
        if not any(s.scope == sheet.scope and s.effective_from == sheet.effective_from
                   for s in stored):  # fmt: skip
            self._check_open(sheet)
        wanted = _entity(sheet)
        table = self._account.table(ROLE)

        def store() -> StoreOutcome:
            try:
                table.create_entity(wanted)
                return StoreOutcome.STORED
            except ResourceExistsError:
                stored = table.get_entity(wanted["PartitionKey"], wanted["RowKey"])
            if _same(stored, wanted):
                return StoreOutcome.UNCHANGED
            raise SheetRejectedError(
                [
                    f"version {sheet.version} is already stored with other prices; a stored "
                    "version never changes: import the new prices with a later effective date"
                ]
            )

        try:
            return call_with_retry(store, what=f"store price sheet {sheet.version}")
        except ResourceNotFoundError:
            self._account.create_table(self._account.settings.table_name(ROLE))
            return call_with_retry(store, what=f"store price sheet {sheet.version}")

    def _check_open(self, sheet: PriceSheet) -> None:
        """History is closed: a new version may not take effect in a finalised month (its
        statements are final; a closed month is corrected by an adjustment instead)."""
        finalised = RatingMarks(self._account).finalised_through()
        if finalised is not None and sheet.effective_from <= finalised.last_hour:
            month = Month.of(sheet.effective_from)
            raise SheetRejectedError(
                [
                    f"effective {version_time(sheet.effective_from)} falls in {month}, which is "
                    f"finalised (statements are final through {finalised}): a closed month is "
                    "corrected with an adjustment in the open month (python -m ops adjustments "
                    "add); give an effective date after "
                    f"{finalised}"
                ]
            )

    @staticmethod
    def _check(
        sheet: PriceSheet, subscriptions: SubscriptionStore, stored: Iterable[PriceSheet]
    ) -> None:
        problems: list[str] = []
        scope = sheet.scope
        if scope.subject:
            target = subscriptions.get(scope.subject)
            if target is None:
                problems.append(f"scope {scope}: subscription {scope.subject} is not known")
            elif scope.kind is ScopeKind.PROVIDER and not (
                target.is_provider and target.provider_subscription_id
            ):
                problems.append(
                    f"scope {scope}: {scope.subject} is not a delegated provider subscription "
                    "(the default provider's tenants are priced by the default sheet)"
                )
        if sheet.currency is not None:
            others = {s.currency for s in stored if s.currency and s.scope != scope}
            others |= {
                s.currency
                for s in stored
                if s.currency and s.scope == scope and s.effective_from != sheet.effective_from
            }
            if others and others != {sheet.currency}:
                problems.append(
                    f"currency {sheet.currency} differs from the other sheets' "
                    f"{', '.join(sorted(others))}: every sheet of a deployment uses one currency"
                )
        if problems:
            raise SheetRejectedError(problems)


def deployment_currency(sheets: Iterable[PriceSheet]) -> str | None:
    """The one currency of the stored sheets, or None before any sheet is stored."""
    return next((sheet.currency for sheet in sheets if sheet.currency), None)
