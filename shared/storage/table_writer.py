"""Parallel, idempotent writes of whole partitions as entity-group transactions.

Table storage commits up to 100 operations on one partition atomically, in a request body
under 4 MiB. Every write here is an upsert, so replaying a batch (after a timeout whose
answer was lost, or in a rerun of the hour) converges to the same stored state: that is
what makes collecting an hour twice harmless (invariant 1).

Batches are cut by count (``MAX_BATCH``) and by an upper estimate of their body
(``MAX_BATCH_BYTES``): the SDK sends each entity as ASCII-escaped JSON inside a multipart
body, so a partition of large rows becomes several transactions instead of one that storage
refuses with ``413 RequestBodyTooLarge``.

What storage still refuses for its content (400 or 413: a property over 64 KiB, an entity
over 1 MiB, a value it does not accept) is either an error (``StorageRefusedBatch``, the
default) or, with ``isolate_refusals``, narrowed down by halving the batch until the
refused entities stand alone; those refused for their content (``CONTENT_REFUSALS``) are
listed in ``refused`` and everything else is written. The collector quarantines them, so
one poison row never stops an hour; a refusal that does not blame the entity still fails.

Several partitions are in flight at once (``parallelism`` threads); the number of queued
partitions is bounded, so a producer that streams an hour never holds more than a few
partitions in memory. A table that does not exist yet (a subscription's first usage) is
created on the first write that misses it, so the common path costs no extra call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient, UpdateMode

from shared.core.errors import BadInputError
from shared.core.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
from shared.storage.account import StorageAccount

Entity = dict[str, Any]
MAX_BATCH = 100
# A transaction's body must stay under 4 MiB; the margin covers the changeset's own framing.
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024
# Per operation: its MIME part headers and request line (URL with both keys), generously.
_OPERATION_OVERHEAD = 1024
# Per property: an ``@odata.type`` annotation and the quoting around name and value.
_PROPERTY_OVERHEAD = 64
# Statuses storage answers when it refuses what was sent, not because it is busy.
REFUSAL_STATUSES = frozenset({400, 413})
# Error codes that blame one entity's content (Table service error codes). Any other refusal
# of an entity standing alone (a malformed request, an unsupported version) would refuse
# every entity alike: it fails the write instead of quarantining a whole hour.
CONTENT_REFUSALS = frozenset(
    {
        "PropertyValueTooLarge",
        "EntityTooLarge",
        "RequestBodyTooLarge",
        "KeyValueTooLarge",
        "PropertyNameInvalid",
        "PropertyNameTooLong",
        "TooManyProperties",
        "InvalidValueType",
        "OutOfRangeInput",
        "InvalidInput",
    }
)


def entity_bytes(entity: Entity) -> int:
    """An upper estimate of what ``entity`` adds to a transaction's body.

    The SDK serialises with ``json.dumps`` (ASCII-escaped: a non-ASCII character costs six
    bytes, an astral one twelve); datetimes and other types are approximated by ``str``.
    """
    return (
        len(json.dumps(entity, default=str))
        + _OPERATION_OVERHEAD
        + _PROPERTY_OVERHEAD * len(entity)
    )


def chunks(
    entities: Sequence[Entity], size: int = MAX_BATCH, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[Sequence[Entity]]:
    """Consecutive batches of at most ``size`` entities and ``max_bytes`` estimated bytes
    (an entity larger than that alone goes in a batch of its own)."""
    start, used = 0, 0
    for index, entity in enumerate(entities):
        cost = entity_bytes(entity)
        if index > start and (index - start == size or used + cost > max_bytes):
            yield entities[start:index]
            start, used = index, 0
        used += cost
    if start < len(entities):
        yield entities[start:]


def _table_missing(error: HttpResponseError) -> bool:
    return error.status_code == 404 and "TableNotFound" in str(error)


def is_refusal(error: BaseException) -> bool:
    """True when storage refused the content of a request (retrying the same cannot help)."""
    return isinstance(error, HttpResponseError) and error.status_code in REFUSAL_STATUSES


@dataclass(frozen=True, slots=True)
class Refusal:
    """An entity storage would not store, and what it answered."""

    table_name: str
    entity: Entity
    status: int | None
    code: str


class PartitionWriter:
    """Upserts whole partitions, ``parallelism`` at a time; ``close`` raises the first failure.

    ``mode`` REPLACE (the default) makes the stored entity exactly the written one; MERGE
    keeps properties the write does not name (fields other writers own). With
    ``isolate_refusals`` the entities storage refuses are collected in ``refused`` instead of
    failing the write (see the module docstring).
    """

    def __init__(
        self,
        account: StorageAccount,
        *,
        parallelism: int,
        mode: UpdateMode = UpdateMode.REPLACE,
        policy: RetryPolicy = DEFAULT_POLICY,
        isolate_refusals: bool = False,
    ):
        self._account = account
        self._policy = policy
        self._mode = mode
        self._isolate = isolate_refusals
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="writer")
        self._slots = threading.BoundedSemaphore(parallelism * 2)
        self._futures: list[Future[int]] = []
        self._lock = threading.Lock()
        self.entities_written = 0
        self.refused: list[Refusal] = []

    def write_partition(self, table_name: str, entities: Sequence[Entity]) -> None:
        """Queue one partition's entities (all the same PartitionKey) for writing."""
        if not entities:
            return
        self._collect_done()
        self._slots.acquire()
        future = self._pool.submit(self._write, table_name, entities)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def _write(self, table_name: str, entities: Sequence[Entity]) -> int:
        table = self._account.table_named(table_name)
        return sum(self._submit(table, table_name, batch) for batch in chunks(entities))

    def _submit(self, table: TableClient, table_name: str, batch: Sequence[Entity]) -> int:
        """Write one batch; returns how many entities were stored."""
        partition = batch[0]["PartitionKey"]
        operations = [("upsert", entity, {"mode": self._mode}) for entity in batch]

        def submit() -> None:
            try:
                self._account.transport.submit_transaction(table, operations)
            except HttpResponseError as error:
                if not _table_missing(error):
                    raise
                self._account.create_table(table_name)
                self._account.transport.submit_transaction(table, operations)

        try:
            call_with_retry(
                submit, what=f"write {table_name} partition {partition}", policy=self._policy
            )
        except HttpResponseError as error:
            if not is_refusal(error):
                raise
            if not self._isolate:
                raise BadInputError(
                    f"storage refused a batch of {table_name} partition {partition}: "
                    f"HTTP {error.status_code}",
                    code="StorageRefusedBatch",
                ) from error
            if len(batch) == 1:
                code = getattr(error, "error_code", None)
                code = str(getattr(code, "value", code) or "")
                if code not in CONTENT_REFUSALS:
                    raise BadInputError(
                        f"storage refused an entity of {table_name} partition {partition}: "
                        f"HTTP {error.status_code} {code or 'without an error code'}",
                        code="StorageRefusedBatch",
                    ) from error
                with self._lock:
                    self.refused.append(Refusal(table_name, batch[0], error.status_code, code))
                return 0
            half = len(batch) // 2
            return self._submit(table, table_name, batch[:half]) + self._submit(
                table, table_name, batch[half:]
            )
        return len(batch)

    def _collect_done(self) -> None:
        """Count finished partitions; raise the first failure early."""
        pending = []
        for future in self._futures:
            if future.done():
                self.entities_written += future.result()
            else:
                pending.append(future)
        self._futures = pending

    def close(self) -> int:
        """Wait for every queued partition; raise the first failure; return entities written."""
        try:
            for future in self._futures:
                self.entities_written += future.result()
            self._futures = []
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return self.entities_written

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)


def delete_keys(
    account: StorageAccount, table_name: str, partition: str, row_keys: Iterable[str]
) -> int:
    """Delete the entities ``row_keys`` of one partition in transactions of ``MAX_BATCH``;
    returns how many keys are gone. Idempotent: a batch that meets a key already gone (404)
    is redone one key at a time, which skips it."""
    table = account.table_named(table_name)
    keys = sorted(set(row_keys))
    what = f"remove stale keys of {table_name} partition {partition}"
    deleted = 0
    for start in range(0, len(keys), MAX_BATCH):
        batch = keys[start : start + MAX_BATCH]
        operations: list[Any] = [
            ("delete", {"PartitionKey": partition, "RowKey": key}) for key in batch
        ]
        try:
            call_with_retry(
                partial(account.transport.submit_transaction, table, operations), what=what
            )
            deleted += len(batch)
        except HttpResponseError as error:
            if error.status_code != 404:
                raise
            for key in batch:  # the SDK's single delete ignores an entity already gone
                call_with_retry(partial(table.delete_entity, partition, key), what=what)
            deleted += len(batch)
    return deleted
