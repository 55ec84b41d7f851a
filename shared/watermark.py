"""The collection watermark: the last reported hour fully written, per usage source.

"Fully written" means the hour's rows, manifest, daily rows (when the hour closes a day)
and billing work items are durable. The watermark is moved only after that, and only
forward: an update is guarded by the entity's ETag, so two runs racing cannot move it back.
"""

from __future__ import annotations

from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.hours import as_utc
from shared.retry import call_with_retry
from shared.storage import StorageAccount

ROLE = "state"
PARTITION = "watermark"


class Watermark:
    def __init__(self, account: StorageAccount, source_name: str):
        self._account = account
        self._row_key = source_name

    def read(self) -> datetime | None:
        """The last reported hour fully written, or None before the first run."""

        def get() -> datetime | None:
            try:
                entity = self._account.table(ROLE).get_entity(PARTITION, self._row_key)
            except ResourceNotFoundError:
                return None
            return as_utc(entity["LastHour"])

        return call_with_retry(get, what="read watermark")

    def advance(self, hour: datetime) -> None:
        """Record ``hour`` as fully written, unless a later hour already is."""
        table = self._account.table(ROLE)
        entity = {"PartitionKey": PARTITION, "RowKey": self._row_key, "LastHour": as_utc(hour)}

        def move() -> None:
            while True:
                try:
                    current = table.get_entity(PARTITION, self._row_key)
                except ResourceNotFoundError:
                    try:
                        table.create_entity(entity)
                        return
                    except ResourceExistsError:
                        continue  # created meanwhile: compare with it
                if as_utc(current["LastHour"]) >= hour:
                    return
                try:
                    table.update_entity(
                        entity,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return
                except ResourceModifiedError:
                    continue  # moved meanwhile: compare again

        call_with_retry(move, what="advance watermark")
