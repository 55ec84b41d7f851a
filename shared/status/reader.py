"""The pipeline's state now, read from what it stored: the one reader behind ``ops status``,
the admin status route, the ``observe_pipeline`` timer's gauges and the chaos benchmark, so
all four show the same values.

What it reads, and what each read costs in requests:

- each stamp's watermark (one point read per stamp) -> freshness;
- the ledger's unsettled events: one query of the whole ledger table filtered on ``State``
  (pending, expired, unresolved). Table storage serves a filter on a non-key property by
  scanning, so its cost follows the ledger's size (pages of up to 1,000 entities or 5 s of
  server time), not the answer: the price of knowing every unsettled event without an index
  of its own (docs/operations.md says when to add one);
- the last ``RECENT_HOURS`` stored hours: their summaries (one PartitionKey range) against
  the ledger's events of those hours (one RowKey range across the ledger's partitions,
  which Table storage also serves partition by partition), so an hour whose work item has
  not run yet counts as waiting too;
- the poison and work queues (one properties read each);
- the latest reconciliation record and the unresolved events -> correctness;
- the last ``COVERAGE_HOURS`` stored hours' quarantine (one PartitionKey range), and the
  manifest of an hour whose quarantine is not empty -> coverage;
- each export's latest run (a blob listing of its current and previous month) -> exports;
- the rating ledger's two marks, ``rated`` and ``finalised`` (one read of their partition),
  and the manifest of each closed month after the ``finalised`` one (one probe each) ->
  rated through, statements.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.billing.ledger import LedgerState
from shared.core.config import Settings
from shared.core.hours import HOUR, as_utc, hour_key, parse_hour_key, utc_now
from shared.core.retry import call_with_retry
from shared.export.configs import ExportConfigs, Layout
from shared.export.exporter import MANIFEST, period_folder
from shared.rating.engine import Month
from shared.rating.marks import RatingMarks
from shared.status.history import ReconciliationRecord, latest_reconciliation
from shared.status.objectives import (
    BILLING_LATENCY_TARGET,
    COVERAGE_HOURS,
    EXPORT_MAX_AGE,
    FRESHNESS_TARGET,
    MEASURED_BY_AZURE_MONITOR,
    STATEMENTS_DEADLINE,
    UNRESOLVED_GRACE,
    Objective,
    Observation,
    State,
)
from shared.storage.account import StorageAccount
from shared.storage.blobs import BlobStore
from shared.storage.hour_manifest import has_entries, read_hour
from shared.storage.hour_summary import MARKER
from shared.storage.queues import POISON_SUFFIX
from shared.storage.watermark import Watermark, billed_through

# Stored hours whose summaries are compared with the ledger (an item not run yet).
RECENT_HOURS = 6
# How far back "statements final through" looks for a closed month.
STATEMENT_MONTHS_BACK = 24
_UNSETTLED = (LedgerState.PENDING, LedgerState.EXPIRED, LedgerState.UNRESOLVED)
# Per reported hour, event keys (billing resource, dimension).
HourKeys = dict[datetime, set[tuple[str, str]]]


def _minutes(delta: timedelta) -> float:
    return round(max(delta, timedelta(0)).total_seconds() / 60, 1)


@dataclass(frozen=True)
class StampState:
    name: str
    watermark: datetime | None  # the last reported hour fully written
    collectable_at: datetime | None  # when the hour after it became (or becomes) collectable
    lag_minutes: float | None  # how long that hour has waited; 0 when not due yet


@dataclass(frozen=True)
class WaitingHour:
    hour: datetime
    unsettled: int  # chargeable events not in the ledger yet, or pending
    age_minutes: float  # since the hour became collectable


@dataclass(frozen=True)
class ExportState:
    name: str
    last_run: datetime | None
    age_hours: float | None
    rows: int | None  # the run's manifest dataRowCount (None: a FinOps hubs folder)


@dataclass
class PipelineStatus:
    """Everything ``ops status`` shows, as of ``at``."""

    at: datetime
    stamps: list[StampState]
    collected_through: datetime | None
    billed_through: datetime | None
    waiting: list[WaitingHour]
    pending: int
    unresolved: int
    unresolved_overdue: int
    carry_backlog: int
    oldest_carry: datetime | None
    queues: dict[str, dict[str, int]]  # role -> {"queued": n, "poison": n}
    reconciliation: ReconciliationRecord | None
    coverage_gaps: dict[datetime, list[str]]  # hour -> subscriptions with no stored row
    exports: list[ExportState]
    statements_final_through: Month | None
    statements_overdue: tuple[Month, float] | None  # (month, hours past its deadline)
    rated_through: datetime | None  # the rating ledger's ``rated`` mark
    observations: list[Observation] = field(default_factory=list)

    @property
    def breached(self) -> list[Objective]:
        return [obs.objective for obs in self.observations if obs.breached]

    def observation(self, objective: Objective) -> Observation:
        return next(obs for obs in self.observations if obs.objective is objective)

    def reconciled(self, record: ReconciliationRecord) -> PipelineStatus:
        """This status with ``record`` as the latest reconciliation, judged again (the
        timer's run reconciles after reading, and observes what it found)."""
        status = replace(self, reconciliation=record, observations=[])
        status.observations = judge(status)
        return status


class StatusReader:
    """Reads the pipeline's stored state for one app (its settings and storage)."""

    def __init__(
        self,
        settings: Settings,
        account: StorageAccount,
        *,
        blobs: BlobStore | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.account = account
        self.blobs = blobs or account.blob_store()
        self.clock = clock

    def read(self, now: datetime | None = None) -> PipelineStatus:
        at = as_utc(now or self.clock()).replace(microsecond=0)
        stamps = [self._stamp(stamp, at) for stamp in self.settings.stamps()]
        marks = [stamp.watermark for stamp in stamps]
        # What every source has written (``collected_through``, from the marks just read).
        through = None if None in marks else min(mark for mark in marks if mark is not None)
        delay = max(stamp.collect_delay_hours for stamp in self.settings.stamps())
        unsettled = self._unsettled_events()
        waiting = self._waiting(through, unsettled, at, delay)
        unresolved = [e for e in unsettled if e["State"] == LedgerState.UNRESOLVED]
        overdue = [
            e for e in unresolved if at - as_utc(e.get("UpdatedAt") or at) > UNRESOLVED_GRACE
        ]
        expired = [as_utc(e["Hour"]) for e in unsettled if e["State"] == LedgerState.EXPIRED]
        rating = RatingMarks(self.account).both()
        overdue_month = self._overdue_statements(through, rating.finalised, at)
        status = PipelineStatus(
            at=at,
            stamps=stamps,
            collected_through=through,
            billed_through=billed_through(self.account),
            waiting=waiting,
            pending=sum(1 for e in unsettled if e["State"] == LedgerState.PENDING),
            unresolved=len(unresolved),
            unresolved_overdue=len(overdue),
            carry_backlog=len(expired),
            oldest_carry=min(expired, default=None),
            queues=self._queues(),
            reconciliation=latest_reconciliation(self.account),
            coverage_gaps=self._coverage(through),
            exports=self._exports(at),
            statements_final_through=rating.finalised,
            statements_overdue=overdue_month,
            rated_through=rating.rated.hour,
        )
        status.observations = judge(status)
        return status

    # -- collection ------------------------------------------------------------------------

    def _stamp(self, stamp: Settings, at: datetime) -> StampState:
        mark = Watermark(self.account, stamp.source_name).read()
        if mark is None:
            return StampState(stamp.source_name, None, None, None)
        collectable = mark + HOUR + HOUR + timedelta(hours=stamp.collect_delay_hours)
        return StampState(stamp.source_name, mark, collectable, _minutes(at - collectable))

    # -- billing ---------------------------------------------------------------------------

    def _unsettled_events(self) -> list[dict[str, Any]]:
        """Every ledger event not settled for good (see the module's note on its cost)."""
        table = self.account.table("ledger")
        names = {f"s{i}": state.value for i, state in enumerate(_UNSETTLED)}

        def query() -> list[dict[str, Any]]:
            try:
                return list(
                    table.query_entities(
                        " or ".join(f"State eq @{name}" for name in names),
                        parameters=names,
                        select=["ResourceId", "Dimension", "Hour", "State", "UpdatedAt"],
                    )
                )
            except ResourceNotFoundError:
                return []

        return call_with_retry(query, what="read unsettled ledger events")

    def _waiting(
        self,
        through: datetime | None,
        unsettled: list[dict[str, Any]],
        at: datetime,
        delay_hours: int,
    ) -> list[WaitingHour]:
        """Stored hours with chargeable events not settled: pending in the ledger, or owed
        by the hour's summary and not in the ledger at all (its work item has not run)."""
        counts: Counter[datetime] = Counter(
            as_utc(e["Hour"]) for e in unsettled if e["State"] == LedgerState.PENDING
        )
        if through is not None:
            first = through - (RECENT_HOURS - 1) * HOUR
            recorded = self._ledger_keys(first, through)
            for hour, owed in self._summary_keys(first, through).items():
                counts[hour] += len(owed - recorded.get(hour, set()))
        collectable = HOUR + timedelta(hours=delay_hours)
        return [
            WaitingHour(hour, count, _minutes(at - (hour + collectable)))
            for hour, count in sorted(counts.items())
            if count and (through is None or hour <= through)
        ]

    def _summary_keys(
        self, first: datetime, last: datetime
    ) -> dict[datetime, set[tuple[str, str]]]:
        """Per hour first..last, the (resource, dimension) keys its summary owes an event (one
        PartitionKey range; a key summing to 0 gets none: ``Ledger.open`` skips it)."""
        rows = self._hour_range("summaries", first, last, ["ResourceId", "Dimension", "Quantity"])
        keys: dict[datetime, set[tuple[str, str]]] = defaultdict(set)
        for row in rows:
            if (
                "|" in row["RowKey"]
                and not row["RowKey"].endswith(MARKER)
                and row.get("ResourceId")
                and row.get("Dimension")
                and float(row.get("Quantity") or 0) != 0
            ):
                keys[parse_hour_key(row["PartitionKey"])].add((row["ResourceId"], row["Dimension"]))
        return keys

    def _hour_range(
        self, role: str, first: datetime, last: datetime, select: list[str]
    ) -> list[dict[str, Any]]:
        """The entities of a table partitioned by hour, hours first..last (one range query:
        its cost follows what the hours hold)."""
        table = self.account.table(role)

        def query() -> list[dict[str, Any]]:
            try:
                return list(
                    table.query_entities(
                        "PartitionKey ge @low and PartitionKey le @high",
                        parameters={"low": hour_key(first), "high": hour_key(last)},
                        select=["PartitionKey", "RowKey", *select],
                    )
                )
            except ResourceNotFoundError:
                return []

        return call_with_retry(query, what=f"read {role} {hour_key(first)}..{hour_key(last)}")

    def _ledger_keys(self, first: datetime, last: datetime) -> HourKeys:
        """The ledger's event keys of the hours first..last, whatever their state."""
        table = self.account.table("ledger")

        def query() -> list[dict[str, Any]]:
            try:
                return list(
                    table.query_entities(
                        "RowKey ge @low and RowKey lt @high",
                        parameters={"low": hour_key(first), "high": hour_key(last) + "`"},
                        select=["ResourceId", "Dimension", "Hour", "State"],
                    )
                )
            except ResourceNotFoundError:
                return []

        keys: dict[datetime, set[tuple[str, str]]] = defaultdict(set)
        for entity in call_with_retry(query, what="read the ledger's recent hours"):
            if entity.get("State"):  # events only (carry markers and guards have none)
                keys[as_utc(entity["Hour"])].add((entity["ResourceId"], entity["Dimension"]))
        return keys

    def _queues(self) -> dict[str, dict[str, int]]:
        names = {
            "billing": self.settings.usage_queue_name,
            "collection": self.settings.collect_queue_name,
        }
        return {
            role: {"queued": self._depth(name), "poison": self._depth(name + POISON_SUFFIX)}
            for role, name in names.items()
        }

    def _depth(self, queue_name: str) -> int:
        client = self.account.queue(queue_name)

        def read() -> int:
            try:
                return int(client.get_queue_properties().approximate_message_count or 0)
            except ResourceNotFoundError:
                return 0  # the host creates a poison queue on its first poisoned message

        return call_with_retry(read, what=f"read the depth of {queue_name}")

    # -- coverage --------------------------------------------------------------------------

    def _coverage(self, through: datetime | None) -> dict[datetime, list[str]]:
        """Per stored hour of the last COVERAGE_HOURS: the subscriptions the source reported
        usage for (quarantined records name them) that have no row stored in the hour."""
        gaps: dict[datetime, list[str]] = {}
        if through is None:
            return gaps
        first = through - (COVERAGE_HOURS - 1) * HOUR
        named: dict[datetime, set[str]] = defaultdict(set)
        for row in self._hour_range("quarantine", first, through, ["Subscription"]):
            if row.get("Subscription"):
                named[parse_hour_key(row["PartitionKey"])].add(str(row["Subscription"]).lower())
        for hour, subscriptions in sorted(named.items()):
            stored = {entry.subscription_id.lower() for entry in read_hour(self.account, hour)}
            missing = sorted(subscriptions - stored)
            if missing:
                gaps[hour] = missing
        return gaps

    # -- exports and statements ------------------------------------------------------------

    def _exports(self, at: datetime) -> list[ExportState]:
        states = []
        for config in ExportConfigs(self.account).all():
            latest: tuple[datetime, int | None] | None = None
            for month in (Month.of(at), Month.of(at).previous):
                run = self._latest_run(config.container, config, month)
                if run is not None and (latest is None or run[0] > latest[0]):
                    latest = run
            if latest is None:
                states.append(ExportState(config.name, None, None, None))
            else:
                age = round((at - latest[0]).total_seconds() / 3600, 2)
                states.append(ExportState(config.name, latest[0], max(age, 0.0), latest[1]))
        return states

    def _latest_run(
        self, container: str, config: Any, month: Month
    ) -> tuple[datetime, int | None] | None:
        """The newest complete run of ``config``'s ``month`` (its start, its rows)."""
        root = f"{config.root_folder}/" if config.root_folder else ""
        if config.layout is Layout.FINOPS_HUBS:
            folder = f"{root}Costs/{month.year:04d}/{month.month:02d}/{config.scope_path}/"
            names = self.blobs.names(container, folder)
            if folder + MANIFEST not in names:
                return None
            starts = [name[len(folder) :][:14] for name in names if "__part_" in name]
            return (_parse_stamp(max(starts)), None) if starts else None
        period = f"{root}{config.name}/{period_folder(month)}/"
        manifests = [
            name for name in self.blobs.names(container, period) if name.endswith("/" + MANIFEST)
        ]
        if not manifests:
            return None
        newest = max(manifests)
        document = self.blobs.read(container, newest)
        rows = None
        if document:
            rows = int(json.loads(document).get("dataRowCount", 0))
        return _parse_stamp(newest[len(period) :][:12]), rows

    def _overdue_statements(
        self, through: datetime | None, final: Month | None, at: datetime
    ) -> tuple[Month, float] | None:
        """The oldest closed month with usage past its deadline that is not final (after
        ``final``, the ``finalised`` mark of ``shared.rating.marks``), with the hours it is
        late. Walks back from the newest closed month to a final month, or to one with no
        usage (before the app's first hour)."""
        if through is None:
            return None
        month = Month.of(through) if through == Month.of(through).last_hour else None
        month = month or Month.of(through).previous
        late = []
        for _ in range(STATEMENT_MONTHS_BACK):
            if final is not None and month <= final:
                break
            if not has_entries(self.account, month.first_hour, month.last_hour):
                break
            hours = (at - (month.next.first_hour + STATEMENTS_DEADLINE)).total_seconds() / 3600
            if hours > 0:
                late.append((month, round(hours, 1)))
            month = month.previous
        return min(late) if late else None


def _parse_stamp(text: str) -> datetime:
    """``YYYYMMDDHHmm`` or ``YYYYMMDDHHmmss`` of a run's folder, UTC."""
    return parse_hour_key(text[:10]) + timedelta(minutes=int(text[10:12] or 0))


def judge(status: PipelineStatus) -> list[Observation]:
    """Each objective's state at ``status.at``, from what ``status`` read."""
    observations = []
    lags = [s.lag_minutes for s in status.stamps]
    if any(lag is None for lag in lags):
        unknown = ", ".join(s.name for s in status.stamps if s.lag_minutes is None)
        observations.append(
            Observation(
                Objective.FRESHNESS, State.UNKNOWN, None, "min", f"no watermark yet: {unknown}"
            )
        )
    else:
        worst = max(lag for lag in lags if lag is not None)
        late = [s.name for s in status.stamps if (s.lag_minutes or 0) > _minutes(FRESHNESS_TARGET)]
        observations.append(
            Observation(
                Objective.FRESHNESS,
                State.BREACHED if late else State.MET,
                worst,
                "min",
                f"behind: {', '.join(late)}" if late else "every stamp within 30 min",
            )
        )
    latency = max((w.age_minutes for w in status.waiting), default=0.0)
    slow = [w for w in status.waiting if w.age_minutes > _minutes(BILLING_LATENCY_TARGET)]
    observations.append(
        Observation(
            Objective.BILLING_LATENCY,
            State.BREACHED if slow else State.MET,
            latency,
            "min",
            f"{len(status.waiting)} stored hour(s) waiting, {len(slow)} past 90 min",
        )
    )
    record = status.reconciliation
    differences = record.differences if record is not None else 0
    bad = differences + status.unresolved_overdue
    if record is None and not status.unresolved_overdue:
        correctness = State.UNKNOWN
    else:
        correctness = State.BREACHED if bad else State.MET
    observations.append(
        Observation(
            Objective.CORRECTNESS,
            correctness,
            float(bad),
            "{difference}",
            (
                "no reconciliation recorded yet"
                if record is None
                else f"latest reconciliation ({record.first:%Y-%m-%dT%H}.."
                f"{record.last:%Y-%m-%dT%H}Z): {record.differences} difference(s)"
            )
            + f"; {status.unresolved_overdue} event(s) unresolved for over a day",
        )
    )
    missing = sum(len(subs) for subs in status.coverage_gaps.values())
    observations.append(
        Observation(
            Objective.COVERAGE,
            State.UNKNOWN
            if status.collected_through is None
            else State.BREACHED
            if missing
            else State.MET,
            float(missing),
            "{subscription}",
            f"{missing} subscription-hour(s) reported but not stored in {COVERAGE_HOURS} hours",
        )
    )
    ages = [e.age_hours for e in status.exports]
    stale = [
        e.name
        for e in status.exports
        if e.age_hours is None or e.age_hours > EXPORT_MAX_AGE.total_seconds() / 3600
    ]
    observations.append(
        Observation(
            Objective.EXPORTS,
            State.BREACHED if stale else State.MET,
            max((a for a in ages if a is not None), default=0.0),
            "h",
            f"stale: {', '.join(stale)}" if stale else f"{len(status.exports)} export(s) fresh",
        )
    )
    overdue = status.statements_overdue
    observations.append(
        Observation(
            Objective.STATEMENTS,
            State.UNKNOWN
            if status.collected_through is None
            else State.BREACHED
            if overdue
            else State.MET,
            overdue[1] if overdue else 0.0,
            "h",
            f"{overdue[0]} is {overdue[1]} h past its deadline"
            if overdue
            else f"final through {status.statements_final_through or 'none yet'}",
        )
    )
    for objective in sorted(MEASURED_BY_AZURE_MONITOR):
        observations.append(
            Observation(
                objective,
                State.UNKNOWN,
                None,
                "",
                "measured by Azure Monitor from usage.api.* (nothing is stored)",
            )
        )
    return observations
