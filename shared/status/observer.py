"""One observation of the pipeline: its status read, kept in the history, sent as gauges.

The ``observe_pipeline`` timer does this every 5 minutes (``STATUS_SCHEDULE``), so the
objectives become metrics Azure Monitor alerts on (invariant 13: every objective is a metric
and an alert), and once a day it reconciles the previous UTC day, so correctness has a fresh
answer without an operator running ``ops reconcile``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.billing.commerce import CommerceClient
from shared.billing.reconcile import Reconciliation, reconcile
from shared.core.errors import UsageReporterError
from shared.core.hours import DAY, HOUR, floor_day
from shared.core.telemetry import (
    BILLING_LATENCY,
    BILLING_PENDING,
    BILLING_UNRESOLVED,
    CARRY_AGE,
    CARRY_BACKLOG,
    COLLECTION_LAG,
    EXPORT_AGE,
    OBJECTIVE_BREACHED,
    POISON_DEPTH,
    RECONCILIATION_DIFFERENCES,
    STATEMENTS_FINAL_THROUGH,
    STATEMENTS_OVERDUE,
    Telemetry,
)
from shared.status.history import (
    ReconciliationRecord,
    record_observations,
    record_reconciliation,
)
from shared.status.objectives import BILLING_LATENCY_TARGET, Objective, State
from shared.status.reader import PipelineStatus, StatusReader
from shared.storage.account import StorageAccount

log = logging.getLogger(__name__)


def observe(
    reader: StatusReader,
    telemetry: Telemetry,
    at: datetime,
    *,
    reconcile_with: CommerceClient | None = None,
) -> PipelineStatus:
    """Read the status at ``at``; with ``reconcile_with``, reconcile the previous UTC day if
    it is due (``reconcile_previous_day``) and judge correctness on that; then add the
    status to the history and record every gauge. A reconciliation that fails (the endpoint
    down) is logged and the observation still made: the next run tries again."""
    status = reader.read(at)
    if reconcile_with is not None:
        try:
            record = reconcile_previous_day(reader.account, reconcile_with, status)
        except UsageReporterError as error:
            log.warning("observe_pipeline: the daily reconciliation failed: %s", error)
        else:
            if record is not None:
                status = status.reconciled(record)
    record_observations(reader.account, status.at, status.observations)
    record_gauges(status, telemetry)
    telemetry.flush()
    return status


def record_gauges(status: PipelineStatus, telemetry: Telemetry) -> None:
    """Every figure of ``status`` that has a gauge in ``shared.core.telemetry``."""
    for stamp in status.stamps:
        if stamp.lag_minutes is not None:
            telemetry.record(COLLECTION_LAG, stamp.lag_minutes, stamp=stamp.name)
    latency = status.observation(Objective.BILLING_LATENCY).value or 0.0
    telemetry.record(BILLING_LATENCY, latency)
    telemetry.record(BILLING_PENDING, status.pending)
    telemetry.record(BILLING_UNRESOLVED, status.unresolved)
    telemetry.record(CARRY_BACKLOG, status.carry_backlog)
    carry_age = 0.0
    if status.oldest_carry is not None:
        carry_age = round((status.at - status.oldest_carry).total_seconds() / 3600, 1)
    telemetry.record(CARRY_AGE, carry_age)
    for role, depths in status.queues.items():
        telemetry.record(POISON_DEPTH, depths["poison"], queue=role)
    if status.reconciliation is not None:
        kinds = dict(status.reconciliation.by_kind)
        kinds["total"] = status.reconciliation.differences
        for kind in sorted({*kinds, *DIFFERENCE_KINDS}):  # absent kinds back to 0
            telemetry.record(RECONCILIATION_DIFFERENCES, kinds.get(kind, 0), kind=kind)
    for export in status.exports:
        if export.age_hours is not None:
            telemetry.record(EXPORT_AGE, export.age_hours, export=export.name)
    final = status.statements_final_through
    telemetry.record(STATEMENTS_FINAL_THROUGH, 0 if final is None else int(final.key))
    overdue = status.statements_overdue
    telemetry.record(STATEMENTS_OVERDUE, 0.0 if overdue is None else overdue[1])
    for observation in status.observations:
        if observation.state is not State.UNKNOWN:
            telemetry.record(
                OBJECTIVE_BREACHED, int(observation.breached), objective=observation.objective
            )


# The kinds ``shared.billing.reconcile`` names, recorded as 0 when the latest reconciliation
# has none (a gauge keeps its last value otherwise), plus "total", which the alert reads.
DIFFERENCE_KINDS = (
    "total",
    "unreported",
    "storage-differs",
    "summary-differs",
    "pending",
    "awaiting-carry",
    "rejected",
    "mismatch",
    "carried-unbilled",
    "carried-unresolved",
    "unresolved",
    "missing-at-endpoint",
    "unexpected-at-endpoint",
    "endpoint-differs",
    "endpoint-unverifiable",
    "endpoint-unreadable",
    "endpoint-processing",
    "endpoint-mismatch",
    "endpoint-rejected",
)


def reconcile_previous_day(
    account: StorageAccount, client: CommerceClient, status: PipelineStatus
) -> ReconciliationRecord | None:
    """Reconcile the previous UTC day once it is collected and billed, if no reconciliation
    covered it yet, and record the result (the timer's daily answer for correctness).

    Billed means no hour of the day still waits for billing (``status.waiting``), or the
    ones that wait are past the billing-latency objective: billing is late then, and what
    reconciliation finds is a real difference. Without this wait, a run just after midnight
    found the day's last hour collected minutes before its work item billed it, recorded it
    "unreported", and that record, the day's only one, held correctness breached all day.
    """
    day = floor_day(status.at) - DAY
    last = day + DAY - HOUR
    if status.collected_through is None or status.collected_through < last:
        return None
    latest = status.reconciliation
    if latest is not None and latest.first <= day and latest.last >= last:
        return None
    patience = BILLING_LATENCY_TARGET.total_seconds() / 60
    if any(day <= hour.hour <= last and hour.age_minutes <= patience for hour in status.waiting):
        return None
    result = reconcile(account, client, day, last)
    return remember(account, result, status.at)


def remember(account: StorageAccount, result: Reconciliation, at: datetime) -> ReconciliationRecord:
    """Record a reconciliation's result as the latest one (``ops reconcile`` too)."""
    by_kind: dict[str, int] = {}
    for difference in result.differences:
        by_kind[difference.kind] = by_kind.get(difference.kind, 0) + 1
    record = ReconciliationRecord(
        at=at,
        first=result.first_hour,
        last=result.last_hour,
        keys=result.keys,
        differences=len(result.differences),
        by_kind=by_kind,
    )
    record_reconciliation(account, record)
    return record
