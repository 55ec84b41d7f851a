"""Collection: every closed reported hour after the watermark, oldest first, written once.

For each reported hour ``collect_hour``:

1. syncs the subscriptions the source lists for the hour;
2. streams the hour's records, one subscription at a time (sources group them), validates
   each, quarantines what is bad, sums records with the same identity, and queues the
   subscription's partition for a parallel, transactional upsert;
3. waits until every partition is durable, then writes the hour manifest, the hour's
   chargeable sums per (billing resource, dimension) that billing reads, and the activity
   index (which of each provider's tenants had rows that day), and when the hour closes a
   UTC day, that day's daily rows;
4. moves the watermark to the hour: only now (invariant 2).

Any failure on the way leaves the watermark where it was, and the next run redoes the hour
from the start; since every write is an idempotent upsert of keys derived from the record,
the result equals that of a clean run (invariant 1). A reported hour is only collected
once it has ended, so a closed hour is never rewritten with different data (invariant 3).

``collect_due_hours`` runs hours until none is left or the time budget would be exceeded
by one more hour (judged from the slowest hour so far); the next run carries on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby

from shared.collection.daily import build_daily_rows
from shared.collection.sources import UsageSource
from shared.collection.validation import validate
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import HOUR, floor_day, hours_between, last_closed_hour
from shared.core.meters import ChargeableMeters, MeterCatalogue, catalogue
from shared.core.usage import UsageRecord
from shared.storage.account import StorageAccount
from shared.storage.activity import record_activity
from shared.storage.hour_manifest import HourEntry, write_manifest
from shared.storage.hour_summary import HourSummaryBuilder, write_hour_summary
from shared.storage.quarantine import QuarantineBuffer, Rejection
from shared.storage.subscriptions import Subscription, SubscriptionStore, billing_target
from shared.storage.table_writer import PartitionWriter
from shared.storage.usage_rows import (
    UsageRow,
    hourly_partition,
    hourly_row_key,
    usage_table_name,
)
from shared.storage.watermark import Watermark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HourResult:
    hour: datetime
    rows: int
    subscriptions: int
    late_rows: int
    quarantined: int
    quarantined_by_reason: dict[str, int]
    daily_subscriptions: int
    seconds: float


@dataclass
class CollectionRun:
    hours: list[HourResult] = field(default_factory=list)
    pending_hours: int = 0
    stopped_by_budget: bool = False
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(hour.rows for hour in self.hours)

    @property
    def quarantined(self) -> int:
        return sum(hour.quarantined for hour in self.hours)

    def summary_line(self) -> str:
        """The one line a run's log ends with."""
        span = (
            f" ({self.hours[0].hour:%Y-%m-%dT%H}..{self.hours[-1].hour:%Y-%m-%dT%H}Z)"
            if self.hours
            else ""
        )
        budget = ", stopped by time budget" if self.stopped_by_budget else ""
        return (
            f"collect_usage: {len(self.hours)} hours collected{span}, {self.rows} rows, "
            f"{self.quarantined} quarantined, {self.pending_hours} hours pending{budget}, "
            f"{self.seconds:.1f}s"
        )


@dataclass
class Collector:
    """Everything one run needs, built once: storage, source, catalogue, known subscriptions."""

    settings: Settings
    account: StorageAccount
    source: UsageSource
    meters: MeterCatalogue = field(default_factory=catalogue)
    # Called once an hour's rows are durable and before the watermark moves (billing work).
    after_hour_written: Callable[[datetime, list[HourEntry]], None] | None = None
    _stored_subscriptions: dict[str, Subscription] | None = field(
        default=None, init=False, repr=False
    )
    _indexed_subscriptions: dict[str, str] | None = field(default=None, init=False, repr=False)

    def collect_hour(self, hour: datetime) -> HourResult:
        """Collect one reported hour completely, then move the watermark to it."""
        started = time.monotonic()
        store = SubscriptionStore(self.account)
        if self._stored_subscriptions is None or self._indexed_subscriptions is None:
            self._stored_subscriptions = store.all()
            self._indexed_subscriptions = store.indexed()
        listed = self.source.subscriptions(hour)
        store.sync(listed, self._stored_subscriptions, self._indexed_subscriptions)
        known = {subscription.subscription_id.lower() for subscription in listed}

        quarantine = QuarantineBuffer(self.account, hour)
        summary = HourSummaryBuilder(ChargeableMeters(self.settings, self.meters))
        entries: list[HourEntry] = []
        written: set[str] = set()
        partition = hourly_partition(hour)
        with PartitionWriter(self.account, parallelism=self.settings.write_parallelism) as writer:
            for group, records in groupby(self.source.usage(hour), key=_subscription_of):
                rows = self._valid_rows(hour, records, known, quarantine)
                if not rows:
                    continue
                if group in written:
                    raise BadInputError(
                        f"source {self.source.name} yielded subscription {group} in two "
                        f"groups for reported hour {hour:%Y-%m-%dT%H}Z; sources must group "
                        "records by subscription",
                        code="SourceNotGrouped",
                    )
                written.add(group)
                writer.write_partition(
                    usage_table_name(self.settings.table_prefix, group),
                    [row.to_entity(partition, key) for key, row in rows.items()],
                )
                late = sum(1 for row in rows.values() if row.usage_start < hour)
                target = billing_target(self.settings, self._stored_subscriptions.get(group))
                summary.add(target, rows.values())
                entries.append(
                    HourEntry(group, len(rows), late, target.resource_id, target.plan_id)
                )
        quarantine.close()
        write_manifest(self.account, hour, entries)
        write_hour_summary(self.account, hour, summary.sums())
        stored = self._stored_subscriptions
        record_activity(
            self.account,
            hour,
            (
                (entry.subscription_id, _provider_of(stored.get(entry.subscription_id)))
                for entry in entries
            ),
        )
        daily_subscriptions = 0
        if (hour + HOUR).hour == 0:
            daily_subscriptions = build_daily_rows(
                self.account, floor_day(hour), parallelism=self.settings.write_parallelism
            )
        if self.after_hour_written is not None:
            self.after_hour_written(hour, entries)
        Watermark(self.account, self.source.name).advance(hour)
        result = HourResult(
            hour=hour,
            rows=sum(entry.rows for entry in entries),
            subscriptions=len(entries),
            late_rows=sum(entry.late_rows for entry in entries),
            quarantined=quarantine.count,
            quarantined_by_reason=dict(quarantine.by_reason),
            daily_subscriptions=daily_subscriptions,
            seconds=time.monotonic() - started,
        )
        if result.quarantined:
            log.warning(
                "reported hour %s: %d records quarantined %s",
                f"{hour:%Y-%m-%dT%H}Z",
                result.quarantined,
                result.quarantined_by_reason,
            )
        return result

    def _valid_rows(
        self,
        hour: datetime,
        records: Iterator[UsageRecord],
        known: set[str],
        quarantine: QuarantineBuffer,
    ) -> dict[str, UsageRow]:
        """One subscription's storable rows by RowKey; records of the same identity summed."""
        rows: dict[str, UsageRow] = {}
        for record in records:
            verdict = validate(record, hour, self.meters, known)
            if isinstance(verdict, Rejection):
                quarantine.add(record, verdict)
                continue
            key = hourly_row_key(
                verdict.usage_start, verdict.meter_id.lower(), verdict.resource_uri
            )
            previous = rows.get(key)
            rows[key] = (
                verdict
                if previous is None
                else replace(verdict, quantity=previous.quantity + verdict.quantity)
            )
        return rows

    def due_hours(self, now: datetime) -> list[datetime]:
        """Closed reported hours after the watermark, oldest first.

        Without a watermark (the first run) collection starts ``collect_lookback_hours``
        back, and that starting point is stored at once (``Watermark.start_at``).
        """
        last = last_closed_hour(now)
        watermark = Watermark(self.account, self.source.name)
        mark = watermark.read()
        if mark is None:
            mark = watermark.start_at(last - self.settings.collect_lookback_hours * HOUR)
        return list(hours_between(mark + HOUR, last))

    def collect_due_hours(self, now: datetime) -> CollectionRun:
        """Collect due hours oldest first, within the settings' time budget."""
        started = time.monotonic()
        budget = self.settings.collect_time_budget_seconds
        self.account.ensure_tables()
        due = self.due_hours(now)
        run = CollectionRun(pending_hours=len(due))
        slowest = 0.0
        for hour in due:
            elapsed = time.monotonic() - started
            if run.hours and elapsed + slowest > budget:
                run.stopped_by_budget = True
                break
            result = self.collect_hour(hour)
            slowest = max(slowest, result.seconds)
            run.hours.append(result)
            run.pending_hours -= 1
            log.info(
                "reported hour %s: %d rows, %d subscriptions, %d late, %d quarantined, %.2fs",
                f"{hour:%Y-%m-%dT%H}Z",
                result.rows,
                result.subscriptions,
                result.late_rows,
                result.quarantined,
                result.seconds,
            )
        run.seconds = time.monotonic() - started
        return run


def _provider_of(subscription: Subscription | None) -> str | None:
    return None if subscription is None else subscription.provider_subscription_id


def _subscription_of(record: UsageRecord) -> str:
    subscription_id = record.subscription_id
    return subscription_id.lower() if isinstance(subscription_id, str) else repr(subscription_id)
