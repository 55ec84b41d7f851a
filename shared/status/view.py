"""The pipeline's status as one document (``ops status --json``, the admin route) and as
one screen (``ops status``): the same document, so the two never disagree.

The document is drawn by the portal's Health view as well: every time is ISO 8601 UTC, every
figure has its unit in its name, and ``series`` is the hourly worst freshness lag and
billing latency of the last 7 days (for a chart), oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.core.hours import iso
from shared.status.history import SeriesPoint, WindowFigure, series, window
from shared.status.objectives import GOALS, Objective, State
from shared.status.reader import PipelineStatus
from shared.storage.account import StorageAccount

DAY_WINDOW = timedelta(hours=24)
MONTH_WINDOW = timedelta(days=30)
SERIES_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class History:
    last_24h: dict[Objective, WindowFigure]
    last_30d: dict[Objective, WindowFigure]
    series: list[SeriesPoint]

    @classmethod
    def read(cls, account: StorageAccount, at: datetime) -> History:
        return cls(
            window(account, at, DAY_WINDOW),
            window(account, at, MONTH_WINDOW),
            series(account, at, SERIES_WINDOW),
        )


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def _window(figure: WindowFigure, goal: float) -> dict[str, Any]:
    share = figure.share_met
    return {
        "observations": figure.met + figure.breached,
        "breachedObservations": figure.breached,
        "metShare": share,
        "worst": figure.worst,
        "state": (
            State.UNKNOWN if share is None else State.MET if share >= goal else State.BREACHED
        ).value,
    }


def document(status: PipelineStatus, history: History) -> dict[str, Any]:
    """Everything ``ops status`` shows, as JSON-ready values."""
    objectives = []
    for observation in status.observations:
        goal = GOALS[observation.objective]
        objectives.append(
            {
                "name": observation.objective.value,
                "target": goal.target,
                "goal": goal.goal,
                "state": observation.state.value,
                "value": observation.value,
                "unit": observation.unit,
                "detail": observation.detail,
                "last24h": _window(history.last_24h[observation.objective], goal.goal),
                "last30d": _window(history.last_30d[observation.objective], goal.goal),
            }
        )
    record = status.reconciliation
    return {
        "at": iso(status.at),
        "healthy": not status.breached,
        "breached": [objective.value for objective in status.breached],
        "objectives": objectives,
        "stamps": [
            {
                "name": stamp.name,
                "watermark": _time(stamp.watermark),
                "collectableAt": _time(stamp.collectable_at),
                "lagMinutes": stamp.lag_minutes,
            }
            for stamp in status.stamps
        ],
        "collectedThrough": _time(status.collected_through),
        "billing": {
            "billedThrough": _time(status.billed_through),
            "hoursWaiting": [
                {"hour": iso(w.hour), "unsettledEvents": w.unsettled, "ageMinutes": w.age_minutes}
                for w in status.waiting
            ],
            "pendingEvents": status.pending,
            "unresolvedEvents": status.unresolved,
            "unresolvedOverADay": status.unresolved_overdue,
            "carryBacklog": {
                "events": status.carry_backlog,
                "oldestHour": _time(status.oldest_carry),
                "ageHours": None
                if status.oldest_carry is None
                else round((status.at - status.oldest_carry).total_seconds() / 3600, 1),
            },
        },
        "queues": status.queues,
        "reconciliation": None
        if record is None
        else {
            "at": iso(record.at),
            "firstHour": iso(record.first),
            "lastHour": iso(record.last),
            "keys": record.keys,
            "differences": record.differences,
            "byKind": dict(record.by_kind),
        },
        "coverage": {
            "gaps": [
                {"hour": iso(hour), "subscriptions": len(subs)}
                for hour, subs in sorted(status.coverage_gaps.items())
            ],
        },
        "exports": [
            {
                "name": export.name,
                "lastRun": _time(export.last_run),
                "ageHours": export.age_hours,
                "rows": export.rows,
            }
            for export in status.exports
        ],
        "statements": {
            "ratedThrough": _time(status.rated_through),
            "finalThrough": None
            if status.statements_final_through is None
            else str(status.statements_final_through),
            "overdue": None
            if status.statements_overdue is None
            else {
                "month": str(status.statements_overdue[0]),
                "hoursPastDeadline": status.statements_overdue[1],
            },
        },
        "series": [
            {
                "hour": iso(point.hour),
                "lagMinutes": point.lag_minutes,
                "billingLatencyMinutes": point.billing_minutes,
            }
            for point in history.series
        ],
    }


def _share(window_document: dict[str, Any]) -> str:
    share = window_document["metShare"]
    return "-" if share is None else f"{share:.1%}"


def screen(doc: dict[str, Any]) -> str:
    """The document as one screen of text."""
    lines = [
        f"pipeline status at {doc['at']}: "
        + ("healthy" if doc["healthy"] else "BREACHED: " + ", ".join(doc["breached"])),
        "",
        f"{'objective':<18} {'now':<9} {'value':>9}  {'24 h':>7} {'30 d':>7}  detail",
    ]
    for objective in doc["objectives"]:
        value, unit = objective["value"], objective["unit"]
        unit = "" if unit.startswith("{") else unit  # counts need no unit on the screen
        shown = "-" if value is None else f"{value:g} {unit}".strip()
        lines.append(
            f"{objective['name']:<18} {objective['state']:<9} {shown:>9}  "
            f"{_share(objective['last24h']):>7} {_share(objective['last30d']):>7}  "
            f"{objective['detail']}"
        )
    lines += ["", "stamps:"]
    for stamp in doc["stamps"]:
        lines.append(
            f"  {stamp['name']:<16} watermark {stamp['watermark'] or 'none'}  "
            f"lag {'-' if stamp['lagMinutes'] is None else stamp['lagMinutes']} min"
        )
    billing = doc["billing"]
    carry = billing["carryBacklog"]
    waiting = ", ".join(
        f"{w['hour'][:13]}Z ({w['unsettledEvents']} events, {w['ageMinutes']:g} min)"
        for w in billing["hoursWaiting"]
    )
    lines += [
        f"billing: billed through {billing['billedThrough'] or 'none'}; hours waiting: "
        f"{waiting or 'none'}",
        f"  pending {billing['pendingEvents']}, unresolved {billing['unresolvedEvents']} "
        f"({billing['unresolvedOverADay']} over a day), carry backlog {carry['events']}"
        + (
            f" (oldest {carry['oldestHour'][:13]}Z, {carry['ageHours']} h)"
            if carry["events"]
            else ""
        ),
        "queues: "
        + "; ".join(
            f"{role} {depths['queued']} queued, {depths['poison']} poison"
            for role, depths in doc["queues"].items()
        ),
    ]
    record = doc["reconciliation"]
    lines.append(
        "reconciliation: none recorded"
        if record is None
        else f"reconciliation: {record['at']} over {record['firstHour'][:13]}Z.."
        f"{record['lastHour'][:13]}Z, {record['keys']} keys, {record['differences']} "
        f"difference(s)" + (f" {record['byKind']}" if record["byKind"] else "")
    )
    for export in doc["exports"]:
        lines.append(
            f"export {export['name']}: last run {export['lastRun'] or 'never'}"
            + (
                ""
                if export["ageHours"] is None
                else f" ({export['ageHours']} h ago, "
                f"{export['rows'] if export['rows'] is not None else '?'} rows)"
            )
        )
    statements = doc["statements"]
    lines.append(
        f"statements: rated through {statements['ratedThrough'] or 'none yet'}, "
        f"final through {statements['finalThrough'] or 'none yet'}"
        + (
            ""
            if statements["overdue"] is None
            else f"; {statements['overdue']['month']} overdue by "
            f"{statements['overdue']['hoursPastDeadline']} h"
        )
    )
    return "\n".join(lines)
