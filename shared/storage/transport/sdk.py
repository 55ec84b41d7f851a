"""The SDK's own transactions and queries: the reference, and the path that always works.

Only public API: ``TableClient.submit_transaction`` and ``TableClient.query_entities``. It
is the transport whenever the installed SDK is not the one the direct path was proved on
(``shared.storage.transport.choice``), and what the contract suite compares the direct
path with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from azure.data.tables import TableClient

from shared.storage.transport.interface import TablesTransport
from shared.storage.transport.operations import Operation


class SdkTransport(TablesTransport):
    name = "sdk"

    def _commit(self, table: TableClient, operations: list[Operation]) -> list[dict[str, str]]:
        return [dict(result) for result in table.submit_transaction(operations)]

    def query_entities(
        self,
        table: TableClient,
        query_filter: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        plain: bool = False,
    ) -> list[dict[str, Any]]:
        pages = table.query_entities(
            query_filter,
            parameters=dict(parameters or {}),
            select=list(select) if select else None,
        )
        if plain:
            return [dict(entity) for entity in pages]
        return list(pages)
