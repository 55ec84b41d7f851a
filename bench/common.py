"""Helpers every benchmark shares: medians, peak RSS, and the closing JSON line."""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devstack.fleet import SimulatedFleet
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import SubscriptionState, SubscriptionStore

# Billing resources of several subscriptions each, as a SaaS offer's customers are mapped.
SUBSCRIPTIONS_PER_RESOURCE = 6


def map_to_shared_resources(
    account: StorageAccount, fleet: SimulatedFleet, hour: datetime, *, resource_digits: int
) -> None:
    """The fleet's subscriptions of ``hour`` stored, and each active tenant billed to
    ``saas-NNNN`` (``resource_digits`` wide), :data:`SUBSCRIPTIONS_PER_RESOURCE` to a
    resource, under plan ``p`` (setup of the benchmarks that bill)."""
    account.ensure_tables()
    store = SubscriptionStore(account)
    listed = fleet.subscriptions(hour)
    store.sync(listed, store.all())
    active = sorted(
        s.subscription_id
        for s in listed
        if not s.is_provider and s.state is SubscriptionState.ACTIVE
    )
    for index, subscription_id in enumerate(active):
        number = index // SUBSCRIPTIONS_PER_RESOURCE
        store.set_billing(subscription_id, f"saas-{number:0{resource_digits}d}", "p")


def timed(operation: Callable[[], object]) -> float:
    """Seconds ``operation`` took (monotonic clock)."""
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass(frozen=True)
class Paired:
    """The same work with something off and on, in adjacent pairs of runs."""

    off_seconds: list[float]
    on_seconds: list[float]
    off_cpu: list[float]  # this process's CPU seconds (every thread) per run
    on_cpu: list[float]

    @property
    def wall_ratio(self) -> float:
        return median(self.on_seconds) / median(self.off_seconds)

    @property
    def cpu_ratio(self) -> float:
        return median(self.on_cpu) / median(self.off_cpu)


def paired_runs(
    off: Callable[[], object],
    on: Callable[[], object],
    pairs: int,
    before_each: Callable[[], object] | None = None,
) -> Paired:
    """``pairs`` adjacent pairs of runs, their order alternating (off-on, on-off, ...), so a
    machine whose load drifts moves both sides alike; wall and CPU time of each run.
    ``before_each`` runs untimed before every run."""
    result = Paired([], [], [], [])
    for index in range(pairs):
        for side in ("off", "on") if index % 2 == 0 else ("on", "off"):
            if before_each is not None:
                before_each()
            cpu = time.process_time()
            seconds = timed(off if side == "off" else on)
            cpu = time.process_time() - cpu
            if side == "off":
                result.off_seconds.append(seconds)
                result.off_cpu.append(cpu)
            else:
                result.on_seconds.append(seconds)
                result.on_cpu.append(cpu)
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finish(figures: dict[str, Any]) -> None:
    """Print the figures readably, then as the one JSON object on the last line."""
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"  {name:<{width}}  {shown}")
    print(json.dumps(figures, sort_keys=False))
