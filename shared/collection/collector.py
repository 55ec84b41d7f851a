"""Collection: every reported hour the source has finished, after the watermark, written
once, in parts.

An hour of one source (stamp) is collected in slices of its subscriptions
(``shared.collection.slices``): on one process in order (``collect_due_hours``, the local
run and ``ops collect``) or fanned out through the collection queue, one slice per queue
message, on as many instances as the Functions scale controller gives (``planner``). Both
run the same ``collect_slice``:

1. records that an attempt at the part begins (a rerun of a failed attempt knows it is one),
   then syncs the slice's subscriptions the source lists for the hour;
2. streams the hour's records of the slice, one subscription at a time (sources group them),
   validates each, quarantines what is bad, sums records with the same identity, and queues
   the subscription's partition for a parallel, transactional upsert. A source that yields a
   subscription in two groups does not stop the hour: the later group is merged into the
   stored partition once the first is durable (same identities summed);
3. waits until every partition is durable; rows storage still refuses are quarantined
   (``StorageRefused``), so one poison row never blocks the hour; on a rerun, removes what
   an earlier attempt of the slice stored that the source no longer reports (rows,
   quarantine entries, manifest entries of the slice's subscriptions of this source), so the
   slice holds exactly the current answer;
4. writes the slice's manifest entries, its part of the hour's chargeable sums per (billing
   resource, dimension) that billing reads, and the activity index (which of each
   provider's tenants had rows that day), then records the part durable;
5. closes the hour if every part is now durable (``shared.collection.hour_close``): billing
   once every source has the hour, the day's daily rows when the hour closes a day, and
   the watermark: only now (invariant 2).

Any failure on the way leaves the part unrecorded and the watermark where it was, and the
next attempt redoes the part from the start; since every write is an idempotent upsert of
keys derived from the record and stale keys are removed, the result equals that of a clean
run (invariant 1), however many deliveries overlap. A reported hour is collected only once
the source has finished it (it ended ``COLLECT_DELAY_HOURS`` ago), so a closed hour is
never rewritten with different data (invariant 3).

``collect_due_hours`` runs hours until none is left or the time budget would be exceeded
by one more hour (judged from the slowest hour so far); the next run carries on. When the
watermark does not move as expected (another run got there first, or an operator moved it
back), the run acts on what it finds instead of collecting hours nobody will count.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby

from azure.core.exceptions import ResourceNotFoundError

from shared.collection.hour_close import HourCloser, SourceParts
from shared.collection.slices import CollectionSlice
from shared.collection.sources import UsageSource
from shared.collection.validation import validate
from shared.core.config import Settings
from shared.core.hours import HOUR, floor_day, hour_key, hours_between, last_closed_hour
from shared.core.meters import ChargeableMeters, MeterCatalogue, catalogue
from shared.core.retry import call_with_retry
from shared.core.usage import UsageRecord, subscription_key
from shared.storage.account import StorageAccount
from shared.storage.activity import record_activity
from shared.storage.hour_manifest import ROLE as MANIFEST_ROLE
from shared.storage.hour_manifest import HourEntry, read_hour, write_manifest
from shared.storage.hour_summary import HourSummaryBuilder, write_hour_summary
from shared.storage.quarantine import ROLE as QUARANTINE_ROLE
from shared.storage.quarantine import QuarantineBuffer, Rejection, read_quarantine
from shared.storage.subscriptions import Subscription, SubscriptionStore, billing_target
from shared.storage.table_writer import PartitionWriter, Refusal, delete_keys
from shared.storage.usage_rows import (
    UsageRow,
    daily_partition,
    hourly_partition,
    hourly_row_key,
    usage_table_name,
)
from shared.storage.watermark import Advance, Watermark, billed_through

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
    # What closing the hour did to the watermark; None while other parts are not durable.
    watermark: Advance | None = Advance.MOVED


@dataclass
class CollectionRun:
    hours: list[HourResult] = field(default_factory=list)
    pending_hours: int = 0
    stopped_by_budget: bool = False
    # The watermark was found behind an hour this run had just written: hours are missing.
    stopped_by_watermark: bool = False
    seconds: float = 0.0

    @classmethod
    def combined(cls, runs: list[CollectionRun]) -> CollectionRun:
        """One run's account of several sources' runs (each collected in turn)."""
        return cls(
            hours=[hour for run in runs for hour in run.hours],
            pending_hours=sum(run.pending_hours for run in runs),
            stopped_by_budget=any(run.stopped_by_budget for run in runs),
            stopped_by_watermark=any(run.stopped_by_watermark for run in runs),
            seconds=sum(run.seconds for run in runs),
        )

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

    settings: Settings  # the source's (a stamp's settings, when there are several)
    account: StorageAccount
    source: UsageSource
    meters: MeterCatalogue = field(default_factory=catalogue)
    # Called once every source's parts of an hour are durable and before the watermark of
    # the source that finished it last moves (billing work).
    after_hour_written: Callable[[datetime, list[HourEntry]], None] | None = None
    # Every source of the app (their settings: ``Settings.stamps()``), whose hours billing
    # waits for; this source alone when empty.
    stamps: tuple[Settings, ...] = ()
    # Per slice (index, count): its stored subscriptions and their index entries, read once
    # per collector (a run, or a message) and kept up to date by ``sync``.
    _known_by_slice: dict[tuple[int, int], tuple[dict[str, Subscription], dict[str, str]]] = field(
        default_factory=dict, init=False, repr=False
    )
    # The stored subscriptions of the slice being collected (one of the above).
    _stored_subscriptions: dict[str, Subscription] = field(
        default_factory=dict, init=False, repr=False
    )
    _chargeable: ChargeableMeters = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._chargeable = ChargeableMeters(self.settings, self.meters)

    @property
    def closer(self) -> HourCloser:
        """What closes this source's hours (built on use: ``after_hour_written`` may be
        set after the collector is)."""
        this = SourceParts(self.source_name, self.settings.collect_slices)
        every = [SourceParts(stamp.source_name, stamp.collect_slices) for stamp in self.stamps]
        return HourCloser(
            this,
            self.account,
            every or [this],
            self.settings.write_parallelism,
            on_hour_complete=self.after_hour_written,
        )

    @property
    def source_name(self) -> str:
        """The source's name: its watermark's key (the stamp's name when there are several;
        ``SourceRegistry.create`` names each source after its settings)."""
        return self.source.name

    def collect_hour(self, hour: datetime) -> HourResult:
        """Collect one reported hour completely, slice after slice, and close it."""
        count = self.settings.collect_slices
        parts = [
            self.collect_slice(CollectionSlice(self.source_name, hour, index, count))
            for index in range(count)
        ]
        return HourResult(
            hour=hour,
            rows=sum(part.rows for part in parts),
            subscriptions=sum(part.subscriptions for part in parts),
            late_rows=sum(part.late_rows for part in parts),
            quarantined=sum(part.quarantined for part in parts),
            quarantined_by_reason=dict(
                sum((Counter(part.quarantined_by_reason) for part in parts), Counter())
            ),
            daily_subscriptions=sum(part.daily_subscriptions for part in parts),
            seconds=sum(part.seconds for part in parts),
            truncated=sum(part.truncated for part in parts),
            stale_removed=sum(part.stale_removed for part in parts),
            watermark=parts[-1].watermark,
        )

    def collect_slice(self, work: CollectionSlice) -> HourResult:
        """Collect one slice of one reported hour completely; close the hour if it was the
        last part to become durable."""
        if work.source != self.source_name:
            raise ValueError(f"slice of source {work.source} given to {self.source_name}")
        started = time.monotonic()
        hour = work.hour
        watermark = Watermark(self.account, self.source_name)
        rerun = watermark.begin(hour, work.part)
        store = SubscriptionStore(self.account)
        # With several sources, only this one's subscriptions are read (and looked up one by
        # one when the source lists one the read did not return).
        mine = self.source_name if len(self.stamps) > 1 else None
        known = self._known_by_slice.get((work.index, work.count))
        if known is None:
            known = (store.all(work.key_range, source=mine), store.indexed(work.key_range))
            self._known_by_slice[(work.index, work.count)] = known
        self._stored_subscriptions, indexed = known
        listed = [replace(subscription, source=self.source_name)
                  for subscription in self.source.subscriptions(hour)]  # fmt: skip
        store.sync(
            [s for s in listed if work.holds(s.subscription_id.lower())],
            self._stored_subscriptions,
            indexed,
            complete=mine is None,
        )
        listed_ids = {subscription.subscription_id.lower() for subscription in listed}

        quarantine = QuarantineBuffer(self.account, hour, self.source_name)
        partitions = self._write_rows(work, listed_ids, quarantine)
        truncated = sum(
            len(partition.cut & partition.keys.keys()) for partition in partitions.values()
        )
        stale = self._remove_stale(work, partitions, quarantine) if rerun else 0
        quarantine.close()
        entries = [
            HourEntry(
                group,
                len(partition.keys),
                sum(partition.keys.values()),
                *self._target(group),
                source=self.source_name,
            )
            for group, partition in partitions.items()
            if partition.keys
        ]
        if rerun:
            self._remove_stale_manifest(work, {entry.subscription_id for entry in entries})
        write_manifest(self.account, hour, entries)
        summary = HourSummaryBuilder()
        for group, partition in partitions.items():
            if partition.keys:
                target = billing_target(self.settings, self._stored_subscriptions.get(group))
                summary.add(target, partition.charges.values())
        write_hour_summary(self.account, hour, work.summary_part, summary.sums())
        stored = self._stored_subscriptions
        record_activity(
            self.account,
            hour,
            (
                (entry.subscription_id, _provider_of(stored.get(entry.subscription_id)))
                for entry in entries
            ),
        )
        watermark.mark_done(hour, work.part)
        closer = self.closer
        moved = closer.close(hour)
        result = HourResult(
            hour=hour,
            rows=sum(entry.rows for entry in entries),
            subscriptions=len(entries),
            late_rows=sum(entry.late_rows for entry in entries),
            quarantined=quarantine.count,
            quarantined_by_reason=dict(quarantine.by_reason),
            daily_subscriptions=closer.daily_subscriptions,
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
        self, work: CollectionSlice, known: set[str], quarantine: QuarantineBuffer
    ) -> dict[str, _Partition]:
        """Stream the slice's records into their partitions; what each partition holds now."""
        hour = work.hour
        partitions: dict[str, _Partition] = {}
        partition_key = hourly_partition(hour)
        # A source may skip the other slices' subscriptions; what it yields is filtered anyway.
        records_of_hour = self.source.usage(hour, work.holds if work.count > 1 else None)
        with PartitionWriter(
            self.account, parallelism=self.settings.write_parallelism, isolate_refusals=True
        ) as writer:
            for group, records in groupby(records_of_hour, key=subscription_key):
                if not work.holds(group):
                    continue
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
        target = billing_target(self.settings, self._stored_subscriptions.get(group))
        return target.resource_id, target.plan_id

    # --- reruns ------------------------------------------------------------------------

    def _remove_stale(
        self, work: CollectionSlice, partitions: dict[str, _Partition], quarantine: QuarantineBuffer
    ) -> int:
        """Remove what an earlier attempt of ``work`` stored that this one did not write.

        Any stored subscription of this source in the slice may hold rows of that attempt
        (rows are only written for listed subscriptions, and the subscriptions table keeps
        every one ever listed), so each one's partition of the hour is read (keys only) and
        what this attempt did not write is deleted. Subscriptions stored before sources were
        recorded count for every source. When the hour closes a day, those subscriptions'
        daily rows of that day are removed too: closing the hour rebuilds them from what the
        hours now hold. Returns the number of hourly rows removed.
        """
        hour = work.hour
        own = {
            subscription_id
            for subscription_id, subscription in self._stored_subscriptions.items()
            if subscription.source in (self.source_name, "") and work.holds(subscription_id)
        }
        subscriptions = sorted(own | set(partitions))
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
        recorded = read_quarantine(self.account, hour, select=["RowKey", "Source", "Subscription"])
        delete_keys(
            self.account,
            quarantine_table,
            hour_key(hour),
            (
                entry["RowKey"]
                for entry in recorded
                if entry["RowKey"] not in quarantine.keys
                and entry.get("Source", "") in (self.source_name, "")
                and ("Subscription" not in entry or work.holds(entry["Subscription"]))
            ),
        )
        return removed

    def _remove_stale_manifest(self, work: CollectionSlice, subscriptions: set[str]) -> None:
        """Manifest entries of an earlier attempt of the slice for subscriptions without rows
        now (entries of other sources and slices are theirs)."""
        stale = {
            entry.subscription_id
            for entry in read_hour(self.account, work.hour)
            if entry.source in (self.source_name, "") and work.holds(entry.subscription_id)
        } - subscriptions
        delete_keys(
            self.account, self.settings.table_name(MANIFEST_ROLE), hour_key(work.hour), stale
        )

    # --- which hours -------------------------------------------------------------------

    def last_finished_hour(self, now: datetime) -> datetime:
        """The newest reported hour the source has finished at ``now``: it ended
        ``collect_delay_hours`` ago (the stamp's usage service aggregates after the hour)."""
        return last_closed_hour(now) - self.settings.collect_delay_hours * HOUR

    def due_hours(self, now: datetime) -> list[datetime]:
        """Finished reported hours after the watermark, oldest first.

        Without a watermark (the first run) collection starts ``collect_lookback_hours``
        back, and that starting point is stored at once (``Watermark.start_at``). A source
        added to an app that has billed hours already starts after the newest of them:
        billing counts an hour once, when every source has it
        (``shared.collection.hour_close``); ``ops collect`` backfills earlier hours' usage.
        """
        last = self.last_finished_hour(now)
        watermark = Watermark(self.account, self.source_name)
        mark = watermark.read()
        if mark is None:
            # The first run: the tables before any work item can reach collect_slice (in
            # Azure the Bicep has made them; later runs, finding the watermark, skip this).
            self.account.ensure_tables()
            start = last - self.settings.collect_lookback_hours * HOUR
            billed = billed_through(self.account)
            mark = watermark.start_at(start if billed is None else max(start, billed))
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
                skip_through = Watermark(self.account, self.source_name).read()
                log.warning(
                    "reported hour %s: another run already moved the watermark to %s; "
                    "hours up to it are not collected again",
                    f"{hour:%Y-%m-%dT%H}Z",
                    f"{skip_through:%Y-%m-%dT%H}Z" if skip_through else "?",
                )
            elif result.watermark is Advance.GAP:
                mark = Watermark(self.account, self.source_name).read()
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
