"""Helpers every benchmark shares: medians, peak RSS, and the closing JSON line."""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(operation: Callable[[], object]) -> float:
    """Seconds ``operation`` took (monotonic clock)."""
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return float(statistics.median(values))


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
