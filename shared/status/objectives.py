"""The service-level objectives of ``docs/operations.md``: names, targets, and why those.

Each objective is measured from stored state (``shared.status.reader``) at a moment, which
gives its state now (met, breached, or unknown when nothing can tell yet), and each
observation is kept per hour (``shared.status.history``), which gives its share of met
observations over the last 24 hours and 30 days against its goal. The numbers live here,
once: ``ops status``, the status route, the gauges, the chaos benchmark and the docs all
read them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Objective(StrEnum):
    FRESHNESS = "freshness"
    BILLING_LATENCY = "billing-latency"
    CORRECTNESS = "correctness"
    COVERAGE = "coverage"
    EXPORTS = "exports"
    STATEMENTS = "statements"
    API_AVAILABILITY = "api-availability"
    API_LATENCY = "api-latency"


class State(StrEnum):
    MET = "met"
    BREACHED = "breached"
    UNKNOWN = "unknown"  # nothing stored can tell yet (no watermark, no reconciliation, ...)


# Freshness: a reported hour is queryable within this long of becoming collectable (its end
# plus COLLECT_DELAY_HOURS). The timer plans at five past the hour and an hour's slices take
# seconds to minutes (docs/scale.md); 30 minutes leaves room for a failed delivery to be
# retried (host.json: visibilityTimeout 5 minutes) and still alerts within the hour.
FRESHNESS_TARGET = timedelta(minutes=30)
# Billing latency: an hour's chargeable events are settled (accepted, confirmed, carried,
# expired into the carry backlog, rejected or unresolved: nothing left to send for the hour
# itself) within this long of the hour becoming collectable: the 30 minutes of freshness,
# then 60 for billing, which covers the queue's five deliveries 5 minutes apart, each with
# up to 2 minutes of endpoint retries (host.json), before the item is poisoned. Measured from
# collectable rather than from stored so that it needs no clock but the hour's own: it can
# only overstate billing's share, never hide it.
BILLING_LATENCY_TARGET = timedelta(minutes=90)
# Correctness: an unresolved event (its answer lost, the day's sums could not tell) waits
# for an operator; a day is what they have before it counts against the objective.
UNRESOLVED_GRACE = timedelta(days=1)
# Coverage: the stored hours whose quarantine is compared with their manifest.
COVERAGE_HOURS = 24
# Exports run daily (EXPORT_SCHEDULE, 00:30 UTC): a day plus two hours of slack.
EXPORT_MAX_AGE = timedelta(hours=26)
# A month's statements are final by the 2nd day after it closes (finalise_statements runs
# hourly once the month's last hour is collected).
STATEMENTS_DEADLINE = timedelta(days=2)
# The API: measured by Azure Monitor from usage.api.* (nothing about requests is stored).
API_AVAILABILITY_GOAL = 0.999
API_LATENCY_P95_SECONDS = 2.0


@dataclass(frozen=True)
class Goal:
    objective: Objective
    target: str  # the objective in words, for the screen and the route
    goal: float  # the share of observations that must be met over 24 h and 30 days


GOALS: dict[Objective, Goal] = {
    goal.objective: goal
    for goal in (
        Goal(Objective.FRESHNESS, "every stamp's collectable hours stored within 30 min", 0.99),
        Goal(
            Objective.BILLING_LATENCY,
            "stored hours' events settled within 90 min of being collectable",
            0.99,
        ),
        Goal(
            Objective.CORRECTNESS,
            "latest reconciliation clean; no event unresolved for over a day",
            1.0,
        ),
        Goal(
            Objective.COVERAGE,
            "every subscription that reported usage in the last 24 stored hours has rows in them",
            1.0,
        ),
        Goal(Objective.EXPORTS, "each export's latest run at most 26 h old", 0.99),
        Goal(
            Objective.STATEMENTS, "a month's statements final by the 2nd day after it closes", 1.0
        ),
        Goal(
            Objective.API_AVAILABILITY,
            "99.9% of API answers not 5xx (503 included)",
            API_AVAILABILITY_GOAL,
        ),
        Goal(Objective.API_LATENCY, "p95 API answer within 2 s", 0.99),
    )
}

# Measured by Azure Monitor from the API's metrics; stored state cannot tell.
MEASURED_BY_AZURE_MONITOR = frozenset({Objective.API_AVAILABILITY, Objective.API_LATENCY})


@dataclass(frozen=True)
class Observation:
    """One objective at one moment: its state, the figure that decided it, and why."""

    objective: Objective
    state: State
    value: float | None  # in ``unit``; None when unknown
    unit: str
    detail: str

    @property
    def breached(self) -> bool:
        return self.state is State.BREACHED
