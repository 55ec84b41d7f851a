"""Our entity queries against the SDK's, on real Azurite.

Every query runs through ``TableClient.query_entities`` and through
``shared.storage.queries.query_entities`` on the same table: the entities (values, their
types, ETags and timestamps), their order and what is raised must be the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import EdmType, TableClient, TableEntity, TableServiceClient

from devstack.azurite import Azurite
from shared.storage.queries import query_entities
from tests.integration.test_transactions import VALUES


@pytest.fixture
def table(azurite: Azurite) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    created = service.create_table("q" + uuid.uuid4().hex[:12])
    yield created
    service.delete_table(created.table_name)


def answers(table: TableClient, query_filter: str, **options: Any) -> Any:
    """What a query returns (entities with their metadata) or raises, comparable."""
    try:
        if options.pop("ours"):
            found = query_entities(table, query_filter, **options)
        else:
            found = list(table.query_entities(query_filter, **options))
    except HttpResponseError as error:
        code = getattr(error, "error_code", None)
        return ("raised", type(error).__name__, error.status_code, str(code))
    assert all(isinstance(e, TableEntity) for e in found)
    return [
        (sorted((k, repr(v), type(v).__name__) for k, v in e.items()), e.metadata)
        for e in found
        if isinstance(e, TableEntity)
    ]


def agree(table: TableClient, query_filter: str, **options: Any) -> Any:
    ours = answers(table, query_filter, ours=True, **options)
    assert ours == answers(table, query_filter, ours=False, **options)
    return ours


def test_values_types_and_metadata_are_the_sdks(table: TableClient) -> None:
    table.create_entity(
        {
            "PartitionKey": "p'1 %",
            "RowKey": "it's",
            **VALUES,
            "Id": uuid.UUID(int=42),
            "Raw": b"\x00\xff",
        }
    )
    found = agree(table, "PartitionKey eq @pk", parameters={"pk": "p'1 %"})
    assert len(found) == 1
    selected = agree(
        table, "RowKey eq @rk and Whole eq @n", parameters={"rk": "it's", "n": 7}, select=["Big"]
    )
    assert [name for name, _, _ in selected[0][0]] == ["Big"]
    assert agree(table, "Flag eq @f", parameters={"f": False}) == []


def test_odd_keys_and_values_are_quoted_as_the_sdk_quotes_them(table: TableClient) -> None:
    odd = ["plain", "it's", "a b", "100%", "x+y&z=1", "ünï çødé", "(paren)", "comma,semi;", "#?"]
    for key in odd:
        if "#" in key or "?" in key:
            continue  # keys may not hold them; values may
        table.create_entity({"PartitionKey": "p", "RowKey": key, "Value": key + " #?"})
    for key in odd:
        expected = 0 if "#" in key else 1
        assert len(agree(table, "RowKey eq @k", parameters={"k": key})) == expected
        found = agree(table, "Value eq @v", parameters={"v": key + " #?"}, select=["Value"])
        assert len(found) == expected


def test_pages_are_followed_to_the_last(table: TableClient) -> None:
    """Azurite answers 1,000 entities a page: 2,345 take three, in key order."""
    for start in range(0, 2_345, 100):
        table.submit_transaction(
            [
                ("create", {"PartitionKey": "p", "RowKey": f"{n:05d}", "N": n})
                for n in range(start, min(start + 100, 2_345))
            ]
        )
    found = agree(
        table, "PartitionKey eq @pk and RowKey ge @low", parameters={"pk": "p", "low": ""}
    )
    assert len(found) == 2_345
    ranged = agree(
        table,
        "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
        parameters={"pk": "p", "low": "00990", "high": "02010"},
        select=["N"],
    )
    assert len(ranged) == 1_020


def test_refusals_raise_what_the_sdk_raises(azurite: Azurite, table: TableClient) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    missing = service.get_table_client("q" + uuid.uuid4().hex[:12])
    refused = agree(missing, "PartitionKey eq @pk", parameters={"pk": "p"})
    assert refused[:3] == ("raised", "ResourceNotFoundError", 404)
    malformed = agree(table, "PartitionKey eq and eq")
    assert malformed[0] == "raised"


def test_plain_entities_are_the_sdks_values_for_strings_and_int32(table: TableClient) -> None:
    table.create_entity(
        {
            "PartitionKey": "p",
            "RowKey": "r",
            "Text": "héllo",
            "Count": 7,
            "Big": (2**40, EdmType.INT64),
        }
    )
    sdk = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": "p"}))
    wanted = ["RowKey", "Text", "Count"]
    plain = query_entities(
        table, "PartitionKey eq @pk", parameters={"pk": "p"}, select=wanted, plain=True
    )
    assert plain == [{name: sdk[0][name] for name in wanted}]
    assert [type(plain[0][name]) for name in wanted] == [str, str, int]
    # What plain is not for: an Int64 comes back as the service's string.
    (big,) = query_entities(
        table, "RowKey eq @rk", parameters={"rk": "r"}, select=["Big"], plain=True
    )
    assert big == {"Big": str(2**40)}
