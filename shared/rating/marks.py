"""Rating's two watermarks: rated through which reported hour, finalised through which month.

Both live in the ``{prefix}state`` table beside the collection watermarks, partition
``rating``, and only move forward (ETag-guarded, so two runs racing never move one back):

- ``rated``: ``LastHour``, the last reported hour whose usage every subscription has in the
  ledger (every hour up to it is rated), and ``BookHash``, the fingerprint of the price
  sheets the open months were last checked against (a new sheet changes it, and the next
  rating run re-rates what it changed before moving on);
- ``finalised``: ``LastMonth`` (``yyyy-MM``) and ``LastHour`` (that month's last hour): every
  month up to it is final, its ledger frozen; a price sheet effective in it is refused, and
  an adjustment can no longer be added to it.

What operators and alerts read as "rated through" and "statements final through".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.core.hours import as_utc
from shared.core.retry import call_with_retry
from shared.rating.engine import Month
from shared.storage.account import StorageAccount

ROLE: Final = "state"
PARTITION: Final = "rating"
RATED: Final = "rated"
FINALISED: Final = "finalised"


@dataclass(frozen=True, slots=True)
class Rated:
    """The rated-through mark: the last hour rated, and the price book it was checked with."""

    hour: datetime | None
    book_hash: str


@dataclass(frozen=True, slots=True)
class Marks:
    """Both marks, read together."""

    rated: Rated
    finalised: Month | None


class RatingMarks:
    def __init__(self, account: StorageAccount) -> None:
        self._account = account

    def both(self) -> Marks:
        """Both marks in one read (what a statement's status and bound come from)."""

        def read() -> dict[str, dict[str, Any]]:
            try:
                entities = self._account.transport.query_entities(
                    self._account.table(ROLE), "PartitionKey eq @pk", parameters={"pk": PARTITION}
                )
            except ResourceNotFoundError:
                return {}
            return {entity["RowKey"]: entity for entity in entities}

        found = call_with_retry(read, what="read rating marks")
        rated = found.get(RATED)
        finalised = found.get(FINALISED)
        return Marks(
            Rated(as_utc(rated["LastHour"]), rated.get("BookHash") or "")
            if rated
            else Rated(None, ""),
            Month.parse(finalised["LastMonth"]) if finalised else None,
        )

    def _get(self, row_key: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self._account.table(ROLE).get_entity(PARTITION, row_key)
            except ResourceNotFoundError:
                return None
            return found

        return call_with_retry(read, what=f"read rating mark {row_key}")

    def rated(self) -> Rated:
        entity = self._get(RATED)
        if entity is None:
            return Rated(None, "")
        return Rated(as_utc(entity["LastHour"]), entity.get("BookHash") or "")

    def rated_through(self) -> datetime | None:
        """The last reported hour every subscription's usage is rated through, or None."""
        return self.rated().hour

    def finalised_through(self) -> Month | None:
        """The newest finalised month (every month up to it is final), or None."""
        entity = self._get(FINALISED)
        return None if entity is None else Month.parse(entity["LastMonth"])

    def record_rated(self, hour: datetime, book_hash: str) -> None:
        """Raise the rated mark to ``hour`` (or record a new book hash at the same hour)."""
        wanted = {"LastHour": as_utc(hour), "BookHash": book_hash}

        def ahead(current: dict[str, Any]) -> bool:
            last = as_utc(current["LastHour"])
            return last < as_utc(hour) or (
                last == as_utc(hour) and current.get("BookHash") != book_hash
            )

        self._raise(RATED, wanted, ahead)

    def record_finalised(self, month: Month) -> None:
        """Raise the finalised mark to ``month``."""
        wanted = {"LastMonth": str(month), "LastHour": month.last_hour}

        def ahead(current: dict[str, Any]) -> bool:
            found = Month.parse(current["LastMonth"])
            return found is None or found < month

        self._raise(FINALISED, wanted, ahead)

    def _raise(self, row_key: str, values: dict[str, Any], ahead: Any) -> None:
        table = self._account.table(ROLE)
        entity = {"PartitionKey": PARTITION, "RowKey": row_key, **values}

        def write() -> None:
            while True:
                try:
                    current = table.get_entity(PARTITION, row_key)
                except ResourceNotFoundError:
                    try:
                        table.create_entity(entity)
                        return
                    except ResourceExistsError:
                        continue
                if not ahead(current):
                    return
                try:
                    table.update_entity(entity, etag=current.metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)  # fmt: skip
                    return
                except ResourceModifiedError:
                    continue

        call_with_retry(write, what=f"record rating mark {row_key}")
