"""The ledger of rated charges in Table storage: where rating writes and every surface reads.

**Layout.** A subscription's charges live in its own usage table
(``shared.storage.usage_rows``: ``{prefix}u{subscription}``, beside its rows, so a tenant's
data stays one unit), one partition per statement month, ``C{YYYYMM}``:

- ``M_{level}``: the month's statement-line state (:class:`~shared.rating.charges.MonthCharges`):
  lines, tier counters, rows, the last reported hour rated (``Through``), the fingerprint of
  the prices it was rated with, and ``Total``/``ListTotal`` (the rounded usage total, so a
  roll-up reads one small property, not the lines);
- ``D_{level}_{YYYYMMDD}_{nn}``: the charge lines of one usage day
  (:class:`~shared.rating.charges.DayCharges`), in shards of at most ``SHARD_CHARS``
  characters of JSON each (``nn`` from 00; a day of a few hundred resources is one shard).

A statement reads one small range (``M_``); a FOCUS export or a cost series reads the day
entities of its months (``D_{level}_``), one range per month, never a row of usage. Big
documents are split over properties of at most ``CHUNK_UTF16`` bytes (Table storage keeps a
string property as UTF-16, at most 64 KiB) and entities stay under ``ENTITY_LIMIT`` bytes
(the service's 1 MiB), so the ledger holds any month a fleet can produce.

**Writes** (:meth:`ChargeLedger.save`) are entity-group transactions in the month's partition, every
entity guarded by the ETag it was read with (or created if new), the month entities last.
A subscription-hour of a normal subscription is one transaction. A concurrent writer makes
the transaction fail whole (``LedgerConflictError``: reload and redo). When a write needs several
transactions (a huge subscription), a crash between them leaves day entities ahead of their
month: each day records the hour and price fingerprint it was written through, and a rerun
skips those hours for that day (``DayCharges.through``), so the result equals a clean run's.

**Index.** ``{prefix}charges``: ``PartitionKey = {YYYYMM}_{provider subscription}``
(``{YYYYMM}_`` for the root), ``RowKey`` = subscription: which subscriptions have charges in
a month, under their provider, written before their first month entity. The finaliser, the
roll-ups and the exports visit those subscriptions, never a table with nothing in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.core.errors import TransientError, UsageReporterError
from shared.core.hours import day_key, hour_key, parse_hour_key
from shared.core.retry import call_with_retry
from shared.rating.charges import DayCharges, MonthCharges, StatementLine
from shared.rating.engine import RATING_CONTEXT, Level, Month
from shared.rating.rounding import round_amount
from shared.rating.sheets import ZERO
from shared.storage.account import StorageAccount
from shared.storage.table_writer import MAX_BATCH, MAX_BATCH_BYTES, entity_bytes
from shared.storage.usage_rows import usage_table_name

log = logging.getLogger(__name__)

INDEX_ROLE: Final = "charges"
CONFLICT_ATTEMPTS: Final = 5  # reads and redoes after another writer changed a month
SHARD_CHARS: Final = 400_000  # characters of JSON per day entity (see ENTITY_LIMIT)
CHUNK_UTF16: Final = 60_000  # bytes of UTF-16 per string property (the service allows 64 KiB)
ENTITY_LIMIT: Final = 1_000_000  # bytes an entity may hold here (the service allows 1 MiB)
_MONTH_PREFIX: Final = "M_"
_DAY_PREFIX: Final = "D_"


class LedgerConflictError(TransientError):
    """Another writer changed the month since it was read: reload it and redo (a run that
    keeps meeting it gives up, and the next run finishes the work)."""


class LedgerFinalError(UsageReporterError):
    """The month is final: its ledger is frozen and is never written again."""

    code = "MonthFinalised"


class LedgerDocumentTooLargeError(UsageReporterError):
    """A month's statement lines would not fit one entity (never met in practice: it would
    take thousands of meters or price changes in one month)."""


def month_partition(month: Month) -> str:
    return f"C{month.key}"


def month_row_key(level: Level) -> str:
    return f"{_MONTH_PREFIX}{level.value}"


def day_row_key(level: Level, day: datetime, shard: int) -> str:
    return f"{_DAY_PREFIX}{level.value}_{day_key(day)}_{shard:02d}"


def _month_of_partition(partition: str) -> Month:
    month = Month.parse(f"{partition[1:5]}-{partition[5:]}")
    assert month is not None  # a C{YYYYMM} partition
    return month


def _parse_day_row_key(row_key: str) -> tuple[Level, datetime, int]:
    _, level, day, shard = row_key.split("_")
    return Level(level), parse_hour_key(day + "00"), int(shard)


def index_partition(month: Month, provider: str) -> str:
    return f"{month.key}_{provider.lower()}"


def provider_partitions(month: Month, provider: str | None) -> tuple[str, dict[str, str]]:
    """The filter of ``month``'s partitions keyed as the index is (``{YYYYMM}_{provider}``):
    one provider's, or every provider's (None)."""
    if provider is None:
        return "PartitionKey ge @low and PartitionKey lt @high", {
            "low": f"{month.key}_",
            "high": f"{month.key}`",
        }
    return "PartitionKey eq @pk", {"pk": index_partition(month, provider)}


def upsert_replacing(account: StorageAccount, role: str, entity: dict[str, Any], what: str) -> None:
    """Upsert ``entity`` whole into the table of ``role`` (created if it is missing), retried."""
    table = account.table(role)

    def upsert() -> None:
        try:
            table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except ResourceNotFoundError:
            account.create_table(account.settings.table_name(role))
            table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    call_with_retry(upsert, what=what)


# --- text that fits Table storage -----------------------------------------------------------


def _utf16_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def split_text(text: str, max_bytes: int = CHUNK_UTF16) -> list[str]:
    """``text`` in consecutive pieces of at most ``max_bytes`` of UTF-16 each (one at least)."""
    units = max_bytes // 2
    if text.isascii() or len(text) * 2 <= units:
        return [text[i : i + units] for i in range(0, len(text), units)] or [""]
    pieces: list[str] = []
    start = used = 0
    for index, char in enumerate(text):
        width = _utf16_units(char)
        if used + width > units:
            pieces.append(text[start:index])
            start, used = index, 0
        used += width
    pieces.append(text[start:])
    return pieces


def with_document(entity: dict[str, Any], document: str) -> dict[str, Any]:
    """``entity`` holding ``document`` in ``Doc00``.. pieces (LedgerDocumentTooLargeError if
    it would not fit one entity)."""
    pieces = split_text(document)
    entity["Chunks"] = len(pieces)
    for index, piece in enumerate(pieces):
        entity[f"Doc{index:02d}"] = piece
    if sum(len(piece.encode("utf-16-le")) for piece in pieces) + 4_096 > ENTITY_LIMIT:
        raise LedgerDocumentTooLargeError(f"{entity['RowKey']} would pass Table storage's 1 MiB")
    return entity


def _etag(entity: dict[str, Any]) -> str:
    """The ETag of an entity ``query_entities`` read (the SDK's ``TableEntity.metadata``)."""
    return str(entity.metadata["etag"])  # type: ignore[attr-defined]


def document_text(entity: dict[str, Any]) -> str:
    """The document ``with_document`` stored in ``entity``."""
    return "".join(entity[f"Doc{index:02d}"] for index in range(int(entity["Chunks"])))


# --- the month entity ------------------------------------------------------------------------


def usage_totals(month: MonthCharges) -> tuple[Decimal, Decimal]:
    """(total, list total) of the month's usage lines: each line rounded once, then summed."""
    total = list_total = ZERO
    with localcontext(RATING_CONTEXT):
        for line in month.lines.values():
            total += line_amount(line, month.currency)
            list_total += round_amount(line.list_amount, month.currency)
    return total, list_total


def line_amount(line: StatementLine, currency: str | None) -> Decimal:
    """A statement line's amount: its exact amount rounded once (0 when not priced)."""
    return round_amount(line.amount, currency)


def _month_entity(month: MonthCharges) -> dict[str, Any]:
    total, list_total = usage_totals(month)
    entity: dict[str, Any] = {
        "PartitionKey": month_partition(month.month),
        "RowKey": month_row_key(month.level),
        "Subscription": month.subscription_id,
        "Level": month.level.value,
        "Buyer": month.buyer,
        "Provider": month.provider,
        "Currency": month.currency or "",
        "Fingerprint": month.fingerprint,
        "Through": hour_key(month.through) if month.through else "",
        "Rows": month.rows,
        "Total": format(total, "f"),
        "ListTotal": format(list_total, "f"),
        "Final": month.final,
    }
    if month.finalised_at is not None:
        entity["FinalisedAt"] = month.finalised_at
    return with_document(entity, month.document())


def _month_from(entity: dict[str, Any], month: Month) -> MonthCharges:
    charges = _month_head(entity, month)
    charges.load_document(document_text(entity))
    return charges


def _month_head(entity: dict[str, Any], month: Month) -> MonthCharges:
    through = entity.get("Through") or ""
    finalised = entity.get("FinalisedAt")
    return MonthCharges(
        subscription_id=entity["Subscription"],
        level=Level(entity["Level"]),
        month=month,
        buyer=entity["Buyer"],
        currency=entity.get("Currency") or None,
        fingerprint=entity.get("Fingerprint") or "",
        provider=entity.get("Provider") or "",
        through=parse_hour_key(through) if through else None,
        rows=int(entity.get("Rows") or 0),
        final=bool(entity.get("Final")),
        finalised_at=finalised,
    )


@dataclass(frozen=True, slots=True)
class MonthTotal:
    """What a roll-up reads of a month entity: its rounded usage total and whether it is final."""

    subscription_id: str
    level: Level
    total: Decimal
    rows: int
    final: bool
    currency: str | None


# --- what rating loads and saves -------------------------------------------------------------


@dataclass
class StoredDay:
    """A day's charges and the shards it is stored in (row key -> ETag)."""

    charges: DayCharges
    shards: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedMonth:
    """One subscription's ledger of one month as rating holds it: each level's month state
    (None: not stored yet) and the days it has loaded, with the ETags to write them back."""

    subscription_id: str
    month: Month
    months: dict[Level, MonthCharges] = field(default_factory=dict)
    month_etags: dict[Level, str] = field(default_factory=dict)
    days: dict[tuple[Level, datetime], StoredDay] = field(default_factory=dict)
    # Shards stored for days not loaded (a full re-rate deletes those it does not rewrite).
    other_shards: dict[str, str] = field(default_factory=dict)
    # Month entities of levels that no longer apply (a full re-rate deletes them): ETags.
    removed: dict[Level, str] = field(default_factory=dict)
    # The provider the stored month entities name (None: none stored): a subscription that
    # moved since has its money leave that provider's cost digest.
    stored_provider: str | None = None

    def day(self, level: Level, usage_day: datetime) -> StoredDay:
        key = (level, usage_day)
        found = self.days.get(key)
        if found is None:
            found = self.days[key] = StoredDay(DayCharges(usage_day))
        return found


@dataclass(frozen=True, slots=True)
class Frozen:
    """What freezing a subscription's month did: month entities frozen now, already final,
    and the month as it is now final."""

    frozen: int
    kept: int
    month: LoadedMonth


class ChargeLedger:
    """Reads and writes the ledger (see the module docstring).

    ``max_operations`` caps a write's transactions (the service allows ``MAX_BATCH``; the
    chaos suite lowers it so a write of a few days spans several transactions) and
    ``after_transaction``, called after each committed one, is where it kills the process.
    """

    def __init__(
        self,
        account: StorageAccount,
        *,
        max_operations: int = MAX_BATCH,
        after_transaction: Callable[[], None] | None = None,
    ) -> None:
        self.account = account
        self._max_operations = max_operations
        self._after_transaction = after_transaction

    def _table(self, subscription_id: str) -> Any:
        name = usage_table_name(self.account.settings.table_prefix, subscription_id)
        return self.account.table_named(name)

    def _query(
        self,
        subscription_id: str,
        query_filter: str,
        parameters: dict[str, Any],
        *,
        select: Sequence[str] | None = None,
        what: str,
    ) -> list[dict[str, Any]]:
        table = self._table(subscription_id)

        def read() -> list[dict[str, Any]]:
            try:
                return self.account.transport.query_entities(
                    table, query_filter, parameters=parameters, select=select
                )
            except ResourceNotFoundError:
                return []  # the subscription never had usage: no table, no charges

        return call_with_retry(read, what=what)

    # --- reading -------------------------------------------------------------------------

    def load(
        self,
        subscription_id: str,
        month: Month,
        days: Iterable[datetime] | None,
        *,
        content: bool = True,
    ) -> LoadedMonth:
        """The month entities of both levels and, of the days given (None: every day), their
        charges: one range read. Without ``content`` (a month about to be rebuilt), only
        what a rewrite needs: which entities exist, their ETags, and whether one is final."""
        subscription_id = subscription_id.lower()
        loaded = LoadedMonth(subscription_id, month)
        wanted = None if days is None else sorted(set(days))
        select = None if content else ["RowKey", "Level", "Final", "Provider"]
        for entity in self._month_entities(subscription_id, month, wanted, select):
            row_key = entity["RowKey"]
            if row_key.startswith(_MONTH_PREFIX):
                level = Level(entity["Level"])
                loaded.stored_provider = (entity.get("Provider") or "").lower()
                if content:
                    loaded.months[level] = _month_from(entity, month)
                elif entity.get("Final"):
                    raise LedgerFinalError(f"{subscription_id} {month} is final")
                loaded.month_etags[level] = _etag(entity)
                continue
            level, usage_day, _ = _parse_day_row_key(row_key)
            if wanted is not None and usage_day not in wanted:
                loaded.other_shards[row_key] = _etag(entity)
                continue
            stored = loaded.day(level, usage_day)
            stored.shards[row_key] = _etag(entity)
            if content:
                through = entity.get("Through")
                stored.charges.through = parse_hour_key(through) if through else None
                stored.charges.fingerprint = entity.get("Fingerprint") or ""
                stored.charges.load_shard(document_text(entity))
        return loaded

    def _month_entities(
        self,
        subscription_id: str,
        month: Month,
        days: list[datetime] | None,
        select: Sequence[str] | None,
    ) -> list[dict[str, Any]]:
        """The month entities and the day entities of ``days`` (None: all; the days a batch
        of hours touches are near each other: one range per level over them), one read."""
        partition = month_partition(month)
        parameters: dict[str, Any] = {"pk": partition}
        if days is None:
            query = "PartitionKey eq @pk"
        else:
            parameters |= {"mlow": _MONTH_PREFIX, "mhigh": _MONTH_PREFIX[:-1] + "`"}
            query = "PartitionKey eq @pk and ( ( RowKey ge @mlow and RowKey lt @mhigh )"
            if days:
                first, last = day_key(days[0]), day_key(days[-1])
                for name, level in (("r", Level.RETAIL), ("w", Level.WHOLESALE)):
                    parameters[f"{name}low"] = f"{_DAY_PREFIX}{level.value}_{first}"
                    parameters[f"{name}high"] = f"{_DAY_PREFIX}{level.value}_{last}`"
                    query += f" or ( RowKey ge @{name}low and RowKey lt @{name}high )"
            query += " )"  # spaced: the SDK substitutes whole @words
        return self._query(
            subscription_id,
            query,
            parameters,
            select=select,
            what=f"read charges {partition} of {subscription_id}",
        )

    def month_charges(self, subscription_id: str, month: Month) -> dict[Level, MonthCharges]:
        """Each level's statement-line state of the month (one small range read)."""
        return self.load(subscription_id, month, []).months

    def month_totals(self, subscription_id: str, month: Month) -> dict[Level, MonthTotal]:
        """Each level's rounded usage total of the month, without its lines (one small read)."""
        found: dict[Level, MonthTotal] = {}
        partition = month_partition(month)
        for entity in self._query(
            subscription_id.lower(),
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": _MONTH_PREFIX, "high": _MONTH_PREFIX[:-1] + "`"},
            select=["Subscription", "Level", "Total", "Rows", "Final", "Currency"],
            what=f"read month totals {partition} of {subscription_id}",
        ):
            level = Level(entity["Level"])
            found[level] = MonthTotal(
                subscription_id.lower(),
                level,
                Decimal(entity["Total"]),
                int(entity["Rows"]),
                bool(entity.get("Final")),
                entity.get("Currency") or None,
            )
        return found

    def day_charges(self, subscription_id: str, month: Month, level: Level) -> list[DayCharges]:
        """Every usage day's charge lines of statement month ``month`` at ``level``, by day
        (one range read): what a FOCUS export of the month reads."""
        return [
            day
            for (_, _), day in sorted(
                self.days_between(subscription_id, level, month, month).items(),
                key=lambda item: item[0][1],
            )
        ]

    def days_between(
        self,
        subscription_id: str,
        level: Level,
        first: Month,
        last: Month,
        usage_days: tuple[datetime, datetime] | None = None,
    ) -> dict[tuple[Month, datetime], DayCharges]:
        """The charge lines of statement months ``first``..``last`` at ``level``, by
        (statement month, usage day); of usage days ``usage_days`` (first, last) only if
        given. One read for the whole span: a cost series of a subscription's days reads the
        statement months its days were reported in (late usage: a later one, on its own),
        not a row of usage."""
        low_day, high_day = usage_days or (None, None)
        prefix = f"{_DAY_PREFIX}{level.value}_"
        parameters = {
            "first": month_partition(first),
            "last": month_partition(last),
            "low": prefix + (day_key(low_day) if low_day else ""),
            "high": prefix + day_key(high_day) + "`" if high_day else prefix[:-1] + "`",
        }
        found: dict[tuple[Month, datetime], DayCharges] = {}
        for entity in self._query(
            subscription_id.lower(),
            "PartitionKey ge @first and PartitionKey le @last and RowKey ge @low "
            "and RowKey lt @high",
            parameters,
            what=f"read charge days {first}..{last} of {subscription_id}",
        ):
            _, usage_day, _ = _parse_day_row_key(entity["RowKey"])
            statement_month = _month_of_partition(entity["PartitionKey"])
            day = found.get((statement_month, usage_day))
            if day is None:
                day = found[(statement_month, usage_day)] = DayCharges(usage_day)
            day.load_shard(document_text(entity))
        return found

    # --- writing -------------------------------------------------------------------------

    def save(
        self,
        loaded: LoadedMonth,
        changed: Iterable[tuple[Level, datetime]],
        *,
        drop_others: bool = False,
    ) -> None:
        """Write the changed days, then every month state of ``loaded`` (see the module
        docstring); ``drop_others`` deletes the stored days this state does not hold (a full
        re-rate). LedgerConflictError if another writer got there first; ETags are updated."""
        operations: list[tuple[Any, ...]] = []
        follow: list[tuple[str, tuple[Level, datetime] | Level | None]] = []
        partition = month_partition(loaded.month)
        for key in sorted(set(changed), key=lambda k: (k[0].value, k[1])):
            level, usage_day = key
            stored = loaded.days[key]
            documents = stored.charges.shards(SHARD_CHARS) if stored.charges.lines else []
            wanted = {day_row_key(level, usage_day, n): doc for n, doc in enumerate(documents)}
            for row_key, document in wanted.items():
                entity = with_document(
                    {
                        "PartitionKey": partition,
                        "RowKey": row_key,
                        "Through": hour_key(stored.charges.through)
                        if stored.charges.through
                        else "",
                        "Fingerprint": stored.charges.fingerprint,
                    },
                    document,
                )
                operations.append(_put(entity, stored.shards.get(row_key)))
                follow.append((row_key, key))
            for row_key, etag in sorted(stored.shards.items()):
                if row_key not in wanted:
                    operations.append(_delete(partition, row_key, etag))
                    follow.append((row_key, None))
        if drop_others:
            for row_key, etag in sorted(loaded.other_shards.items()):
                operations.append(_delete(partition, row_key, etag))
                follow.append((row_key, None))
        for level, etag in sorted(loaded.removed.items(), key=lambda item: item[0].value):
            operations.append(_delete(partition, month_row_key(level), etag))
            follow.append((month_row_key(level), None))
        for level, charges in sorted(loaded.months.items(), key=lambda item: item[0].value):
            operations.append(_put(_month_entity(charges), loaded.month_etags.get(level)))
            follow.append((month_row_key(level), level))
        table = self._table(loaded.subscription_id)
        targets = dict(follow)
        for batch in _transactions(operations, self._max_operations):
            answers = self._submit(table, loaded, batch)
            if self._after_transaction is not None:
                self._after_transaction()
            for operation, answer in zip(batch, answers, strict=True):
                row_key = operation[1]["RowKey"]
                target = targets[row_key]
                if isinstance(target, Level):
                    loaded.month_etags[target] = answer["etag"]
                elif target is None:
                    for stored in loaded.days.values():
                        stored.shards.pop(row_key, None)
                    loaded.other_shards.pop(row_key, None)
                else:
                    loaded.days[target].shards[row_key] = answer["etag"]
        if drop_others:
            loaded.other_shards.clear()
        loaded.removed.clear()

    def _submit(
        self, table: Any, loaded: LoadedMonth, batch: Sequence[tuple[Any, ...]]
    ) -> list[dict[str, str]]:
        what = f"write charges {month_partition(loaded.month)} of {loaded.subscription_id}"

        def submit() -> list[dict[str, str]]:
            try:
                return self.account.transport.submit_transaction(table, batch)
            except HttpResponseError as error:
                if error.status_code == 404 and "TableNotFound" in str(error):
                    self.account.create_table(table.table_name)
                    return self.account.transport.submit_transaction(table, batch)
                raise

        try:
            return call_with_retry(submit, what=what)
        except TableTransactionError as error:
            if error.status_code in (404, 409, 412):
                raise LedgerConflictError(f"{what}: changed by another writer") from error
            raise

    def ensure_indexed(self, month: Month, subscription_id: str, provider: str) -> None:
        """Record that the subscription has charges in ``month`` under ``provider``."""
        entity = {
            "PartitionKey": index_partition(month, provider),
            "RowKey": subscription_id.lower(),
        }
        upsert_replacing(
            self.account, INDEX_ROLE, entity, f"index charges of {subscription_id} in {month}"
        )

    def indexed(self, month: Month, provider: str | None = None) -> dict[str, set[str]]:
        """Subscriptions with charges in ``month`` by provider (one provider's, or all)."""
        table = self.account.table(INDEX_ROLE)
        query, parameters = provider_partitions(month, provider)

        def read() -> dict[str, set[str]]:
            try:
                entities = self.account.transport.query_entities(
                    table, query, parameters=parameters, select=["PartitionKey", "RowKey"],
                    plain=True,
                )  # fmt: skip
            except ResourceNotFoundError:
                return {}
            found: dict[str, set[str]] = {}
            for entity in entities:
                owner = entity["PartitionKey"].partition("_")[2]
                found.setdefault(owner, set()).add(entity["RowKey"])
            return found

        return call_with_retry(read, what=f"read charges index {month}")

    def set_final(self, subscription_id: str, month: Month, at: datetime) -> Frozen:
        """Freeze the month entities of every level (ETag-guarded). The month is read whole
        (still one range read), so the caller holds what is now final: its cost digest is
        written from it. LedgerConflictError if one changed since it was read (read again,
        retry)."""
        loaded = self.load(subscription_id, month, None)
        frozen = kept = 0
        for charges in loaded.months.values():
            if charges.final:
                kept += 1
                continue
            charges.final = True
            charges.finalised_at = at
            frozen += 1
        if frozen:
            self.save(loaded, [])
        return Frozen(frozen, kept, loaded)


def _put(entity: dict[str, Any], etag: str | None) -> tuple[Any, ...]:
    if etag is None:
        return ("create", entity)
    return (
        "update",
        entity,
        {
            "mode": UpdateMode.REPLACE,
            "etag": etag,
            "match_condition": MatchConditions.IfNotModified,
        },
    )


def _delete(partition: str, row_key: str, etag: str) -> tuple[Any, ...]:
    return (
        "delete",
        {"PartitionKey": partition, "RowKey": row_key},
        {"etag": etag, "match_condition": MatchConditions.IfNotModified},
    )


def _transactions(
    operations: list[tuple[Any, ...]], max_operations: int = MAX_BATCH
) -> list[list[tuple[Any, ...]]]:
    """Operations cut into transactions of at most ``max_operations`` operations and about
    ``MAX_BATCH_BYTES``, in order (so the month entities, last, commit last)."""
    batches: list[list[tuple[Any, ...]]] = []
    batch: list[tuple[Any, ...]] = []
    used = 0
    for operation in operations:
        cost = entity_bytes(operation[1])
        if batch and (len(batch) == max_operations or used + cost > MAX_BATCH_BYTES):
            batches.append(batch)
            batch, used = [], 0
        batch.append(operation)
        used += cost
    if batch:
        batches.append(batch)
    return batches
