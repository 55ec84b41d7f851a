"""The partition writer against Azurite's real limits: byte-sized batches, refusals isolated."""

from __future__ import annotations

import pytest

from shared.core.errors import BadInputError
from shared.storage.account import StorageAccount
from shared.storage.table_writer import (
    MAX_BATCH,
    MAX_BATCH_BYTES,
    PartitionWriter,
    chunks,
    delete_keys,
    entity_bytes,
)


def entities(count: int, *, size: int = 10, poison: int | None = None) -> list[dict]:
    """``count`` entities of one partition; ``poison`` carries a property storage refuses."""
    made = []
    for index in range(count):
        text = "p" * 40_000 if index == poison else "x" * size
        made.append({"PartitionKey": "P", "RowKey": f"r{index:03d}", "Text": text})
    return made


def stored_keys(account: StorageAccount, table: str) -> list[str]:
    return sorted(entity["RowKey"] for entity in account.table_named(table).list_entities())


def test_batches_are_cut_by_count_and_by_bytes() -> None:
    """101 entities of 60 KB make batches under 4 MiB; small ones make batches of 100."""
    large = entities(101, size=60_000)
    batches = list(chunks(large))
    assert sum(len(batch) for batch in batches) == 101
    assert all(sum(map(entity_bytes, batch)) <= MAX_BATCH_BYTES for batch in batches)
    assert len(batches) == 2
    assert [len(batch) for batch in chunks(entities(250))] == [MAX_BATCH, MAX_BATCH, 50]


def test_refused_entities_are_isolated_and_the_rest_is_written(account: StorageAccount) -> None:
    """One entity Azurite refuses (a 40,000-character property) leaves 149 of 150 stored."""
    table = account.settings.table_name("writer")
    with PartitionWriter(account, parallelism=2, isolate_refusals=True) as writer:
        writer.write_partition(table, entities(150, poison=77))
    assert [refusal.entity["RowKey"] for refusal in writer.refused] == ["r077"]
    assert writer.refused[0].status == 400
    assert "PropertyValueTooLarge" in writer.refused[0].code
    assert writer.entities_written == 149
    assert stored_keys(account, table) == [f"r{i:03d}" for i in range(150) if i != 77]


def test_without_isolation_a_refused_batch_is_an_error(account: StorageAccount) -> None:
    """Writers of the app's own tables keep failing loudly (StorageRefusedBatch)."""
    table = account.settings.table_name("writer")
    with pytest.raises(BadInputError) as raised, PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table, entities(3, poison=1))
    assert raised.value.code == "StorageRefusedBatch"


def test_delete_keys_removes_what_it_is_given_and_skips_what_is_gone(
    account: StorageAccount,
) -> None:
    """Deleting present and absent keys (more than one batch) leaves exactly the others."""
    table = account.settings.table_name("writer")
    with PartitionWriter(account, parallelism=1) as writer:
        writer.write_partition(table, entities(120))
    doomed = [f"r{i:03d}" for i in range(0, 120, 2)] + ["absent"]
    assert delete_keys(account, table, "P", doomed) == 61
    assert stored_keys(account, table) == [f"r{i:03d}" for i in range(1, 120, 2)]
    assert delete_keys(account, "nosuchtable", "P", ["x"]) == 1


def test_a_refusal_that_does_not_blame_the_entity_still_fails(account: StorageAccount) -> None:
    """A request storage refuses whatever it holds (here: a table name it will not create)
    fails the write instead of listing every entity as refused."""
    with (
        pytest.raises(BadInputError) as raised,
        PartitionWriter(account, parallelism=1, isolate_refusals=True) as writer,
    ):
        writer.write_partition("x", entities(3))
    assert raised.value.code == "StorageRefusedBatch"
