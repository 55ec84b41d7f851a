"""The collection watermark: the last reported hour fully written, per usage source.

"Fully written" means the hour's rows, manifest, daily rows (when the hour closes a day)
and billing work items are durable. The watermark is moved only after that, only forward,
and only to the hour right after it: re-collecting a later hour (an operator's backfill)
never jumps it over an hour that is still missing. Updates are guarded by the entity's
ETag, so two runs racing cannot move it back; :meth:`Watermark.advance` says what happened
(:class:`Advance`) and the collector acts on it.

An hour is collected in parts (slices of the source's subscriptions, one work item each,
possibly on several instances at once). Beside the watermark, one small entity per part
records that an attempt began (:meth:`Watermark.begin`): a rerun of an unfinished part knows
that an earlier attempt may have left rows the source no longer reports, and removes them.
Another records that the part is durable (:meth:`Watermark.mark_done`); the hour is finished
when every part of it is (:meth:`Watermark.finished`), and only then may the watermark move.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.core.hours import HOUR, as_utc, hour_key
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount

log = logging.getLogger(__name__)

ROLE = "state"
PARTITION = "watermark"
# One entity per (source, reported hour, part) whose collection began, and one per part
# that is durable: RowKey "{source}_{hour}_{part}".
ATTEMPTS_PARTITION = "attempt"
DONE_PARTITION = "done"


class Advance(StrEnum):
    """What :meth:`Watermark.advance` did."""

    MOVED = "moved"  # the watermark is now the hour
    COVERED = "covered"  # it already was at or after the hour (another run got there first)
    GAP = "gap"  # it is more than an hour behind: an hour in between is not written


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

    def begin(self, hour: datetime, part: str) -> bool:
        """Record that collecting ``part`` of ``hour`` begins; True if an earlier attempt had
        begun it and the hour is still unfinished (after the watermark, or no watermark yet).

        Called before any row of the hour is written, so a rerun of a failed attempt always
        knows it is one. Re-collecting an hour the watermark has passed (a backfill) is not
        a rerun: the hour was complete.
        """
        table = self._account.table(ROLE)
        entity = {
            "PartitionKey": ATTEMPTS_PARTITION,
            "RowKey": self._part_key(hour, part),
            "Hour": as_utc(hour),
        }

        def create() -> bool:
            try:
                table.create_entity(entity)
                return False
            except ResourceExistsError:
                return True

        earlier = call_with_retry(create, what="record collection attempt")
        if not earlier:
            return False
        mark = self.read()
        return mark is None or mark < as_utc(hour)

    def mark_done(self, hour: datetime, part: str) -> None:
        """Record that ``part`` of ``hour`` is durable (after everything it writes)."""
        entity = {"PartitionKey": DONE_PARTITION, "RowKey": self._part_key(hour, part),
                  "Hour": as_utc(hour)}  # fmt: skip
        table = self._account.table(ROLE)
        call_with_retry(lambda: table.upsert_entity(entity), what="record a collected part")

    def done_parts(self, hour: datetime) -> set[str]:
        """The parts of ``hour`` recorded durable (one small range read)."""
        prefix = f"{self._row_key}_{hour_key(hour)}_"

        def query() -> set[str]:
            entities = self._account.table(ROLE).query_entities(
                "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                parameters={"pk": DONE_PARTITION, "low": prefix, "high": prefix[:-1] + "`"},
                select=["RowKey"],
            )
            return {entity["RowKey"].removeprefix(prefix) for entity in entities}

        return call_with_retry(query, what="read collected parts")

    def finished(self, hour: datetime, parts: Iterable[str], done: set[str] | None = None) -> bool:
        """True when every one of ``parts`` is durable or the watermark has passed ``hour``
        (``done``: the durable parts when the caller has just read them)."""
        if set(parts) <= (self.done_parts(hour) if done is None else done):
            return True
        mark = self.read()
        return mark is not None and mark >= as_utc(hour)

    def _part_key(self, hour: datetime, part: str) -> str:
        return f"{self._row_key}_{hour_key(hour)}_{part}"

    def advance(self, hour: datetime) -> Advance:
        """Record ``hour`` as fully written if it extends the watermark; say what happened.

        Nothing moves when ``hour`` is at or behind the watermark (``COVERED``) or more than
        one hour ahead of it (``GAP``: an hour in between is not written yet). A write that
        loses the ETag race to another run is logged and decided again on what that run wrote.
        """
        table = self._account.table(ROLE)
        entity = {"PartitionKey": PARTITION, "RowKey": self._row_key, "LastHour": as_utc(hour)}

        def move() -> Advance:
            while True:
                try:
                    current = table.get_entity(PARTITION, self._row_key)
                except ResourceNotFoundError:
                    try:
                        table.create_entity(entity)
                        return Advance.MOVED
                    except ResourceExistsError:
                        log.info("watermark %s was created by another run; comparing again",
                                 self._row_key)  # fmt: skip
                        continue
                last = as_utc(current["LastHour"])
                if last >= hour:
                    return Advance.COVERED
                if last + HOUR < hour:
                    return Advance.GAP
                try:
                    table.update_entity(
                        entity,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return Advance.MOVED
                except ResourceModifiedError:
                    log.info(
                        "watermark %s changed while moving it to %s (another run); comparing again",
                        self._row_key,
                        f"{hour:%Y-%m-%dT%H}Z",
                    )
                    continue

        return call_with_retry(move, what="advance watermark")


def collected_through(account: StorageAccount, source_names: Iterable[str]) -> datetime | None:
    """The last reported hour every one of the sources has fully written: the lowest of their
    watermarks (None while any has none). What the app may call complete: the usage API's
    visible bound, statements and exports wait for it."""
    marks = [Watermark(account, name).read() for name in source_names]
    if not marks or any(mark is None for mark in marks):
        return None
    return min(mark for mark in marks if mark is not None)


# The newest reported hour whose billing was enqueued (every source had it), RowKey of the
# watermark partition: a source added to a running app starts no earlier.
BILLED_THROUGH = "~billed"


def billed_through(account: StorageAccount) -> datetime | None:
    """The newest reported hour billing has been enqueued for, or None."""
    return Watermark(account, BILLED_THROUGH).read()


def record_billed(account: StorageAccount, hour: datetime) -> None:
    """Raise ``billed_through`` to ``hour`` (never lower it; ETag-guarded)."""
    table = account.table(ROLE)
    entity = {"PartitionKey": PARTITION, "RowKey": BILLED_THROUGH, "LastHour": as_utc(hour)}

    def raise_mark() -> None:
        while True:
            try:
                current = table.get_entity(PARTITION, BILLED_THROUGH)
            except ResourceNotFoundError:
                try:
                    table.create_entity(entity)
                    return
                except ResourceExistsError:
                    continue
            if as_utc(current["LastHour"]) >= as_utc(hour):
                return
            try:
                table.update_entity(entity, etag=current.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)  # fmt: skip
                return
            except ResourceModifiedError:
                continue

    call_with_retry(raise_mark, what="record the hour billed through")
