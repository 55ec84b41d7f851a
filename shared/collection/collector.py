"""Collection: every reported hour the source has finished, after the watermark, oldest
first, written once.

For each reported hour ``collect_hour``:

1. records that an attempt at the hour begins (a rerun of a failed attempt knows it is one),
   then syncs the subscriptions the source lists for the hour;
2. streams the hour's records, one subscription at a time (sources group them), validates
   each, quarantines what is bad, sums records with the same identity, and queues the
   subscription's partition for a parallel, transactional upsert. A source that yields a
   subscription in two groups does not stop the hour: the later group is merged into the
   stored partition once the first is durable (same identities summed);
3. waits until every partition is durable; rows storage still refuses are quarantined
   (``StorageRefused``), so one poison row never blocks the hour; on a rerun, removes what
   an earlier attempt stored that the source no longer reports (rows, quarantine entries,
   manifest entries, the day's daily rows), so the hour holds exactly the current answer;
4. writes the hour manifest, the hour's chargeable sums per (billing resource, dimension)
   that billing reads, and the activity index (which of each provider's tenants had rows
   that day), and when the hour closes a UTC day, that day's daily rows;
5. moves the watermark to the hour: only now (invariant 2).

Any failure on the way leaves the watermark where it was, and the next run redoes the hour
from the start; since every write is an idempotent upsert of keys derived from the record
and stale keys are removed, the result equals that of a clean run (invariant 1). A reported
hour is collected only once the source has finished it (it ended ``COLLECT_DELAY_HOURS``
ago), so a closed hour is never rewritten with different data (invariant 3).

``collect_due_hours`` runs hours until none is left or the time budget would be exceeded
by one more hour (judged from the slowest hour so far); the next run carries on. When the
watermark does not move as expected (another run got there first, or an operator moved it
back), the run acts on what it finds instead of collecting hours nobody will count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby

from azure.core.exceptions import ResourceNotFoundError

from shared.collection.daily import build_daily_rows
from shared.collection.sources import UsageSource
from shared.collection.validation import validate
from shared.core.config import Settings
from shared.core.hours import HOUR, floor_day, hour_key, hours_between, last_closed_hour
from shared.core.meters import ChargeableMeters, MeterCatalogue, catalogue
from shared.core.retry import call_with_retry
from shared.core.usage import UsageRecord
from shared.storage.account import StorageAccount
from shared.storage.activity import record_activity
from shared.storage.hour_manifest import ROLE as MANIFEST_ROLE
from shared.storage.hour_manifest import HourEntry, read_hour, write_manifest
from shared.storage.hour_summary import HourSummaryBuilder, write_hour_summary
from shared.storage.quarantine import ROLE as QUARANTINE_ROLE
from shared.storage.quarantine import QuarantineBuffer, Rejection
from shared.storage.subscriptions import Subscription, SubscriptionStore, billing_target
from shared.storage.table_writer import PartitionWriter, Refusal, delete_keys
from shared.storage.usage_rows import (
    UsageRow,
    daily_partition,
    hourly_partition,
    hourly_row_key,
    usage_table_name,
)
from shared.storage.watermark import Advance, Watermark

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
    # Rows stored with part of their tags/additionalInfo cut to fit storage.
    truncated: int = 0
    # Rows an earlier attempt of this hour stored that the source no longer reports, removed.
    stale_removed: int = 0
    watermark: Advance = Advance.MOVED


@dataclass
class CollectionRun:
    hours: list[HourResult] = field(default_factory=list)
    pending_hours: int = 0
    stopped_by_budget: bool = False
    # The watermark was found behind an hour this run had just written: hours are missing.
    stopped_by_watermark: bool = False
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
        behind = ", stopped: watermark behind" if self.stopped_by_watermark else ""
        return (
            f"collect_usage: {len(self.hours)} hours collected{span}, {self.rows} rows, "
            f"{self.quarantined} quarantined, {self.pending_hours} hours pending{budget}{behind}, "
            f"{self.seconds:.1f}s"
        )


@dataclass
class _Partition:
    """What the hour wrote for one subscription: RowKey -> whether the row is late."""

    keys: dict[str, bool] = field(default_factory=dict)
    # RowKeys stored with part of their instance data cut (fit_instance_data).
    cut: set[str] = field(default_factory=set)
    # Rows of later groups of the same subscription, merged once the first group is durable.
    later: dict[str, UsageRow] = field(default_factory=dict)
    # RowKey -> (dimension, quantity) of each stored chargeable row: the hour summary's input.
    charges: dict[str, tuple[str, float]] = field(default_factory=dict)


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
    _chargeable: ChargeableMeters = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._chargeable = ChargeableMeters(self.settings, self.meters)

    def collect_hour(self, hour: datetime) -> HourResult:
        """Collect one reported hour completely, then move the watermark to it."""
        started = time.monotonic()
        watermark = Watermark(self.account, self.source.name)
        rerun = watermark.begin(hour)
        store = SubscriptionStore(self.account)
        if self._stored_subscriptions is None or self._indexed_subscriptions is None:
            self._stored_subscriptions = store.all()
            self._indexed_subscriptions = store.indexed()
        listed = self.source.subscriptions(hour)
        store.sync(listed, self._stored_subscriptions, self._indexed_subscriptions)
        known = {subscription.subscription_id.lower() for subscription in listed}

        quarantine = QuarantineBuffer(self.account, hour)
        partitions = self._write_rows(hour, known, quarantine)
        truncated = sum(
            len(partition.cut & partition.keys.keys()) for partition in partitions.values()
        )
        stale = self._remove_stale(hour, partitions, quarantine) if rerun else 0
        quarantine.close()
        entries = [
            HourEntry(
                group,
                len(partition.keys),
                sum(partition.keys.values()),
                *self._target(group),
            )
            for group, partition in partitions.items()
            if partition.keys
        ]
        if rerun:
            self._remove_stale_manifest(hour, {entry.subscription_id for entry in entries})
        write_manifest(self.account, hour, entries)
        summary = HourSummaryBuilder()
        for group, partition in partitions.items():
            if partition.keys:
                target = billing_target(self.settings, self._stored_subscriptions.get(group))
                summary.add(target, partition.charges.values())
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
        moved = watermark.advance(hour)
        result = HourResult(
            hour=hour,
            rows=sum(entry.rows for entry in entries),
            subscriptions=len(entries),
            late_rows=sum(entry.late_rows for entry in entries),
            quarantined=quarantine.count,
            quarantined_by_reason=dict(quarantine.by_reason),
            daily_subscriptions=daily_subscriptions,
            seconds=time.monotonic() - started,
            truncated=truncated,
            stale_removed=stale,
            watermark=moved,
        )
        if result.quarantined:
            log.warning(
                "reported hour %s: %d records quarantined %s",
                f"{hour:%Y-%m-%dT%H}Z",
                result.quarantined,
                result.quarantined_by_reason,
            )
        if truncated:
            log.warning(
                "reported hour %s: %d rows stored with tags/additionalInfo cut to fit storage "
                "(see their InstanceDataTruncated)",
                f"{hour:%Y-%m-%dT%H}Z",
                truncated,
            )
        if stale:
            log.warning(
                "reported hour %s: rerun removed %d rows an earlier attempt stored that the "
                "source no longer reports",
                f"{hour:%Y-%m-%dT%H}Z",
                stale,
            )
        return result

    # --- rows --------------------------------------------------------------------------

    def _write_rows(
        self, hour: datetime, known: set[str], quarantine: QuarantineBuffer
    ) -> dict[str, _Partition]:
        """Stream the hour's records into their partitions; what each partition holds now."""
        partitions: dict[str, _Partition] = {}
        partition_key = hourly_partition(hour)
        with PartitionWriter(
            self.account, parallelism=self.settings.write_parallelism, isolate_refusals=True
        ) as writer:
            for group, records in groupby(self.source.usage(hour), key=_subscription_of):
                rows = self._valid_rows(hour, records, known, quarantine)
                if not rows:
                    continue
                seen = partitions.get(group)
                if seen is not None:
                    if not seen.later:
                        log.warning(
                            "source %s yielded subscription %s in two groups for reported "
                            "hour %s; merging the later group into the stored partition",
                            self.source.name,
                            group,
                            f"{hour:%Y-%m-%dT%H}Z",
                        )
                    _add_rows(seen.later, rows)
                    continue
                partitions[group] = _Partition(
                    keys={key: _late(row, hour) for key, row in rows.items()},
                    cut={key for key, row in rows.items() if row.instance_data_truncated},
                    charges=self._charges(rows),
                )
                writer.write_partition(
                    usage_table_name(self.settings.table_prefix, group),
                    [row.to_entity(partition_key, key) for key, row in rows.items()],
                )
        self._quarantine_refused(writer.refused, partitions, quarantine)
        for group, partition in partitions.items():
            if partition.later:
                self._merge_later_group(hour, group, partition, quarantine)
        return partitions

    def _merge_later_group(
        self, hour: datetime, group: str, partition: _Partition, quarantine: QuarantineBuffer
    ) -> None:
        """Sum a later group of ``group`` into what its first group stored, and write it.

        Only rows this attempt wrote are read back as the base (a row an earlier attempt left
        is not this hour's answer), so merging is as idempotent as the first write.
        """
        table_name = usage_table_name(self.settings.table_prefix, group)
        partition_key = hourly_partition(hour)

        def read() -> dict[str, UsageRow]:
            entities = self.account.table_named(table_name).query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition_key}
            )
            return {
                entity["RowKey"]: UsageRow.from_entity(entity)
                for entity in entities
                if entity["RowKey"] in partition.keys
            }

        stored = call_with_retry(read, what=f"read back {table_name} partition {partition_key}")
        merged = dict(stored)
        _add_rows(merged, partition.later)
        changed = {key: merged[key] for key in partition.later}
        with PartitionWriter(self.account, parallelism=1, isolate_refusals=True) as writer:
            writer.write_partition(
                table_name, [row.to_entity(partition_key, key) for key, row in changed.items()]
            )
        partition.keys.update({key: _late(row, hour) for key, row in changed.items()})
        partition.charges.update(self._charges(changed))
        partition.cut.update(key for key, row in changed.items() if row.instance_data_truncated)
        partition.later = {}
        self._quarantine_refused(writer.refused, {group: partition}, quarantine)

    def _charges(self, rows: dict[str, UsageRow]) -> dict[str, tuple[str, float]]:
        """RowKey -> (dimension, quantity) of the chargeable ones of ``rows``."""
        found = {}
        for key, row in rows.items():
            dimension = self._chargeable.dimension_of(row.meter_id)
            if dimension is not None:
                found[key] = (dimension, row.quantity)
        return found

    def _quarantine_refused(
        self,
        refused: Iterable[Refusal],
        partitions: dict[str, _Partition],
        quarantine: QuarantineBuffer,
    ) -> None:
        """Rows storage would not take go to the quarantine and leave their partition."""
        for refusal in refused:
            row = UsageRow.from_entity(refusal.entity)
            partition = partitions.get(row.subscription_id)
            if partition is not None:
                partition.keys.pop(refusal.entity["RowKey"], None)
                partition.charges.pop(refusal.entity["RowKey"], None)
            quarantine.add(
                row.as_record(),
                Rejection("StorageRefused", f"HTTP {refusal.status} {refusal.code}"[:500]),
            )

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
            _add_rows(rows, {key: verdict})
        return rows

    def _target(self, group: str) -> tuple[str, str]:
        assert self._stored_subscriptions is not None  # read at the start of the hour
        target = billing_target(self.settings, self._stored_subscriptions.get(group))
        return target.resource_id, target.plan_id

    # --- reruns ------------------------------------------------------------------------

    def _remove_stale(
        self, hour: datetime, partitions: dict[str, _Partition], quarantine: QuarantineBuffer
    ) -> int:
        """Remove what an earlier attempt of ``hour`` stored that this one did not write.

        Any stored subscription may hold rows of that attempt (rows are only written for
        listed subscriptions, and the subscriptions table keeps every one ever listed), so
        each one's partition of the hour is read (keys only) and what this attempt did not
        write is deleted. When the hour closes a day, that day's daily rows are removed too:
        the rollup that follows rebuilds them from what the hours now hold. Returns the
        number of hourly rows removed.
        """
        assert self._stored_subscriptions is not None
        subscriptions = sorted(set(self._stored_subscriptions) | set(partitions))
        partition_key = hourly_partition(hour)
        closes_day = (hour + HOUR).hour == 0
        day_partition = daily_partition(floor_day(hour))

        def clean(subscription_id: str) -> int:
            table_name = usage_table_name(self.settings.table_prefix, subscription_id)
            kept = partitions.get(subscription_id, _Partition()).keys
            stale = [key for key in _row_keys(self.account, table_name, partition_key)
                     if key not in kept]  # fmt: skip
            removed = delete_keys(self.account, table_name, partition_key, stale)
            if closes_day:
                daily = _row_keys(self.account, table_name, day_partition)
                delete_keys(self.account, table_name, day_partition, daily)
            return removed

        with ThreadPoolExecutor(
            max_workers=self.settings.write_parallelism, thread_name_prefix="stale"
        ) as workers:
            removed = sum(workers.map(clean, subscriptions))
        quarantine_table = self.settings.table_name(QUARANTINE_ROLE)
        recorded = _row_keys(self.account, quarantine_table, hour_key(hour))
        delete_keys(
            self.account,
            quarantine_table,
            hour_key(hour),
            (key for key in recorded if key not in quarantine.keys),
        )
        return removed

    def _remove_stale_manifest(self, hour: datetime, subscriptions: set[str]) -> None:
        """Manifest entries of an earlier attempt for subscriptions without rows now."""
        stale = {entry.subscription_id for entry in read_hour(self.account, hour)} - subscriptions
        delete_keys(self.account, self.settings.table_name(MANIFEST_ROLE), hour_key(hour), stale)

    # --- which hours -------------------------------------------------------------------

    def last_finished_hour(self, now: datetime) -> datetime:
        """The newest reported hour the source has finished at ``now``: it ended
        ``collect_delay_hours`` ago (the stamp's usage service aggregates after the hour)."""
        return last_closed_hour(now) - self.settings.collect_delay_hours * HOUR

    def due_hours(self, now: datetime) -> list[datetime]:
        """Finished reported hours after the watermark, oldest first.

        Without a watermark (the first run) collection starts ``collect_lookback_hours``
        back, and that starting point is stored at once (``Watermark.start_at``).
        """
        last = self.last_finished_hour(now)
        watermark = Watermark(self.account, self.source.name)
        mark = watermark.read()
        if mark is None:
            mark = watermark.start_at(last - self.settings.collect_lookback_hours * HOUR)
        return list(hours_between(mark + HOUR, last))

    def collect_due_hours(self, now: datetime) -> CollectionRun:
        """Collect due hours oldest first, within the settings' time budget.

        After each hour the watermark is checked: if another run moved it past hours this
        run still meant to collect, those are skipped; if it is behind the hour just written
        (moved back by an operator, or an hour is missing), the run stops, and the next one
        starts from the watermark.
        """
        started = time.monotonic()
        budget = self.settings.collect_time_budget_seconds
        self.account.ensure_tables()
        due = self.due_hours(now)
        run = CollectionRun(pending_hours=len(due))
        slowest = 0.0
        skip_through: datetime | None = None
        for hour in due:
            if skip_through is not None and hour <= skip_through:
                run.pending_hours -= 1
                continue
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
            if result.watermark is Advance.COVERED:
                skip_through = Watermark(self.account, self.source.name).read()
                log.warning(
                    "reported hour %s: another run already moved the watermark to %s; "
                    "hours up to it are not collected again",
                    f"{hour:%Y-%m-%dT%H}Z",
                    f"{skip_through:%Y-%m-%dT%H}Z" if skip_through else "?",
                )
            elif result.watermark is Advance.GAP:
                mark = Watermark(self.account, self.source.name).read()
                log.error(
                    "reported hour %s was written but the watermark is at %s, more than an "
                    "hour behind it; stopping: the next run collects from the watermark",
                    f"{hour:%Y-%m-%dT%H}Z",
                    f"{mark:%Y-%m-%dT%H}Z" if mark else "none",
                )
                run.stopped_by_watermark = True
                break
        run.seconds = time.monotonic() - started
        return run


def _provider_of(subscription: Subscription | None) -> str | None:
    return None if subscription is None else subscription.provider_subscription_id


def _late(row: UsageRow, hour: datetime) -> bool:
    return row.usage_start < hour


def _add_rows(into: dict[str, UsageRow], rows: dict[str, UsageRow]) -> None:
    """Add ``rows`` to ``into`` by RowKey: quantities of the same identity summed, the
    newer record's instance data kept."""
    for key, row in rows.items():
        previous = into.get(key)
        into[key] = (
            row if previous is None else replace(row, quantity=previous.quantity + row.quantity)
        )


def _row_keys(account: StorageAccount, table_name: str, partition_key: str) -> list[str]:
    """The RowKeys of one partition (none if the table does not exist)."""

    def query() -> list[str]:
        entities = account.table_named(table_name).query_entities(
            "PartitionKey eq @pk", parameters={"pk": partition_key}, select=["RowKey"]
        )
        try:
            return [entity["RowKey"] for entity in entities]
        except ResourceNotFoundError:
            return []

    return call_with_retry(query, what=f"read keys of {table_name} partition {partition_key}")


def _subscription_of(record: UsageRecord) -> str:
    subscription_id = record.subscription_id
    return subscription_id.lower() if isinstance(subscription_id, str) else repr(subscription_id)
