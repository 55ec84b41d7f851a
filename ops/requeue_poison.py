"""Move the billing work items the Functions host set aside in the poison queue
(``<USAGE_QUEUE_NAME>-poison``) back to the queue, after the cause is fixed. The text of each
message moves unchanged; replaying an item is harmless (the billing ledger skips events
already settled)."""

from __future__ import annotations

import argparse
from functools import partial

from azure.storage.queue import QueueClient, QueueMessage

from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.core.retry import call_with_retry
from shared.storage.queues import POISON_SUFFIX, ensure_queue, queue_client

HELP = "re-enqueue poison billing work items after a fix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max", type=int, default=None, metavar="N", help="move at most N messages (default: all)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.max is not None and args.max < 1:
        raise BadInputError("--max must be >= 1")
    moved = requeue_poison(settings, limit=args.max)
    name = settings.usage_queue_name
    print(f"moved {moved} message(s) from {name}{POISON_SUFFIX} to {name}")
    return 0


def requeue_poison(settings: Settings, *, limit: int | None = None) -> int:
    """Send each poison message to the queue, then delete it (at least once: a crash in
    between leaves a duplicate, which the ledger makes harmless)."""
    target = queue_client(settings, settings.usage_queue_name)
    poison = queue_client(settings, settings.usage_queue_name + POISON_SUFFIX)
    ensure_queue(target)
    ensure_queue(poison)
    moved = 0
    while limit is None or moved < limit:
        want = 32 if limit is None else min(32, limit - moved)
        batch: list[QueueMessage] = call_with_retry(
            partial(_receive, poison, want), what="read poison queue"
        )
        if not batch:
            break
        for message in batch:
            call_with_retry(partial(target.send_message, message.content), what="requeue")
            call_with_retry(partial(poison.delete_message, message), what="delete poison")
            moved += 1
    return moved


def _receive(client: QueueClient, count: int) -> list[QueueMessage]:
    return list(client.receive_messages(messages_per_page=count, max_messages=count))
