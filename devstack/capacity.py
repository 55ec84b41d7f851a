"""What the local Azurite holds, and the catch-up window that fits in it.

Azurite keeps its tables in LokiJS: every entity is a JavaScript object on Node's heap and,
with data kept on disk (the run command's ``.local/azurite``), the whole table store is
saved every 5 seconds as ONE JSON string (``JSON.stringify`` of the database, written to
one file). That gives the local stack two walls, measured here (docs/scale.md, "The local
stack's limit"; ``python -m bench azurite``):

- **The longest string.** V8 refuses a string longer than ``MAX_STRING_LENGTH`` (2**29 - 24
  characters in Node 20, asked of Node at run time). At ``CHARS_PER_ENTITY`` characters an
  entity, the table store can be saved up to about 497,000 entities, whatever the heap:
  past that, ``JSON.stringify`` aborts Node (SIGTRAP, "trap int3").
- **The heap.** Azurite needs ``PEAK_MB_PER_100K`` MB per 100,000 entities at the peak of
  loading or saving the store (the string and its parse; 135-330 MB at rest): Node's
  default old-space limit (4,144 MB on a 24 GB machine) holds a little more than the string
  lets through, a smaller machine's less. The run gives Node ``HEAP_SHARE`` of the memory
  available at start, up to ``HEAP_CEILING_MB``; below ~7 GB available the heap is the wall.

A catch-up may fill ``FILL`` of the lower wall: the stack goes on collecting every hour
while it serves. What a fleet writes is counted per directory tenant of the simulated fleet
(about 1.8 subscriptions each), measured from the table store of a real run.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# --- measured (docs/scale.md, "The local stack's limit", says how) ------------------------

# V8's longest string in Node 20 (``require("buffer").constants.MAX_STRING_LENGTH``); Node
# is asked at run time, this is what it answered here.
NODE_MAX_STRING_LENGTH = 2**29 - 24
# Characters of the saved table store per entity: 1,050-1,056 in the mix a run writes
# (1,065 for a usage row, 500-1,000 for the indexes, summaries and ledger), rounded up.
CHARS_PER_ENTITY = 1_080
# Entities a directory tenant (~1.8 subscriptions with usage) adds per reported hour, per
# UTC day that closes in the window and once. Counted in the store of a 300-tenant run
# (453,617 entities, 20 hours, one day closed): 69.7 usage rows and 1.8 manifest entries a
# tenant-hour; 61.3 daily rows a closed day; 14.4 subscription and index entries and 3.6
# activity entries (two days) once.
ENTITIES_PER_TENANT_HOUR = 72.0
ENTITIES_PER_TENANT_DAY = 66.0
ENTITIES_PER_TENANT = 18.0
# Azurite's resident memory empty, and what 100,000 entities add to its peak, the load or
# save of the store (the string and its parse): 548-584 filling (python -m bench azurite),
# 584 in the 300-tenant run, 640 reloading 420,576 entities; the highest is used. At rest
# they take 135-330 MB, as V8 last collected.
AZURITE_BASE_MB = 120
PEAK_MB_PER_100K = 640

# --- chosen -------------------------------------------------------------------------------

# Share of the lower wall a catch-up may fill (the rest is for the hours served after it).
FILL = 0.9
# Node's heap: this share of the memory available at start, within these bounds (the
# ceiling is twice what the string wall lets the store reach: more would never be used).
HEAP_SHARE = 0.5
HEAP_FLOOR_MB = 1_024
HEAP_CEILING_MB = 8_192
# What ``--hours`` is when not given.
DEFAULT_HOURS = 24
# App settings the run command gives its host. One Azurite thread serves the whole stack:
# host.json's concurrency (8 slices at once, 4 more fetched, 8 partitions each: up to 96
# transactions in flight) only queues in it, and near the wall, where each save blocks it
# for seconds, the queue outgrew the storage client's 30 s read timeout: 15 of the first
# 19 slices of a 300-tenant catch-up failed that way and waited 5 minutes to be retried.
# Locally one worker writes about as fast as four (docs/scale.md, "Fan-out"), so: 2 slices
# at once and 1 more fetched, 4 partitions each (12 transactions in flight at most).
LOCAL_CONCURRENCY = {
    "AzureFunctionsJobHost__extensions__queues__batchSize": "2",
    "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": "1",
    "STORAGE_WRITE_PARALLELISM": "4",
}


def available_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Memory the machine can give a new process now (``MemAvailable``), in MiB; the
    physical memory where ``/proc/meminfo`` is not there."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20


def node_heap_mb(available_mb: int) -> int:
    """The old-space limit to give Azurite's Node: ``HEAP_SHARE`` of what is available."""
    return int(min(HEAP_CEILING_MB, max(HEAP_FLOOR_MB, available_mb * HEAP_SHARE)))


def node_max_string_length(node: str = "node") -> int:
    """V8's longest string, as the Node that runs Azurite says it (the measured value if
    Node cannot be asked)."""
    try:
        answer = subprocess.run(  # noqa: S603  # fixed argv, no shell
            [node, "-p", "require('buffer').constants.MAX_STRING_LENGTH"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return int(answer.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return NODE_MAX_STRING_LENGTH


@dataclass(frozen=True)
class StoreLimit:
    """The most table entities the local Azurite holds, and which wall sets it."""

    entities: int
    heap_mb: int
    max_string_length: int

    @property
    def string_entities(self) -> int:
        return self.max_string_length // CHARS_PER_ENTITY

    @property
    def heap_entities(self) -> int:
        return int((self.heap_mb - AZURITE_BASE_MB) / PEAK_MB_PER_100K * 100_000)

    @property
    def wall(self) -> str:
        """What happens at ``entities``, in a few words."""
        if self.string_entities <= self.heap_entities:
            return (
                f"its table store passes V8's longest string, {self.max_string_length:,} characters"
            )
        return f"Node's heap of {self.heap_mb:,} MB is full"


def store_limit(heap_mb: int, max_string_length: int) -> StoreLimit:
    """The lower of the two walls for this heap and this Node."""
    by_string = max_string_length // CHARS_PER_ENTITY
    by_heap = int((heap_mb - AZURITE_BASE_MB) / PEAK_MB_PER_100K * 100_000)
    return StoreLimit(max(0, min(by_string, by_heap)), heap_mb, max_string_length)


def days_closed(last: datetime, hours: int) -> int:
    """UTC days that close within the ``hours`` reported hours ending with ``last`` (their
    23:00 hour is in the window, so collecting it writes the day's daily rows)."""
    since_last_closing = (last.hour + 1) % 24  # hours from the newest 23:00 back to ``last``
    if since_last_closing >= hours:
        return 0
    return 1 + (hours - 1 - since_last_closing) // 24


def catch_up_entities(tenants: int, hours: int, last: datetime) -> int:
    """Table entities a catch-up of ``hours`` ending with ``last`` writes for ``tenants``
    directory tenants (every stamp's together)."""
    per_tenant = (
        ENTITIES_PER_TENANT_HOUR * hours
        + ENTITIES_PER_TENANT_DAY * days_closed(last, hours)
        + ENTITIES_PER_TENANT
    )
    return math.ceil(tenants * per_tenant)


class DoesNotFitError(Exception):
    """The fleet and window asked for would pass what the local Azurite holds; the message
    names the largest that fits."""


@dataclass(frozen=True)
class CatchUp:
    """The catch-up window the run uses, and the one line that says why."""

    hours: int
    entities: int
    line: str


def plan_catch_up(
    *,
    tenants: int,
    hours: int | None,
    last: datetime,
    limit: StoreLimit,
    stamps: int = 1,
    stored_entities: int = 0,
) -> CatchUp:
    """The catch-up of ``stamps`` fleets of ``tenants`` directory tenants that fits beside
    what is stored.

    ``hours`` None asks for ``DEFAULT_HOURS``, narrowed to what fits; hours given are kept
    or refused (``DoesNotFitError``, naming the largest ``--hours`` and ``--tenants`` that
    fit), as is a fleet that does not fit even one hour.
    """
    room = int(limit.entities * FILL) - stored_entities
    wanted = DEFAULT_HOURS if hours is None else hours
    needed = catch_up_entities(tenants * stamps, wanted, last)
    fleet = f"{tenants:,} tenants" + (f" x {stamps} stamps" if stamps > 1 else "")
    stored = f" beside the ~{stored_entities:,} stored" if stored_entities else ""
    holds = (
        f"the local Azurite holds ~{int(limit.entities * FILL):,} ({FILL:.0%} of the "
        f"~{limit.entities:,} at which {limit.wall})"
    )
    if needed <= room:
        line = (
            f"Catch-up: {hours_of(wanted)} of {fleet}, ~{needed:,} table entities{stored}; {holds}"
        )
        return CatchUp(
            wanted, needed, line + serving(tenants * stamps, needed, stored_entities, limit)
        )
    fitting_hours = max(
        (h for h in range(1, wanted) if catch_up_entities(tenants * stamps, h, last) <= room),
        default=0,
    )
    if hours is None and fitting_hours:
        narrowed = catch_up_entities(tenants * stamps, fitting_hours, last)
        line = (
            f"Catch-up narrowed to {hours_of(fitting_hours)}: {hours_of(wanted)} of {fleet} need "
            f"~{needed:,} table entities{stored}, {holds}"
        )
        return CatchUp(
            fitting_hours,
            narrowed,
            line + serving(tenants * stamps, narrowed, stored_entities, limit),
        )
    options = [f"--hours {fitting_hours}"] if fitting_hours else []
    fitting_tenants = largest_fleet(wanted, last, room) // stamps
    if fitting_tenants:
        options.append(f"--tenants {fitting_tenants:,} for {wanted} hours")
    largest = " or ".join(options) if options else "nothing"
    fresh = "; --fresh starts empty" if stored_entities else ""
    raise DoesNotFitError(
        f"{hours_of(wanted)} of {fleet} need ~{needed:,} table entities{stored}, and {holds}; "
        f"the largest that fits is {largest}{fresh}."
    )


def serving(tenants: int, caught_up: int, stored: int, limit: StoreLimit) -> str:
    """The end of the plan's line: how long the stack can serve (collecting every hour)
    before its store reaches the wall."""
    per_hour = tenants * ENTITIES_PER_TENANT_HOUR
    hours = int((limit.entities - stored - caught_up) / per_hour)
    return f"; serving adds ~{per_hour:,.0f} an hour: room for ~{hours_of(hours)}."


def hours_of(count: int) -> str:
    return f"{count:,} hour" if count == 1 else f"{count:,} hours"


def largest_fleet(hours: int, last: datetime, room: int) -> int:
    """The most directory tenants (all stamps together) whose catch-up of ``hours`` fits
    in ``room`` entities."""
    tenants = max(0, int(room / (catch_up_entities(1_000, hours, last) / 1_000)))
    while tenants > 0 and catch_up_entities(tenants, hours, last) > room:
        tenants -= 1
    return tenants
