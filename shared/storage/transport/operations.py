"""A transaction's operations, checked once before either transport sends them.

The SDK checks some of these itself (one PartitionKey, known kinds and modes, ETags with
their match conditions) and leaves others to the service (more than 100 operations, an
empty changeset), which answers with a round trip and an error the SDK decodes in its own
way. Checking here, the same way for both transports, gives one answer for every
transaction the service would refuse anyway: ``ValueError`` (``TypeError`` for a key that
is not a string), before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

# The SDK's ``(kind, entity[, options])`` tuples.
Operation = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]

MAX_OPERATIONS = 100  # Table storage: at most 100 operations in one transaction
KINDS = frozenset({"create", "upsert", "update", "delete"})
_OPTIONS = {
    "create": frozenset(),
    "upsert": frozenset({"mode"}),
    "update": frozenset({"mode", "etag", "match_condition"}),
    "delete": frozenset({"etag", "match_condition"}),
}


def check_operations(operations: Sequence[Operation]) -> None:
    """Raise ``ValueError`` (``TypeError`` for a key that is not a string) unless
    ``operations`` is a transaction storage can commit."""
    if len(operations) > MAX_OPERATIONS:
        raise ValueError(f"a transaction holds at most {MAX_OPERATIONS} operations")
    partitions = set()
    for operation in operations:
        kind, entity = str(operation[0]).lower(), operation[1]
        options: Mapping[str, Any] = operation[2] if len(operation) > 2 else {}
        if kind not in KINDS:
            raise ValueError(f"unknown transaction operation {operation[0]!r}")
        if "PartitionKey" not in entity or "RowKey" not in entity:
            raise ValueError("every entity of a transaction needs a PartitionKey and a RowKey")
        if not isinstance(entity["PartitionKey"], str) or not isinstance(entity["RowKey"], str):
            raise TypeError("PartitionKey and RowKey must be strings")
        partitions.add(entity["PartitionKey"])
        unknown = set(options) - _OPTIONS[kind]
        if unknown:
            raise ValueError(f"a {kind} takes no {', '.join(sorted(unknown))}")
        if options.get("mode", UpdateMode.MERGE) not in (UpdateMode.MERGE, UpdateMode.REPLACE):
            raise ValueError(f"unknown update mode {options['mode']!r}")
        if kind in ("update", "delete"):
            match_version(options)
    if len(partitions) > 1:
        raise ValueError("every operation of a transaction must share one PartitionKey")


def match_version(options: Mapping[str, Any]) -> str:
    """The version an update or delete requires (``If-Match``): the ETag given with
    ``IfNotModified``, or any version (``*``) without a condition."""
    etag = options.get("etag")
    condition = options.get("match_condition") or MatchConditions.Unconditionally
    if condition is MatchConditions.IfNotModified:
        if not etag:
            raise ValueError("IfNotModified needs the etag it compares with")
        return str(etag)
    if condition is MatchConditions.Unconditionally:
        if etag:
            raise ValueError("an etag needs match_condition IfNotModified")
        return "*"
    raise ValueError(f"transactions support IfNotModified or no condition, not {condition}")
