"""Closing a source's reported hour once every part of it is durable.

Parts of an hour (slices, ``shared.collection.slices``) finish in any order, on any
instance. Whichever part finds its hour finished closes it (a repeat is harmless; every
step is idempotent):

1. **Billing**, once EVERY source (stamp) has the hour: an event's quantity is the sum over
   every subscription billed to its resource in the hour, wherever they run, so an hour is
   never billed from part of the fleet. The hour summary is marked complete with every
   source's parts, then billing work is enqueued (``on_hour_complete``). The source that
   finishes the hour last does this; a source that stays down holds the hour's billing back
   (its usage waits and is carried forward, never lost) until it catches up or is removed
   from ``USAGE_STAMPS``. The newest hour billed is recorded (``billed_through``): a source
   added to a running app starts collecting there, never in hours already billed without it.
2. **The watermark**: moved to the hour only from the hour before it (``Watermark.advance``),
   then on over later hours already finished (their parts finished first and found the hour
   before them open). When the watermark passes a UTC day's last hour, the source's daily
   rows of that day are built first: every hour of the day is durable by then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.collection.daily import build_daily_rows
from shared.collection.slices import part_names, summary_part
from shared.core.hours import HOUR, floor_day
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import HourEntry, read_hour
from shared.storage.hour_summary import complete_hour_summary
from shared.storage.watermark import Advance, Watermark, record_billed

log = logging.getLogger(__name__)

HourComplete = Callable[[datetime, list[HourEntry]], None]


@dataclass(frozen=True, slots=True)
class SourceParts:
    """A usage source's name (its watermark's key) and how many parts its hours have."""

    name: str
    slices: int


@dataclass
class HourCloser:
    """Closes the hours of ``source``; ``every_source`` lists the app's sources (this one
    included), whose hours billing waits for."""

    source: SourceParts
    account: StorageAccount
    every_source: Sequence[SourceParts]
    write_parallelism: int
    on_hour_complete: HourComplete | None = None
    # Subscriptions whose daily rows the last ``close`` built (days it closed).
    daily_subscriptions: int = 0

    def close(self, hour: datetime) -> Advance | None:
        """Close ``hour`` if every part of it is durable; None while parts are missing."""
        self.daily_subscriptions = 0
        watermark = Watermark(self.account, self.source.name)
        done = watermark.done_parts(hour)
        if not watermark.finished(hour, part_names(self.source.slices), done):
            return None
        self._bill_when_every_source_has(hour, done)
        return self._advance(hour)

    def _bill_when_every_source_has(self, hour: datetime, done_here: set[str]) -> None:
        """``done_here``: this source's durable parts of ``hour``, just read."""
        parts: list[str] = []
        summarised = True
        for source in self.every_source:
            watermark = Watermark(self.account, source.name)
            expected = part_names(source.slices)
            done = done_here if source == self.source else watermark.done_parts(hour)
            if set(expected) <= done:
                parts += [summary_part(source.name, part) for part in expected]
                continue
            mark = watermark.read()
            if mark is not None and mark >= hour:
                # Collected before its parts were recorded (or cut differently since): its
                # sums are in its rows only, so billing reads the rows for this hour.
                summarised = False
                continue
            log.info(
                "reported hour %s: source %s has not finished it; billing waits for it",
                f"{hour:%Y-%m-%dT%H}Z",
                source.name,
            )
            return
        if summarised:
            complete_hour_summary(self.account, hour, parts)
        if self.on_hour_complete is not None:
            self.on_hour_complete(hour, read_hour(self.account, hour))
        record_billed(self.account, hour)

    def _advance(self, hour: datetime) -> Advance:
        watermark = Watermark(self.account, self.source.name)
        outcome = self._advance_one(watermark, hour)
        if outcome is not Advance.MOVED:
            return outcome
        later = hour + HOUR
        # The watermark is at ``hour`` now (or beyond it, moved by another run, which then
        # moves it on itself): a later hour is finished here only if its parts are all done.
        expected = set(part_names(self.source.slices))
        while (
            expected <= watermark.done_parts(later)
            and self._advance_one(watermark, later) is Advance.MOVED
        ):
            log.info("watermark %s moved on to %s, finished earlier",
                     self.source.name, f"{later:%Y-%m-%dT%H}Z")  # fmt: skip
            later += HOUR
        return outcome

    def _advance_one(self, watermark: Watermark, hour: datetime) -> Advance:
        """Move the watermark to ``hour``; the day's daily rows first if it closes a day.

        The daily rows are rebuilt also when the watermark has passed the hour already (a
        backfill, or a repeated delivery whose rerun removed them): building is idempotent."""
        mark = watermark.read()
        if mark is not None and mark + HOUR < hour:
            return Advance.GAP
        if (hour + HOUR).hour == 0:
            self.daily_subscriptions += build_daily_rows(
                self.account,
                floor_day(hour),
                parallelism=self.write_parallelism,
                source=self.source.name,
            )
        if mark is not None and mark >= hour:
            return Advance.COVERED
        return watermark.advance(hour)
