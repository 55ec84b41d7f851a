"""The collection watermark: the last reported hour fully written, per usage source.

"Fully written" means the hour's rows, manifest, daily rows (when the hour closes a day)
and billing work items are durable. The watermark is moved only after that, only forward,
and only to the hour right after it: re-collecting a later hour (an operator's backfill)
never jumps it over an hour that is still missing. Updates are guarded by the entity's
ETag, so two runs racing cannot move it back.
"""

from __future__ import annotations

from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.core.hours import HOUR, as_utc
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount

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

    def start_at(self, hour: datetime) -> datetime:
        """Where collection starts when there is no watermark yet: store ``hour`` (the hour
        before the first to collect) unless a watermark exists; return the stored value.

        Stored before the first hour is collected, so a first run that fails does not let
        the next run's look-back, an hour later, slide past the hour that failed.
        """
        table = self._account.table(ROLE)
        entity = {"PartitionKey": PARTITION, "RowKey": self._row_key, "LastHour": as_utc(hour)}

        def create() -> datetime:
            try:
                table.create_entity(entity)
                return as_utc(hour)
            except ResourceExistsError:
                return as_utc(table.get_entity(PARTITION, self._row_key)["LastHour"])

        return call_with_retry(create, what="start watermark")

    def advance(self, hour: datetime) -> bool:
        """Record ``hour`` as fully written if it extends the watermark; True if it moved.

        Nothing moves when ``hour`` is at or behind the watermark (already covered) or more
        than one hour ahead of it (an hour in between is not written yet).
        """
        table = self._account.table(ROLE)
        entity = {"PartitionKey": PARTITION, "RowKey": self._row_key, "LastHour": as_utc(hour)}

        def move() -> bool:
            while True:
                try:
                    current = table.get_entity(PARTITION, self._row_key)
                except ResourceNotFoundError:
                    try:
                        table.create_entity(entity)
                        return True
                    except ResourceExistsError:
                        continue  # created meanwhile: compare with it
                last = as_utc(current["LastHour"])
                if last >= hour or last + HOUR < hour:
                    return False
                try:
                    table.update_entity(
                        entity,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return True
                except ResourceModifiedError:
                    continue  # moved meanwhile: compare again

        return call_with_retry(move, what="advance watermark")
