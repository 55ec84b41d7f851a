"""Adjustments: credits, corrections and one-off charges an operator adds to a statement.

An adjustment belongs to one subscription's statement of one **open** month at one level
(``retail``: what the subscription is charged; ``wholesale``: what its delegated provider is
charged for it). Categories and their sign (the amount is signed as it changes the bill):

- ``credit``: money given back (an SLA credit, a goodwill credit): negative;
- ``charge``: a one-off charge (a setup fee, a support incident): positive;
- ``adjustment``: anything else, either sign; what reverses an earlier adjustment.

Each records who added it, when and why, and optionally the earlier month it corrects
(``corrects``: FOCUS ``ChargeClass = Correction``) or the adjustment it reverses. Amounts are
whole minor units of the deployment's currency, so statement totals stay to the cent.

**Immutable.** An adjustment is written once (insert, never update or delete); a mistake is
reversed by another adjustment (``reverses``). **History is closed**: a month's adjustments
end when it is finalised. The ``{prefix}adjustments`` table holds one partition per month
(``YYYYMM``): the adjustments (``RowKey = {subscription}_{level}_{id}``) and a guard,
``~month``, which every add updates in the same entity-group transaction, ETag-guarded,
and the finaliser marks ``Final`` before it freezes the month: an add either commits before
the month is final (and is on its final statements) or is refused, never half of each.

Writes come from the operator CLI only (``python -m ops adjustments``, with storage rights);
the HTTP API reads them, per the caller's scope.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.core.errors import BadInputError
from shared.core.hours import as_utc, utc_now
from shared.core.retry import call_with_retry
from shared.rating.engine import Level, Month
from shared.rating.sheets import CURRENCY_MINOR_UNITS, parse_amount
from shared.storage.account import StorageAccount

ROLE: Final = "adjustments"
GUARD_ATTEMPTS: Final = 20  # adds racing for one month's guard (each retry reads it again)
_JITTER = random.Random()  # jitter, not security
GUARD: Final = "~month"
MAX_REASON: Final = 500


class Category(StrEnum):
    CREDIT = "credit"
    ADJUSTMENT = "adjustment"
    CHARGE = "charge"

    @property
    def focus_charge_category(self) -> str:
        """FOCUS ``ChargeCategory``: Credit, Adjustment, or Purchase for a one-off charge."""
        return {"credit": "Credit", "adjustment": "Adjustment", "charge": "Purchase"}[self.value]


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One adjustment as stored (see the module docstring)."""

    adjustment_id: str
    subscription_id: str
    level: Level
    month: Month
    category: Category
    amount: Decimal
    currency: str
    reason: str
    created_by: str
    created_at: datetime
    corrects: Month | None = None
    reverses: str | None = None

    def document(self) -> dict[str, Any]:
        """The adjustment as the API and the CLI show it."""
        return {
            "id": self.adjustment_id,
            "subscriptionId": self.subscription_id,
            "level": self.level.value,
            "month": str(self.month),
            "category": self.category.value,
            "amount": format(self.amount, "f"),
            "currency": self.currency,
            "reason": self.reason,
            "corrects": str(self.corrects) if self.corrects else None,
            "reverses": self.reverses,
            "createdBy": self.created_by,
            "createdAt": f"{as_utc(self.created_at):%Y-%m-%dT%H:%M:%SZ}",
        }


def _row_key(subscription_id: str, level: Level, adjustment_id: str) -> str:
    return f"{subscription_id.lower()}_{level.value}_{adjustment_id}"


def _entity(adjustment: Adjustment) -> dict[str, Any]:
    return {
        "PartitionKey": adjustment.month.key,
        "RowKey": _row_key(adjustment.subscription_id, adjustment.level, adjustment.adjustment_id),
        "Id": adjustment.adjustment_id,
        "Subscription": adjustment.subscription_id.lower(),
        "Level": adjustment.level.value,
        "Month": str(adjustment.month),
        "Category": adjustment.category.value,
        "Amount": format(adjustment.amount, "f"),
        "Currency": adjustment.currency,
        "Reason": adjustment.reason,
        "Corrects": str(adjustment.corrects) if adjustment.corrects else "",
        "Reverses": adjustment.reverses or "",
        "CreatedBy": adjustment.created_by,
        "CreatedAt": as_utc(adjustment.created_at),
    }


def _adjustment(entity: dict[str, Any]) -> Adjustment:
    month = Month.parse(entity["Month"])
    assert month is not None  # written by _entity
    return Adjustment(
        adjustment_id=entity["Id"],
        subscription_id=entity["Subscription"],
        level=Level(entity["Level"]),
        month=month,
        category=Category(entity["Category"]),
        amount=Decimal(entity["Amount"]),
        currency=entity["Currency"],
        reason=entity["Reason"],
        created_by=entity["CreatedBy"],
        created_at=as_utc(entity["CreatedAt"]),
        corrects=Month.parse(entity.get("Corrects") or "") if entity.get("Corrects") else None,
        reverses=entity.get("Reverses") or None,
    )


def new_id(month: Month, at: datetime) -> str:
    """``{YYYYMM}-{yyyymmddHHMMSS}-{6 hex}``: the statement month (so ``show`` finds its
    partition), when it was made, and randomness (two operators in one second)."""
    return f"{month.key}-{as_utc(at):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def month_of_id(adjustment_id: str) -> Month | None:
    head = adjustment_id.strip().split("-", 1)[0]
    if len(head) != 6 or not head.isdigit():
        return None
    return Month.parse(f"{head[:4]}-{head[4:]}")


def checked_amount(text: str, category: Category, currency: str) -> Decimal:
    """The amount as it changes the bill, checked against its category and currency."""
    amount = parse_amount(text)
    if amount is None:
        raise BadInputError(f"amount {text.strip()!r} is not a plain decimal number")
    digits = CURRENCY_MINOR_UNITS[currency]
    if amount != amount.quantize(Decimal(1).scaleb(-digits)):
        raise BadInputError(
            f"amount {text.strip()} has more decimals than {currency}'s minor unit ({digits})"
        )
    if amount == 0:
        raise BadInputError("an adjustment of 0 changes nothing")
    if category is Category.CREDIT and amount > 0:
        raise BadInputError("a credit lowers the bill: give it as a negative amount")
    if category is Category.CHARGE and amount < 0:
        raise BadInputError("a one-off charge raises the bill: give it as a positive amount")
    if abs(amount) >= Decimal(10) ** 15:
        raise BadInputError(f"amount {text.strip()} is out of range (at most 15 integer digits)")
    return amount


class AdjustmentStore:
    """The ``{prefix}adjustments`` table (see the module docstring)."""

    def __init__(self, account: StorageAccount, *, clock: Any = utc_now) -> None:
        self._account = account
        self._clock = clock

    def _table(self) -> Any:
        return self._account.table(ROLE)

    def _read(self, query: str, parameters: dict[str, Any], what: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            try:
                return self._account.transport.query_entities(
                    self._table(), query, parameters=parameters
                )
            except ResourceNotFoundError:
                return []

        return call_with_retry(read, what=what)

    def of_month(self, month: Month) -> list[Adjustment]:
        """Every adjustment of ``month`` (one partition), in the order they were added."""
        return _in_order(
            _adjustment(entity)
            for entity in self._read(
                "PartitionKey eq @pk", {"pk": month.key}, f"read adjustments {month}"
            )
            if entity["RowKey"] != GUARD
        )

    def of_subscription(
        self, subscription_id: str, month: Month, level: Level | None = None
    ) -> list[Adjustment]:
        """The subscription's adjustments of ``month`` (one level, or both): one range read."""
        prefix = f"{subscription_id.lower()}_{level.value + '_' if level else ''}"
        return _in_order(
            _adjustment(entity)
            for entity in self._read(
                "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                {"pk": month.key, "low": prefix, "high": prefix + "~"},
                f"read adjustments {month} of {subscription_id}",
            )
        )

    def get(self, adjustment_id: str) -> Adjustment | None:
        month = month_of_id(adjustment_id)
        if month is None:
            return None
        found = self._read(
            "PartitionKey eq @pk and Id eq @id",
            {"pk": month.key, "id": adjustment_id.strip()},
            f"read adjustment {adjustment_id}",
        )
        return _adjustment(found[0]) if found else None

    def is_final(self, month: Month) -> bool:
        guard = self._guard(month)
        return guard is not None and bool(guard.get("Final"))

    def _guard(self, month: Month) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self._table().get_entity(month.key, GUARD)
            except ResourceNotFoundError:
                return None
            return found

        return call_with_retry(read, what=f"read adjustments guard {month}")

    def add(
        self,
        *,
        subscription_id: str,
        level: Level,
        month: Month,
        category: Category,
        amount: Decimal,
        currency: str,
        reason: str,
        created_by: str,
        corrects: Month | None = None,
        reverses: str | None = None,
    ) -> Adjustment:
        """Write a new adjustment, unless its month is final (BadInputError naming it)."""
        reason = reason.strip()
        if not reason:
            raise BadInputError("say why: --reason is required")
        if len(reason) > MAX_REASON:
            raise BadInputError(f"the reason is longer than {MAX_REASON} characters")
        if corrects is not None and corrects >= month:
            raise BadInputError(
                f"an adjustment in {month} corrects an earlier month, not {corrects}"
            )
        at = self._clock()
        adjustment = Adjustment(
            adjustment_id=new_id(month, at),
            subscription_id=subscription_id.lower(),
            level=level,
            month=month,
            category=category,
            amount=amount,
            currency=currency,
            reason=reason,
            created_by=created_by.strip() or "unknown",
            created_at=at,
            corrects=corrects,
            reverses=reverses,
        )

        def write() -> None:
            guard = self._guard(month)
            if guard is not None and guard.get("Final"):
                raise final_month_error(month)
            count = int((guard or {}).get("Adjustments") or 0) + 1
            guard_entity = {"PartitionKey": month.key, "RowKey": GUARD, "Final": False,
                            "Adjustments": count}  # fmt: skip
            operations: list[Any] = [("create", _entity(adjustment))]
            if guard is None:
                operations.append(("create", guard_entity))
            else:
                operations.append(
                    (
                        "update",
                        guard_entity,
                        {
                            "mode": UpdateMode.REPLACE,
                            "etag": _etag(guard),
                            "match_condition": MatchConditions.IfNotModified,
                        },
                    )
                )
            self._account.transport.submit_transaction(self._table(), operations)

        for attempt in range(1, GUARD_ATTEMPTS + 1):
            try:
                call_with_retry(write, what=f"add adjustment {adjustment.adjustment_id}")
                return adjustment
            except ResourceNotFoundError:
                self._account.create_table(self._account.settings.table_name(ROLE))
            except TableTransactionError as error:
                if error.status_code not in (409, 412):
                    raise
                # Another add, or the finaliser, changed the guard: decide again on what it
                # is, after a jittered pause so that racing adds do not collide in step.
                time.sleep(_JITTER.uniform(0, 0.05 * 2 ** min(attempt, 5)))
        raise BadInputError(f"adjustments of {month} are changing too fast; try again")

    def close(self, month: Month, at: datetime) -> None:
        """Mark ``month`` final: no adjustment can be added to it from now on."""
        table = self._table()

        def write() -> None:
            while True:
                guard = self._guard(month)
                entity = {"PartitionKey": month.key, "RowKey": GUARD, "Final": True,
                          "FinalisedAt": as_utc(at),
                          "Adjustments": int((guard or {}).get("Adjustments") or 0)}  # fmt: skip
                try:
                    if guard is None:
                        table.create_entity(entity)
                    elif not guard.get("Final"):
                        table.update_entity(
                            entity,
                            mode=UpdateMode.REPLACE,
                            etag=_etag(guard),
                            match_condition=MatchConditions.IfNotModified,
                        )
                    return
                except ResourceNotFoundError:
                    self._account.create_table(self._account.settings.table_name(ROLE))
                except Exception as error:  # ResourceExists / ResourceModified: read again
                    if getattr(error, "status_code", None) not in (409, 412):
                        raise

        call_with_retry(write, what=f"close adjustments of {month}")


def _in_order(adjustments: Iterable[Adjustment]) -> list[Adjustment]:
    """Adjustments in the order they were added (ids break ties)."""
    return sorted(adjustments, key=lambda a: (a.created_at, a.adjustment_id))


def _etag(entity: dict[str, Any]) -> str:
    """The ETag of an entity read by the SDK (its ``TableEntity.metadata``)."""
    return str(entity.metadata["etag"])  # type: ignore[attr-defined]


def final_month_error(month: Month) -> BadInputError:
    return BadInputError(
        f"{month} is finalised: its statements never change; correct it with an adjustment "
        "in the open month (--corrects " + str(month) + ")",
        code="MonthFinalised",
    )


def totals(adjustments: Iterable[Adjustment]) -> dict[tuple[str, Level], Decimal]:
    """The adjustments' sum per (subscription, level)."""
    found: dict[tuple[str, Level], Decimal] = {}
    for adjustment in adjustments:
        key = (adjustment.subscription_id, adjustment.level)
        found[key] = found.get(key, Decimal(0)) + adjustment.amount
    return found
