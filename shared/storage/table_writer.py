"""Parallel, idempotent writes of whole partitions as entity-group transactions.

Table storage commits up to 100 operations on one partition atomically. Every write here is
an upsert, so replaying a batch (after a timeout whose answer was lost, or in a rerun of the
hour) converges to the same stored state: that is what makes collecting an hour twice
harmless (invariant 1).

Several partitions are in flight at once (``parallelism`` threads); the number of queued
partitions is bounded, so a producer that streams an hour never holds more than a few
partitions in memory. A table that does not exist yet (a subscription's first usage) is
created on the first write that misses it, so the common path costs no extra call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.core.errors import BadInputError
from shared.core.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
from shared.storage.account import StorageAccount

Entity = dict[str, Any]
MAX_BATCH = 100


def chunks(entities: Sequence[Entity], size: int = MAX_BATCH) -> Iterator[Sequence[Entity]]:
    for start in range(0, len(entities), size):
        yield entities[start : start + size]


def _table_missing(error: HttpResponseError) -> bool:
    return error.status_code == 404 and "TableNotFound" in str(error)


class PartitionWriter:
    """Upserts whole partitions, ``parallelism`` at a time; ``close`` raises the first failure.

    ``mode`` REPLACE (the default) makes the stored entity exactly the written one; MERGE
    keeps properties the write does not name (fields other writers own).
    """

    def __init__(
        self,
        account: StorageAccount,
        *,
        parallelism: int,
        mode: UpdateMode = UpdateMode.REPLACE,
        policy: RetryPolicy = DEFAULT_POLICY,
    ):
        self._account = account
        self._policy = policy
        self._mode = mode
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="writer")
        self._slots = threading.BoundedSemaphore(parallelism * 2)
        self._futures: list[Future[int]] = []
        self.entities_written = 0

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
        partition = entities[0]["PartitionKey"]
        what = f"write {table_name} partition {partition}"
        for batch in chunks(entities):
            operations = [("upsert", entity, {"mode": self._mode}) for entity in batch]

            def submit(operations: list[Any] = operations) -> None:
                try:
                    table.submit_transaction(operations)
                except HttpResponseError as error:
                    if not _table_missing(error):
                        raise
                    self._account.create_table(table_name)
                    table.submit_transaction(operations)

            try:
                call_with_retry(submit, what=what, policy=self._policy)
            except TableTransactionError as error:
                raise BadInputError(
                    f"storage refused a batch of {table_name} partition {partition}: "
                    f"HTTP {error.status_code}",
                    code="StorageRefusedBatch",
                ) from error
        return len(entities)

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
