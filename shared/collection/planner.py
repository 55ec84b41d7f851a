"""Planning collection: the timer's share of the fan-out.

Once an hour ``collect_usage`` asks, for every usage source (stamp), which reported hours are
due (finished by the source, after its watermark) and sends one collection work item per
slice of each due hour that is not durable yet (``shared.collection.slices``); the
``collect_slice`` queue trigger does the work on however many instances the scale
controller runs. An hour whose slices are all durable but which nobody closed (a worker
stopped between its last write and the close) is closed here, so a crash never strands it.

Re-planning is how failures heal: a slice whose message ended in the poison queue, or whose
worker died, is sent again by the next run, while slices already durable are not. A
message that arrives for a slice already durable does nothing (``collect_slice`` checks), so
an overlap between runs costs a read, not a second collection. At most
:data:`HOURS_PER_RUN` hours per source are planned per run: a long catch-up is spread over
runs instead of flooding the queue with work the next run would send again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from shared.collection.collector import Collector
from shared.collection.slices import CollectionSlice
from shared.storage.queues import send_text
from shared.storage.watermark import Watermark

log = logging.getLogger(__name__)

HOURS_PER_RUN = 48


@dataclass
class Plan:
    """What one planning run did for one source."""

    source: str
    due_hours: int = 0
    sent: list[CollectionSlice] = field(default_factory=list)
    closed_hours: int = 0

    def summary_line(self) -> str:
        return (
            f"collect_usage: source {self.source}: {self.due_hours} hours due, "
            f"{len(self.sent)} slices sent, {self.closed_hours} hours closed"
        )


def plan_source(collector: Collector, now: datetime) -> Plan:
    """Send the work items of ``collector``'s source's due hours; close finished ones."""
    due = collector.due_hours(now)
    plan = Plan(collector.source_name, due_hours=len(due))
    client = collector.account.queue(collector.settings.collect_queue_name)
    watermark = Watermark(collector.account, collector.source_name)
    count = collector.settings.collect_slices
    for hour in due[:HOURS_PER_RUN]:
        done = watermark.done_parts(hour)
        pending = [
            work
            for index in range(count)
            if (work := CollectionSlice(collector.source_name, hour, index, count)).part not in done
        ]
        if not pending:
            collector.closer.close(hour)
            plan.closed_hours += 1
            continue
        for work in pending:
            send_text(
                client,
                work.to_message_text(),
                what=f"send collection work item {work.source} {work.part}",
            )
            plan.sent.append(work)
    return plan
