"""What the app asks of a tables transport: entity-group transactions and entity queries.

Two implementations answer it alike (``tests/contract`` holds both to the same stored
entities, answers and exceptions): ``sdk`` calls the SDK's public ``submit_transaction``
and ``query_entities``; ``direct`` encodes and reads the same requests itself, faster, and
leans on the SDK's private names (``shared.storage.transport.direct``). Both send through
the table client's own pipeline, so authentication, retries and request hooks
(``StorageAccount(request_hook=...)``) see the same one request per transaction and one per
query page.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from azure.data.tables import TableClient

from shared.storage.transport.operations import Operation, check_operations


class TablesTransport(ABC):
    """Transactions and queries on a ``TableClient``; ``name`` is ``sdk`` or ``direct``."""

    name: ClassVar[str]

    def submit_transaction(
        self, table: TableClient, operations: Sequence[Operation]
    ) -> list[dict[str, str]]:
        """Commit ``operations`` (the SDK's ``(kind, entity[, options])`` tuples) atomically.

        Kinds: ``create``; ``upsert`` and ``update`` with ``mode`` (``UpdateMode``, merge by
        default); ``update`` and ``delete`` with ``etag`` and ``match_condition``
        ``IfNotModified`` (without them, any version). Every entity shares one PartitionKey.
        Returns per operation the metadata the service answered (``{"etag": ...}``, empty
        for a delete). A refused operation raises ``TableTransactionError`` (its status and
        error code those of the failed part), a refused request the SDK's decoded
        ``HttpResponseError``; what storage would refuse anyway raises ``ValueError`` before
        anything is sent (``shared.storage.transport.operations``).
        """
        operations = list(operations)
        check_operations(operations)
        if not operations:
            return []
        return self._commit(table, operations)

    @abstractmethod
    def _commit(self, table: TableClient, operations: list[Operation]) -> list[dict[str, str]]:
        """Send checked, non-empty ``operations`` as one transaction."""

    @abstractmethod
    def query_entities(
        self,
        table: TableClient,
        query_filter: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        plain: bool = False,
    ) -> list[dict[str, Any]]:
        """Every entity of ``table`` matching ``query_filter`` (``@name`` words replaced from
        ``parameters`` as the SDK replaces them), with only ``select``'s properties if
        given, every page followed. The entities are the SDK's ``TableEntity`` (a dict
        whose ``metadata`` holds the ETag and timestamp).

        ``plain``: plain dicts without metadata, for reads that select only String and
        Int32 properties (their values are the same either way); the direct transport then
        asks for the service's ``nometadata`` JSON and skips the conversion.
        """
