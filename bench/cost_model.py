"""The ideal storage request count of each stage ``bench cost`` measures.

Each ideal is what the storage model (Table storage: an entity-group transaction writes up
to 100 entities of one partition, a query page returns up to 1,000 entities; a queue
trigger's host fetches up to ``batchSize`` messages per receive and deletes each) makes the
least a correct implementation of the stage's design can send; ``docs/scale.md`` says for
each why nothing cheaper is correct. Ideals are fractional where a request is shared (the
host's receive serves up to eight executions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ENTITIES_PER_TRANSACTION = 100
ENTITIES_PER_PAGE = 1_000
HOST_BATCH = 8  # host.json's queues.batchSize


def transactions(entities: int) -> int:
    """Entity-group transactions that write ``entities`` of one partition."""
    return -(-entities // ENTITIES_PER_TRANSACTION)


def pages(entities: int) -> int:
    """Query requests that read ``entities`` (at least one: an empty answer is a request)."""
    return max(1, -(-entities // ENTITIES_PER_PAGE))


def trigger(executions: int) -> float:
    """What the Functions host spends on a queue trigger's messages: a receive per batch
    and a delete per message."""
    return executions / HOST_BATCH + executions


@dataclass(frozen=True)
class Ideal:
    requests: float
    why: str  # the terms, with their numbers


# Bookkeeping of one collect_slice execution that no design of the hour close can drop:
# the attempt marker (a rerun must know it is one), the part's done marker, the parts read
# (is the hour finished?), the watermark read and its ETag-guarded move, the summary's
# complete marker, the carry index read (resources billed without usage), the billed mark.
COLLECT_BOOKKEEPING = 8


def collect(
    rows_per_subscription: Iterable[int],
    subscriptions_per_provider: Iterable[int],
    summary_entities: int,
    stored_subscriptions: int,
    index_entries: int,
    work_items: int,
    executions: int,
) -> Ideal:
    rows = list(rows_per_subscription)
    usage = sum(transactions(n) for n in rows)
    manifest = transactions(len(rows))
    activity = sum(transactions(n) for n in subscriptions_per_provider)
    summary = transactions(summary_entities)
    known = pages(stored_subscriptions) + pages(index_entries)
    bookkeeping = COLLECT_BOOKKEEPING * executions
    host = trigger(executions)
    total = usage + manifest + activity + summary + known + bookkeeping + work_items + host
    return Ideal(
        total,
        f"usage {usage} + manifest {manifest} + activity {activity} + summary {summary} "
        f"+ subscriptions read {known} + bookkeeping {bookkeeping} + work items {work_items} "
        f"+ host {host:g}",
    )


def plan(due_hours: int, slices_sent: int) -> Ideal:
    """The watermark read, each due hour's done parts read, one message per slice."""
    total = 1 + due_hours + slices_sent
    return Ideal(total, f"watermark 1 + done parts {due_hours} + messages {slices_sent}")


def daily(manifest_entries: int, hourly_rows: Iterable[int], daily_rows: Iterable[int]) -> Ideal:
    read = pages(manifest_entries)
    rows = sum(pages(n) for n in hourly_rows)
    written = sum(transactions(n) for n in daily_rows)
    return Ideal(
        read + rows + written,
        f"manifest {read} + hourly reads {rows} + daily writes {written}",
    )


def bill(work_items: int, resources: int) -> Ideal:
    """Per item: its summary read and the carry index; per resource: the ledger's pending
    and settled transactions; the host's share."""
    reads = 2 * work_items
    ledger = 2 * resources
    host = trigger(work_items)
    return Ideal(reads + ledger + host, f"reads {reads} + ledger {ledger} + host {host:g}")


# A rating run's constants (docs/scale.md, "What rating costs"): the price sheets, the
# subscriptions, the rating marks, the stamps' watermarks, the hour manifest, the rated mark.
RATE_CONSTANTS = 6


def rate_idle() -> Ideal:
    """A rating run with nothing new: the stamps' watermark, the rating marks, the price
    sheets (a changed sheet re-rates the open months)."""
    return Ideal(3, "watermark 1 + marks 1 + sheets 1")


def rate(subscription_hours: int) -> Ideal:
    """Per subscription with rows in the hour: its rows read, its ledger state read, one
    transaction of its charges, its month's cost digest written; the run's constants."""
    per = 4 * subscription_hours
    return Ideal(per + RATE_CONSTANTS, f"4 x {subscription_hours} + constants {RATE_CONSTANTS}")


# finalise_statements' constants: the marks (rated, finalised), the month's adjustments
# (read, closed), the price sheets, the subscriptions, the charges index, the mark moved.
STATEMENT_CONSTANTS = 8


def statements(frozen: int, subscriptions: int) -> Ideal:
    """Per month entity frozen: its read and its ETag-guarded write; per subscription-month
    its cost digest written again from the frozen ledger."""
    return Ideal(
        2 * frozen + subscriptions + STATEMENT_CONSTANTS,
        f"2 x {frozen} frozen + digests {subscriptions} + constants {STATEMENT_CONSTANTS}",
    )


# An export run's constants: the rated mark, the subscriptions, the price sheets, the
# month's adjustments, the charges index, the container, the manifest, the listing of the
# month's older runs.
EXPORT_CONSTANTS = 8


def export(charged_subscriptions: int, parts: int, removed: int) -> Ideal:
    """Per subscription with charges: one read of its month's day entities."""
    total = charged_subscriptions + parts + removed + EXPORT_CONSTANTS
    return Ideal(
        total,
        f"charge reads {charged_subscriptions} + parts {parts} + older removed {removed} "
        f"+ constants {EXPORT_CONSTANTS}",
    )


def tenant_page(rows: int) -> Ideal:
    """The caller's subscription (scope), the watermark (what is visible), the rows."""
    return Ideal(2 + pages(rows), f"scope 1 + watermark 1 + rows {pages(rows)}")


def provider_page(tenants_on_page: int, days: int) -> Ideal:
    """The target provider, its tenants' index, the watermark, the activity days, one
    range read per tenant on the page."""
    return Ideal(
        3 + days + tenants_on_page,
        f"provider, index, watermark 3 + activity {days} + tenants {tenants_on_page}",
    )


# What one observation reads and keeps, besides the stamps' watermarks, the exports and the
# recent hours' summaries and ledger: the billed mark, unsettled events, quarantine, the
# hourly status entity (read and merged), the latest reconciliation, both queues and their
# poison queues, the statements' closed marker.
OBSERVE_CONSTANTS = 11


def observe(stamps: int, exports: int, recent_summaries: int = 0, recent_ledger: int = 0) -> Ideal:
    """One observation. The recent hours' summaries and ledger entries (the keys owed and
    the keys recorded: an item that has not run yet leaves no other trace) are read in
    pages of 1,000, so this part grows with the fleet's billing resources."""
    per_export = 1 + 3 * exports  # the configurations; per export two listings, a manifest
    window = pages(recent_summaries) + pages(recent_ledger)
    return Ideal(
        stamps + OBSERVE_CONSTANTS + window + per_export,
        f"watermarks {stamps} + constants {OBSERVE_CONSTANTS} + recent hours {window} "
        f"+ exports {per_export}",
    )


def observe_reconcile(
    stamps: int,
    exports: int,
    rows_per_subscription: Iterable[int],
    recent_summaries: int = 0,
    recent_ledger: int = 0,
) -> Ideal:
    """An observation plus the previous day's reconciliation: the day's summaries and
    ledger (one range read each), each subscription's rows of the day, the endpoint's
    answer recorded (the attempt and the result)."""
    base = observe(stamps, exports, recent_summaries, recent_ledger)
    rows = sum(pages(n) for n in rows_per_subscription)
    total = base.requests + 2 + rows + 2
    return Ideal(total, f"{base.why} + summaries, ledger 2 + rows {rows} + records 2")


def cost_query(subscriptions: int, months: int, provider: bool) -> Ideal:
    """One page of the Cost Management Query route: the caller's scope (the target
    subscription), the price sheets (the currency), per month read the adjustments; a
    tenant's scope one range read of its day entities across the months per subscription;
    a provider's scope its tenants check (one query: ``tenants_among``'s cheaper read) and,
    per month, the charges index (which tenants have charges) and the cost digests of its
    tenants with charges (``shared.rating.cost_digest``, a page per 1,000)."""
    if not provider:
        total = 1 + 1 + months + subscriptions
        return Ideal(total, f"scope 1 + prices 1 + adjustments {months} + charges {subscriptions}")
    scope = 1 + 1 + months
    digests = months * pages(subscriptions)
    return Ideal(
        scope + 1 + months + digests,
        f"scope {scope} + prices 1 + adjustments {months} + digests {digests}",
    )
