"""What the objectives were, kept: hourly buckets of observations, and reconciliation records.

Queue depths, lags and backlogs are states, not history: nothing stored says what they were
yesterday. So every observation (the ``observe_pipeline`` timer's, every 5 minutes; the
chaos benchmark's, every simulated step) is added to the bucket of its hour in the
``state`` table (partition ``status``, RowKey ``YYYYMMDDHH``): per objective, how many
observations were met and breached and the worst value seen, and the hour's worst
freshness lag and billing latency (the series a chart draws). The 24-hour and 30-day
figures are one range read of at most 720 small entities. A bucket is updated under its
ETag, so two observers at once never lose a count.

Reconciliation's result is stored too (partition ``reconciliation``, newest first), by
``ops reconcile``, the run command and the timer's daily reconciliation of the previous
day: correctness is "the latest reconciliation found no difference".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.core.hours import HOUR, as_utc, floor_hour, hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.status.objectives import Objective, Observation, State
from shared.storage.account import StorageAccount

ROLE = "state"
BUCKETS = "status"
RECONCILIATIONS = "reconciliation"
# RowKeys of reconciliation records sort newest first: this minus the record's epoch seconds.
_NEWEST_FIRST = 10**11


@dataclass(frozen=True)
class WindowFigure:
    """One objective over a window of buckets."""

    met: int
    breached: int
    worst: float | None

    @property
    def share_met(self) -> float | None:
        known = self.met + self.breached
        return None if known == 0 else round(self.met / known, 4)


@dataclass(frozen=True)
class SeriesPoint:
    hour: datetime
    lag_minutes: float | None  # the worst freshness lag observed in the hour
    billing_minutes: float | None  # the worst billing latency observed in the hour


def _field(objective: Objective) -> str:
    return objective.name.title().replace("_", "")  # FRESHNESS -> Freshness


def record_observations(
    account: StorageAccount, at: datetime, observations: Sequence[Observation]
) -> None:
    """Add one observation of every objective to the bucket of ``at``'s hour."""
    table = account.table(ROLE)
    key = hour_key(floor_hour(at))

    def add() -> None:
        while True:
            try:
                found = table.get_entity(BUCKETS, key)
                current, etag = dict(found), found.metadata["etag"]
            except ResourceNotFoundError:
                current, etag = {"PartitionKey": BUCKETS, "RowKey": key, "Samples": 0}, None
            entity = _merged(current, observations)
            try:
                if etag is None:
                    table.create_entity(entity)
                else:
                    table.update_entity(
                        entity, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another observer wrote the bucket meanwhile: add to theirs

    call_with_retry(add, what="record the objectives' observation")


def _merged(current: dict[str, object], observations: Sequence[Observation]) -> dict[str, object]:
    entity = dict(current)
    entity["Samples"] = int(str(entity.get("Samples", 0))) + 1
    for observation in observations:
        if observation.state is State.UNKNOWN:
            continue
        name = _field(observation.objective)
        outcome = "Breached" if observation.breached else "Met"
        entity[f"{outcome}{name}"] = int(str(entity.get(f"{outcome}{name}", 0))) + 1
        if observation.value is not None:
            worst = entity.get(f"Worst{name}")
            entity[f"Worst{name}"] = (
                max(float(str(worst)), observation.value)
                if worst is not None
                else float(observation.value)
            )
    return entity


def _buckets(account: StorageAccount, first: datetime, last: datetime) -> list[dict[str, object]]:
    table = account.table(ROLE)

    def query() -> list[dict[str, object]]:
        try:
            return list(
                table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                    parameters={"pk": BUCKETS, "low": hour_key(first), "high": hour_key(last)},
                )
            )
        except ResourceNotFoundError:
            return []

    return call_with_retry(query, what="read the objectives' history")


def window(account: StorageAccount, at: datetime, span: timedelta) -> dict[Objective, WindowFigure]:
    """Each objective over the buckets of the ``span`` before ``at`` (its hour included)."""
    last = floor_hour(at)
    buckets = _buckets(account, last - span + HOUR, last)
    figures = {}
    for objective in Objective:
        name = _field(objective)
        worst = [float(str(b[f"Worst{name}"])) for b in buckets if f"Worst{name}" in b]
        figures[objective] = WindowFigure(
            met=sum(int(str(b.get(f"Met{name}", 0))) for b in buckets),
            breached=sum(int(str(b.get(f"Breached{name}", 0))) for b in buckets),
            worst=max(worst) if worst else None,
        )
    return figures


def series(account: StorageAccount, at: datetime, span: timedelta) -> list[SeriesPoint]:
    """The worst freshness lag and billing latency of each observed hour of ``span``."""
    last = floor_hour(at)
    points = []
    for bucket in _buckets(account, last - span + HOUR, last):
        lag = bucket.get(f"Worst{_field(Objective.FRESHNESS)}")
        billing = bucket.get(f"Worst{_field(Objective.BILLING_LATENCY)}")
        points.append(
            SeriesPoint(
                parse_hour_key(str(bucket["RowKey"])),
                None if lag is None else float(str(lag)),
                None if billing is None else float(str(billing)),
            )
        )
    return points


# -- reconciliation records ----------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationRecord:
    at: datetime  # when it ran
    first: datetime  # its reported hours
    last: datetime
    keys: int
    differences: int
    by_kind: Mapping[str, int]


def record_reconciliation(account: StorageAccount, record: ReconciliationRecord) -> None:
    """Keep a reconciliation's result (newest first in its partition)."""
    seconds = int(as_utc(record.at).timestamp())
    entity = {
        "PartitionKey": RECONCILIATIONS,
        "RowKey": f"{_NEWEST_FIRST - seconds:011d}",
        "At": as_utc(record.at),
        "First": as_utc(record.first),
        "Last": as_utc(record.last),
        "Keys": record.keys,
        "Differences": record.differences,
        "ByKind": json.dumps(dict(sorted(record.by_kind.items()))),
    }
    table = account.table(ROLE)
    call_with_retry(lambda: table.upsert_entity(entity), what="record a reconciliation")


def latest_reconciliation(account: StorageAccount) -> ReconciliationRecord | None:
    """The most recent reconciliation's result (one entity read), or None."""
    table = account.table(ROLE)

    def query() -> ReconciliationRecord | None:
        try:
            pages = table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": RECONCILIATIONS}, results_per_page=1
            ).by_page()
            for page in pages:
                for entity in page:
                    return ReconciliationRecord(
                        at=as_utc(entity["At"]),
                        first=as_utc(entity["First"]),
                        last=as_utc(entity["Last"]),
                        keys=int(entity["Keys"]),
                        differences=int(entity["Differences"]),
                        by_kind=json.loads(entity.get("ByKind") or "{}"),
                    )
                return None
        except ResourceNotFoundError:
            return None
        return None

    return call_with_retry(query, what="read the latest reconciliation")
