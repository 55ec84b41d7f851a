"""Our entity-group transactions against the SDK's, on real Azurite.

Every scenario runs twice on twin tables, once through ``TableClient.submit_transaction``
and once through ``shared.storage.transactions.submit_transaction``: what is stored (values
and their Edm types), what is returned and what is raised must be the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import EdmType, TableClient, TableServiceClient, UpdateMode

from devstack.azurite import Azurite
from shared.storage.transactions import submit_transaction

Submit = Callable[[TableClient, Sequence[Any]], list[Any]]
SUBMITTERS: dict[str, Submit] = {
    "sdk": lambda table, operations: list(table.submit_transaction(operations)),
    "ours": submit_transaction,
}
# One value of each type the app writes (a string with quotes, backslash and newline; an
# EDM-typed big integer; an aware datetime): the twin tests of queries reuse them.
VALUES: dict[str, Any] = {
    "Text": 'héllo "quoted" \\ back\nline',
    "Float": 2.5,
    "Whole": 7,
    "Big": (2**40, EdmType.INT64),
    "Flag": True,
    "When": datetime(2026, 11, 2, 14, 30, 15, 123456, tzinfo=UTC),
    "Empty": "",
}
ODD_KEYS = ["plain", "it's", "a b", "100%", "x+y&z=1", "ünï çødé", "(paren)", "comma,semi;"]


@pytest.fixture
def twins(azurite: Azurite) -> Iterator[dict[str, TableClient]]:
    """Two empty tables, one per submitter."""
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    tables = {name: service.create_table("tx" + uuid.uuid4().hex[:12]) for name in SUBMITTERS}
    yield tables
    for table in tables.values():
        service.delete_table(table.table_name)


def stored(table: TableClient) -> list[tuple[Any, ...]]:
    """Every entity with its values and their types (timestamps and ETags left out)."""
    return sorted(
        (
            entity["PartitionKey"],
            entity["RowKey"],
            tuple(
                sorted((key, repr(value), type(value).__name__) for key, value in entity.items())
            ),
        )
        for entity in table.list_entities()
    )


def outcome(submit: Submit, table: TableClient, operations: Sequence[Any]) -> tuple[Any, ...]:
    """What a transaction answered, comparable across submitters (ETags by count)."""
    try:
        results = submit(table, operations)
    except HttpResponseError as error:
        code = getattr(error, "error_code", None)
        return (
            "raised",
            type(error).__name__,
            error.status_code,
            str(getattr(code, "value", code)),
        )
    return ("committed", [sorted(result) for result in results])


def both(twins: dict[str, TableClient], operations: Sequence[Any]) -> tuple[Any, ...]:
    """Run ``operations`` through both submitters; they must agree; returns the outcome."""
    outcomes = {name: outcome(SUBMITTERS[name], twins[name], operations) for name in twins}
    assert outcomes["ours"] == outcomes["sdk"]
    assert stored(twins["ours"]) == stored(twins["sdk"])
    return outcomes["ours"]


def test_creates_store_the_same_values_types_and_odd_keys(twins: dict[str, TableClient]) -> None:
    entities = [
        {"PartitionKey": "p'1 %", "RowKey": key, **VALUES, "Missing": None} for key in ODD_KEYS
    ]
    assert both(twins, [("create", entity) for entity in entities]) == (
        "committed",
        [["etag"]] * len(ODD_KEYS),
    )
    assert len(stored(twins["ours"])) == len(ODD_KEYS)


def test_updates_upserts_and_deletes_with_and_without_etags(
    twins: dict[str, TableClient],
) -> None:
    seed = [{"PartitionKey": "p", "RowKey": key, "A": 1.0, "B": "b"} for key in ODD_KEYS[:5]]
    both(twins, [("create", entity) for entity in seed])
    etags = {
        name: {e["RowKey"]: e.metadata["etag"] for e in table.list_entities()}
        for name, table in twins.items()
    }
    for name, table in twins.items():
        tag = etags[name]
        operations = [
            ("update", {"PartitionKey": "p", "RowKey": "plain", "A": 2.0},
             {"mode": UpdateMode.MERGE, "etag": tag["plain"],
              "match_condition": MatchConditions.IfNotModified}),
            ("update", {"PartitionKey": "p", "RowKey": "it's", "C": 3},
             {"mode": UpdateMode.REPLACE}),
            ("upsert", {"PartitionKey": "p", "RowKey": "a b", "D": "d"}),
            ("upsert", {"PartitionKey": "p", "RowKey": "100%", "E": "e"},
             {"mode": UpdateMode.REPLACE}),
            ("delete", {"PartitionKey": "p", "RowKey": "x+y&z=1"},
             {"etag": tag["x+y&z=1"], "match_condition": MatchConditions.IfNotModified}),
            ("upsert", {"PartitionKey": "p", "RowKey": "new one", "F": 1.5}),
        ]  # fmt: skip
        results = SUBMITTERS[name](table, operations)
        assert [sorted(result) for result in results] == [["etag"]] * 4 + [[]] + [["etag"]]
        # The ETags returned are the stored entities' versions.
        now = {e["RowKey"]: e.metadata["etag"] for e in table.list_entities()}
        assert [results[i]["etag"] for i in (0, 1, 2, 3, 5)] == [
            now[key] for key in ("plain", "it's", "a b", "100%", "new one")
        ]
    assert stored(twins["ours"]) == stored(twins["sdk"])
    rows = {entity["RowKey"]: dict(entity) for entity in twins["ours"].list_entities()}
    assert (rows["plain"]["A"], rows["plain"]["B"]) == (2.0, "b")  # merged
    assert (rows["it's"].get("A"), rows["it's"]["C"]) == (None, 3)  # replaced
    assert "x+y&z=1" not in rows


@pytest.mark.parametrize(
    "failing",
    [
        ("create", {"PartitionKey": "p", "RowKey": "plain", "A": 9.0}),
        (
            "update",
            {"PartitionKey": "p", "RowKey": "plain", "A": 9.0},
            {
                "etag": "W/\"datetime'2020-01-01T00%3A00%3A00.0000000Z'\"",
                "match_condition": MatchConditions.IfNotModified,
            },
        ),
        ("update", {"PartitionKey": "p", "RowKey": "absent", "A": 9.0}),
        ("delete", {"PartitionKey": "p", "RowKey": "absent"}),
        ("upsert", {"PartitionKey": "p", "RowKey": "huge", "A": "x" * 70_000}),
    ],
    ids=["exists", "stale-etag", "update-missing", "delete-missing", "value-too-large"],
)
def test_a_refused_operation_raises_the_same_error_and_writes_nothing(
    twins: dict[str, TableClient], failing: Any
) -> None:
    both(twins, [("create", {"PartitionKey": "p", "RowKey": "plain", "A": 1.0})])
    operations = [
        ("upsert", {"PartitionKey": "p", "RowKey": "before", "A": 1.0}),
        failing,
        ("upsert", {"PartitionKey": "p", "RowKey": "after", "A": 1.0}),
    ]
    answered = both(twins, operations)
    assert answered[:2] == ("raised", "TableTransactionError")
    assert {e["RowKey"] for e in twins["ours"].list_entities()} == {"plain"}


def test_a_missing_table_raises_table_not_found(azurite: Azurite) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    missing = service.get_table_client("tx" + uuid.uuid4().hex[:12])
    operations = [("upsert", {"PartitionKey": "p", "RowKey": "r", "A": 1.0})]
    answers = [outcome(submit, missing, operations) for submit in SUBMITTERS.values()]
    assert answers[0] == answers[1]
    with pytest.raises(HttpResponseError) as raised:
        submit_transaction(missing, operations)
    assert raised.value.status_code == 404
    assert "TableNotFound" in str(raised.value)


def test_one_request_per_transaction_through_the_clients_pipeline(azurite: Azurite) -> None:
    requests: list[str] = []
    service = TableServiceClient.from_connection_string(
        azurite.connection_string,
        raw_request_hook=lambda r: requests.append(r.http_request.method),
    )
    table = service.create_table("tx" + uuid.uuid4().hex[:12])
    requests.clear()
    submit_transaction(
        table, [("upsert", {"PartitionKey": "p", "RowKey": str(i), "N": i}) for i in range(100)]
    )
    assert requests == ["POST"]
    assert len(list(table.list_entities())) == 100
    service.delete_table(table.table_name)


def test_what_storage_would_refuse_anyway_is_refused_before_sending(
    twins: dict[str, TableClient],
) -> None:
    table = twins["ours"]
    with pytest.raises(ValueError, match="one PartitionKey"):
        submit_transaction(
            table,
            [("upsert", {"PartitionKey": "a", "RowKey": "1"}),
             ("upsert", {"PartitionKey": "b", "RowKey": "1"})],
        )  # fmt: skip
    with pytest.raises(ValueError, match="at most 100"):
        submit_transaction(
            table, [("upsert", {"PartitionKey": "a", "RowKey": str(i)}) for i in range(101)]
        )
    with pytest.raises(ValueError, match="unknown transaction operation"):
        submit_transaction(table, [("merge", {"PartitionKey": "a", "RowKey": "1"})])
    assert submit_transaction(table, []) == []
    assert stored(table) == []
