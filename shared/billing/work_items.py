"""Billing work items: small queue messages that claim one reported hour's stored usage.

A work item names a reported hour and the billing resources whose events it covers:
``{"v": 1, "hour": "YYYYMMDDHH", "billingResourceIds": [...]}``, sent as base64 text as the
Functions queue trigger expects. It is a claim on stored rows, never the rows: the rows of
a closed hour never change (invariant 3), so the item stays valid however late it runs.

Why whole resources: an event's quantity is the sum over every subscription billed to its
resource in that hour, so one resource's subscriptions are never split over two items
(two items would post partial sums under one key, and the second would be a Duplicate).

Why several resources per item: the endpoint takes 25 events per call, and a resource has
about as many events per hour as it has chargeable dimensions (tens). One item per resource
would post a half-empty last batch per resource; packing resources into one item fills
batches across them (the benchmark measures events per call). Packing stops at
``REPORT_SUBSCRIPTIONS_PER_MESSAGE`` subscriptions (one point query each) or
``MAX_TEXT_CHARS`` of JSON, whichever first, so an item's work stays well inside a
function run; a resource with more subscriptions than that goes alone in its item (its
reads run in parallel: at ~20 ms a query and 8 at once, 10,000 subscriptions take ~25 s of
a 10-minute run), so the POST of one event key is never split.

Resources with usage waiting to be carried forward (the ledger's carry index) are added to
every hour's items even when they have no usage of their own in that hour: expired usage is
folded into a resource's next sendable event, and a resource whose subscriptions went quiet
would otherwise never have one.

Enqueuing is at-least-once and may repeat (the collector redoes an hour whose watermark
did not move): the ledger makes a repeated item change nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from shared.billing.ledger import CarryIndex
from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.hours import hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.storage.account import StorageAccount
from shared.storage.hour_manifest import HourEntry, entry_target
from shared.storage.hour_summary import resource_digest
from shared.storage.queues import encode_body, send_text

VERSION = 1
# JSON characters per item; base64 makes it 4/3 larger, well under the 64 KiB queue limit.
MAX_TEXT_CHARS = 32_000
# The longest a queue message may stay invisible (Azure Queue storage: 7 days), less a margin.
MAX_DEFERRAL = timedelta(days=7) - timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """Report these billing resources' events of this reported hour."""

    hour: datetime
    billing_resource_ids: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": VERSION,
                "hour": hour_key(self.hour),
                "billingResourceIds": list(self.billing_resource_ids),
            },
            separators=(",", ":"),
        )

    def to_message_text(self) -> str:
        """The queue message text (base64 of the JSON)."""
        return encode_body(self.to_json())

    @classmethod
    def from_body(cls, body: bytes | str) -> WorkItem:
        """Parse a decoded message body; BadInputError names what is wrong."""
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            document = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            raise BadInputError("work item is not JSON text", code="InvalidWorkItem") from None
        if not isinstance(document, dict) or document.get("v") != VERSION:
            raise BadInputError(
                f"work item must be a JSON object with v={VERSION}", code="InvalidWorkItem"
            )
        resources = document.get("billingResourceIds")
        if (
            not isinstance(resources, list)
            or not resources
            or not all(isinstance(r, str) and r for r in resources)
        ):
            raise BadInputError(
                "work item billingResourceIds must be a non-empty list of ids",
                code="InvalidWorkItem",
            )
        try:
            hour = parse_hour_key(str(document.get("hour")))
        except ValueError:
            raise BadInputError(
                "work item hour must be YYYYMMDDHH", code="InvalidWorkItem"
            ) from None
        return cls(hour, tuple(resources))


def plan_work_items(
    settings: Settings,
    hour: datetime,
    entries: Sequence[HourEntry],
    carrying: Iterable[str] = (),
) -> list[WorkItem]:
    """The items covering every billing resource with usage in ``hour``, whole resources,
    and every resource of ``carrying`` (usage waiting to be carried) even without any.

    Resources are taken in the order of their keys in the hour summary (their digest), so
    each item's resources are neighbours there and its summary read is one range per part
    (``read_resource_sums``)."""
    per_message = settings.report_subscriptions_per_message
    subscriptions: dict[str, int] = defaultdict(int)
    for entry in entries:
        subscriptions[entry_target(settings, entry).resource_id] += 1
    for resource_id in carrying:
        subscriptions[resource_id] += 0  # listed; no subscription to read
    items: list[WorkItem] = []
    batch: list[str] = []
    batch_subscriptions = 0
    batch_chars = 0
    for resource_id in sorted(subscriptions, key=resource_digest):
        count = subscriptions[resource_id]
        chars = len(json.dumps(resource_id)) + 1
        if batch and (
            batch_subscriptions + count > per_message or batch_chars + chars > MAX_TEXT_CHARS
        ):
            items.append(WorkItem(hour, tuple(batch)))
            batch, batch_subscriptions, batch_chars = [], 0, 0
        batch.append(resource_id)
        batch_subscriptions += count
        batch_chars += chars
    if batch:
        items.append(WorkItem(hour, tuple(batch)))
    return items


def work_item_enqueuer(
    settings: Settings, account: StorageAccount | None = None
) -> Callable[[datetime, list[HourEntry]], None]:
    """The collector's ``after_hour_written`` callback: enqueue the hour's work items.

    Each hour also reads the ledger's carry index (one query), so resources with expired
    usage waiting are billed in the hour's items whether or not they have usage in it.
    Raises (TransientError after retries) if the queue or the index read fails, so the
    watermark stays and the hour is redone: items are enqueued before the watermark moves
    (invariant 2).
    """
    account = account or StorageAccount(settings)
    client = account.queue(settings.usage_queue_name)
    carry_index = CarryIndex(account)

    def enqueue(hour: datetime, entries: list[HourEntry]) -> None:
        for item in plan_work_items(settings, hour, entries, carry_index.resources()):
            send_text(client, item.to_message_text(), what=f"enqueue work item {hour_key(hour)}")

    return enqueue


def work_item_deferrer(
    settings: Settings, account: StorageAccount | None = None
) -> Callable[[WorkItem, timedelta], None]:
    """The reporter's ``defer``: send an item whose events wait for their day's rows back
    to the billing queue, invisible for the delay (at most :data:`MAX_DEFERRAL`; the item
    then defers itself again), and never expiring meanwhile: a message that outlived its
    time-to-live before it was seen would silently drop the wait. A new message, so the
    waiting never counts toward ``maxDequeueCount``; raises (after retries) if the send
    fails, and the delivery is then retried as any failed one."""
    client = (account or StorageAccount(settings)).queue(settings.usage_queue_name)

    def defer(item: WorkItem, delay: timedelta) -> None:
        seconds = int(min(max(delay, timedelta(seconds=1)), MAX_DEFERRAL).total_seconds())
        call_with_retry(
            partial(
                client.send_message,
                item.to_message_text(),
                visibility_timeout=seconds,
                time_to_live=-1,
            ),
            what=f"defer work item {hour_key(item.hour)}",
        )

    return defer
