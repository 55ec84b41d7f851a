"""Reading one page of usage for a caller's scope: partition-range queries, nothing more.

Invariant 6 (cost follows the answer): the scope holds only subscriptions that may have
rows in the window (``resolve_scope`` asks the activity index for a provider's tenants);
for each, in sorted order,
one PartitionKey-range query on that subscription's own table (``shared.storage.usage_rows``),
limited to the window's partitions and to the frozen ``bound`` (the watermark when paging
started, so an hour still being written is never visible and later pages see what the
first saw). Filters are the SDK's parameterised ones; no caller text is formatted into one.

Two row shapes:

- detailed (``showDetails=true``): stored entities as they are, in storage order
  (subscription, PartitionKey, RowKey). The cursor is the last row returned, and the next
  query starts strictly after it, so a page costs the rows it returns.
- collapsed (``showDetails=false``): one row per (subscription, meter, usage window) within
  the window, quantities summed with ``math.fsum``. One collapsed row draws on rows of many
  reported hours, so each subscription's window is read whole and collapsed before paging;
  the cursor is the last collapsed key, and a collapsed row is emitted exactly once, on one
  page, never split. That costs a re-read of the subscription's window per page: the price
  of correct sums.

- daily over several reported days (detailed): a late row can put the same (usage day,
  meter, resource) into two reported days' partitions; the spec wants one daily row summed
  over the queried reported days. So, like collapsed rows, a subscription's window is read
  whole and merged by RowKey (the instance data of the newest reported day kept), and the
  cursor is the last RowKey. Daily rows are few, so the re-read is cheap.

A page stops at ``page_size`` rows. It says there is more only if there is: a row left in
the current query, or (at a subscription boundary) a row in a later subscription of the
scope, found by a ``top 1`` probe. A continuation from storage alone does not prove a row:
Azure may end a full page with continuation headers and nothing after them ("it is possible
for a query to return no results but to still return a continuation header", *Query Timeout
and Pagination*), so a page that fills exactly where storage's page ends probes for one row
after its last before it carries a ``nextLink`` (never a link to an empty page).

Every storage call goes through ``call_with_retry``; a read that still fails raises
``TransientError`` and the whole page is refused (never a short page presented as complete).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from azure.core.exceptions import ResourceNotFoundError

from shared.core.hours import DAY, HOUR, as_utc, floor_day
from shared.core.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
from shared.query.arguments import Granularity, UsageQuery
from shared.query.caller_scope import CallerScope
from shared.query.continuation import Cursor, PageState
from shared.storage.account import StorageAccount
from shared.storage.usage_rows import Entity, UsageRow, usage_table_name

PAGE_SIZE: Final = 1000
# Keys are spelled with four-digit years; earlier than any usage, and safe to format.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_WINDOW = "PartitionKey ge @first and PartitionKey le @last"
# What a detailed row needs; leaving out Timestamp spares a third of the datetime parsing.
DETAILED_ROW_FIELDS = [
    "PartitionKey",
    "RowKey",
    "SubscriptionId",
    "MeterId",
    "UsageStartTime",
    "UsageEndTime",
    "Quantity",
    "ResourceUri",
    "Location",
    "Tags",
    "AdditionalInfo",
]
# The SDK substitutes @names split on whitespace, so parentheses stand apart from them.
_RESUME = (
    "PartitionKey le @last and "
    "( ( PartitionKey eq @cursor_pk and RowKey gt @cursor_rk ) or PartitionKey gt @cursor_pk )"
)


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A detailed row: a stored entity of one subscription, with its keys."""

    subscription_id: str
    partition_key: str
    row_key: str
    row: UsageRow


@dataclass(frozen=True, slots=True)
class CollapsedRow:
    """The summed usage of one (subscription, meter, usage window)."""

    subscription_id: str
    key: str
    meter_id: str
    usage_start: datetime
    usage_end: datetime
    quantity: float


@dataclass(frozen=True, slots=True)
class UsagePage:
    rows: Sequence[StoredRow | CollapsedRow]
    next_cursor: Cursor | None  # None: this is the last page


def partition_key(granularity: Granularity, moment: datetime) -> str:
    """The PartitionKey of the reported hour (or day) starting at ``moment``."""
    moment = max(as_utc(moment), _EARLIEST)
    if granularity is Granularity.DAILY:
        return f"D{moment:%Y%m%d}"
    return f"H{moment:%Y%m%d%H}"


def visible_bound(granularity: Granularity, watermark: datetime | None) -> str:
    """The last partition a query may read: reported hours up to the watermark; reported
    days whose 23:00 hour is at or before it (their daily rows are complete). "" if none."""
    if watermark is None:
        return ""
    if granularity is Granularity.HOURLY:
        return partition_key(granularity, watermark)
    return partition_key(granularity, floor_day(as_utc(watermark) + HOUR) - DAY)


def incomplete_day(query: UsageQuery, watermark: datetime | None) -> datetime | None:
    """The reported day inside a daily ``query``'s window that is collected only in part (the
    watermark stands before its 23:00 hour), or None.

    Daily rows are written when a day's last hour is, so such a day has hourly rows (which
    hourly queries and statements count) and no daily ones: a daily answer would leave it
    out in silence. ``UsageApi`` refuses the query instead, saying which day and why.
    """
    if query.granularity is not Granularity.DAILY or watermark is None:
        return None
    moment = as_utc(watermark)
    if moment.hour == 23:
        return None
    day = floor_day(moment)
    return day if as_utc(query.start) <= day < as_utc(query.end) else None


class UsageReader:
    """Reads pages of usage rows from the per-subscription tables."""

    def __init__(
        self,
        account: StorageAccount,
        *,
        page_size: int = PAGE_SIZE,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page size must be 1..{PAGE_SIZE}")
        self._account = account
        self._page_size = page_size
        self._policy = policy

    def read_page(self, scope: CallerScope, query: UsageQuery, state: PageState) -> UsagePage:
        """The page of ``query`` within ``scope`` that starts after ``state.cursor``."""
        if not state.bound:
            return UsagePage([], None)
        first = partition_key(query.granularity, query.start)
        last = min(
            partition_key(query.granularity, as_utc(query.end) - query.granularity.bucket),
            state.bound,
        )
        if last < first:
            return UsagePage([], None)
        cursor = state.cursor
        subscriptions = [
            subscription_id
            for subscription_id in scope.subscription_ids
            if cursor is None or subscription_id >= cursor.subscription_id
        ]
        if not query.show_details:
            return self._collapsed(subscriptions, first, last, cursor)
        if query.granularity is Granularity.DAILY and first != last:
            return self._merged_days(subscriptions, first, last, cursor)
        return self._detailed(subscriptions, first, last, cursor)

    # --- detailed ----------------------------------------------------------------------

    def _detailed(
        self, subscriptions: list[str], first: str, last: str, cursor: Cursor | None
    ) -> UsagePage:
        rows: list[StoredRow] = []
        for index, subscription_id in enumerate(subscriptions):
            need = self._page_size - len(rows)
            if need == 0:
                more = self._any_rows(subscriptions[index:], first, last)
                return UsagePage(rows, _cursor_of(rows[-1]) if more else None)
            if cursor is not None and cursor.subscription_id == subscription_id:
                condition = _RESUME
                parameters = {
                    "last": last,
                    "cursor_pk": cursor.partition_key,
                    "cursor_rk": cursor.row_key,
                }
            else:
                condition, parameters = _WINDOW, {"first": first, "last": last}
            entities, seen_more = self._query(
                subscription_id, condition, parameters, need, select=DETAILED_ROW_FIELDS
            )
            # None: storage's page ended with ours; only a row after it means there is more.
            more = (
                self._any_after(subscription_id, entities[-1], last)
                if seen_more is None
                else seen_more
            )
            rows.extend(
                StoredRow(
                    subscription_id,
                    entity["PartitionKey"],
                    entity["RowKey"],
                    UsageRow.from_entity(entity),
                )
                for entity in entities
            )
            if more:
                return UsagePage(rows, _cursor_of(rows[-1]))
        return UsagePage(rows, None)

    def _any_after(self, subscription_id: str, entity: Entity, last: str) -> bool:
        """True if the subscription has a row after ``entity`` up to partition ``last``."""
        after = {"last": last, "cursor_pk": entity["PartitionKey"], "cursor_rk": entity["RowKey"]}
        entities, _ = self._query(subscription_id, _RESUME, after, 1, select=["RowKey"])
        return bool(entities)

    def _any_rows(self, subscriptions: list[str], first: str, last: str) -> bool:
        """True if any of ``subscriptions`` has a row in the window (``top 1`` probes)."""
        for subscription_id in subscriptions:
            entities, _ = self._query(
                subscription_id, _WINDOW, {"first": first, "last": last}, 1, select=["RowKey"]
            )
            if entities:
                return True
        return False

    # --- whole windows: daily rows merged over reported days, and collapsed rows -------

    def _merged_days(
        self, subscriptions: list[str], first: str, last: str, cursor: Cursor | None
    ) -> UsagePage:
        def merged(subscription_id: str) -> list[StoredRow]:
            entities, _ = self._query(
                subscription_id,
                _WINDOW,
                {"first": first, "last": last},
                None,
                select=DETAILED_ROW_FIELDS,
            )
            return merge_daily_rows(subscription_id, entities)

        return self._whole_windows(subscriptions, first, last, cursor, merged)

    def _collapsed(
        self, subscriptions: list[str], first: str, last: str, cursor: Cursor | None
    ) -> UsagePage:
        return self._whole_windows(
            subscriptions, first, last, cursor, lambda sid: self._collapse(sid, first, last)
        )

    def _whole_windows(
        self,
        subscriptions: list[str],
        first: str,
        last: str,
        cursor: Cursor | None,
        rows_of: Callable[[str], Sequence[StoredRow | CollapsedRow]],
    ) -> UsagePage:
        """A page of rows that each draw on a subscription's whole window: ``rows_of`` gives
        them sorted by their cursor key, and a row is emitted once, never split."""
        rows: list[StoredRow | CollapsedRow] = []
        for index, subscription_id in enumerate(subscriptions):
            need = self._page_size - len(rows)
            if need == 0:
                more = self._any_rows(subscriptions[index:], first, last)
                return UsagePage(rows, _cursor_of(rows[-1]) if more else None)
            window = list(rows_of(subscription_id))
            if cursor is not None and cursor.subscription_id == subscription_id:
                window = [row for row in window if _cursor_of(row).row_key > cursor.row_key]
            rows.extend(window[:need])
            if len(window) > need:
                return UsagePage(rows, _cursor_of(rows[-1]))
        return UsagePage(rows, None)

    def _collapse(self, subscription_id: str, first: str, last: str) -> list[CollapsedRow]:
        """One subscription's window, collapsed and sorted by key."""
        entities, _ = self._query(
            subscription_id,
            _WINDOW,
            {"first": first, "last": last},
            None,
            select=["MeterId", "UsageStartTime", "UsageEndTime", "Quantity"],
        )
        quantities: dict[str, list[float]] = defaultdict(list)
        heads: dict[str, tuple[str, datetime, datetime]] = {}
        for entity in entities:
            start, end = as_utc(entity["UsageStartTime"]), as_utc(entity["UsageEndTime"])
            meter_id: str = entity["MeterId"]
            key = f"{start:%Y%m%d%H}_{end:%Y%m%d%H}_{meter_id.lower()}"
            quantities[key].append(float(entity["Quantity"]))
            heads.setdefault(key, (meter_id, start, end))
        return [
            CollapsedRow(
                subscription_id=subscription_id,
                key=key,
                meter_id=heads[key][0],
                usage_start=heads[key][1],
                usage_end=heads[key][2],
                quantity=math.fsum(quantities[key]),
            )
            for key in sorted(quantities)
        ]

    # --- storage -----------------------------------------------------------------------

    def _query(
        self,
        subscription_id: str,
        condition: str,
        parameters: dict[str, Any],
        limit: int | None,
        select: list[str] | None = None,
    ) -> tuple[list[Entity], bool | None]:
        """Up to ``limit`` entities (all if None) and whether more match: True (a further
        entity was seen), False, or None when ``limit`` was reached exactly where storage's
        page ended with a continuation (which may lead to nothing); retried whole.

        A subscription without a table has no usage: no rows.
        """
        table_name = usage_table_name(self._account.settings.table_prefix, subscription_id)

        def run() -> tuple[list[Entity], bool | None]:
            table = self._account.table_named(table_name)
            pages = table.query_entities(
                condition,
                parameters=parameters,
                results_per_page=PAGE_SIZE if limit is None else min(limit, PAGE_SIZE),
                select=select,
            ).by_page()
            found: list[Entity] = []
            try:
                for page in pages:
                    for entity in page:
                        if limit is not None and len(found) == limit:
                            return found, True
                        found.append(entity)
                    if limit is not None and len(found) == limit:
                        # by_page() is typed as a plain iterator; it is azure.core's
                        # PageIterator, whose continuation_token says storage may have more.
                        token = getattr(pages, "continuation_token", None)
                        return found, None if token is not None else False
            except ResourceNotFoundError:
                return [], False
            return found, False

        return call_with_retry(run, what=f"read usage of {table_name}", policy=self._policy)


def merge_daily_rows(subscription_id: str, entities: Sequence[Entity]) -> list[StoredRow]:
    """Daily entities of several reported days as one row per RowKey (usage day, meter,
    resource), quantities summed with ``math.fsum``, instance data of the newest reported
    day; sorted by RowKey. The rows carry no PartitionKey: they span several."""
    groups: dict[str, list[Entity]] = defaultdict(list)
    for entity in entities:
        groups[entity["RowKey"]].append(entity)
    merged = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda entity: str(entity["PartitionKey"]))
        newest = UsageRow.from_entity(group[-1])
        quantity = math.fsum(float(entity["Quantity"]) for entity in group)
        merged.append(StoredRow(subscription_id, "", key, replace(newest, quantity=quantity)))
    return merged


def _cursor_of(row: StoredRow | CollapsedRow) -> Cursor:
    if isinstance(row, StoredRow):
        return Cursor(row.subscription_id, row.partition_key, row.row_key)
    return Cursor(row.subscription_id, "", row.key)
