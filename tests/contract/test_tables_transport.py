"""The tables transports' contract, on real Azurite: what the app relies on, on both paths.

Every test runs once per transport (``pytest --tables-transport sdk|direct|both``, both by
default) and asserts the contract itself: the entities stored (values and their types, read
back through the SDK's public reader), what is answered, what is raised, and how many
requests went through the client's pipeline. A path passes only if it gives exactly these,
so both paths passing means they give the same. The direct path must also send the entity
text the SDK sends (``test_the_direct_path_writes_what_the_sdk_writes``). ``./dev canary``
runs this module on the newest SDK versions the registry serves.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableEntity,
    TableServiceClient,
    UpdateMode,
)

from devstack.azurite import Azurite
from shared.storage.transport import TablesTransport
from shared.storage.transport.sdk import SdkTransport

# One value of every property type (a string with quotes, backslash, newline, non-ASCII
# and an astral character; both EDM-typed forms; naive and aware datetimes; NaN and
# infinity), and None, which is not stored.
VALUES: dict[str, Any] = {
    "Text": 'héllo "quoted" \\ back\nline \U0001f600',
    "Empty": "",
    "Float": 2.5,
    "NotANumber": math.nan,
    "Infinite": -math.inf,
    "Whole": 7,
    "Lowest": -(2**31),
    "Big": EntityProperty(2**40, EdmType.INT64),
    "BigTuple": (-(2**40), EdmType.INT64),
    "TypedText": EntityProperty("typed", EdmType.STRING),
    "Flag": True,
    "Off": False,
    "When": datetime(2026, 11, 2, 14, 30, 15, 123456, tzinfo=UTC),
    "Naive": datetime(2026, 1, 2, 3, 4, 5),
    "Id": uuid.UUID(int=42),
    "Raw": b"\x00\xff",
    "Missing": None,
}
# What VALUES are read back as: (type, repr).
STORED_VALUES: dict[str, tuple[str, str]] = {
    "Text": ("str", repr(VALUES["Text"])),
    "Empty": ("str", "''"),
    "Float": ("float", "2.5"),
    "NotANumber": ("float", "nan"),
    "Infinite": ("float", "-inf"),
    "Whole": ("int", "7"),
    "Lowest": ("int", "-2147483648"),
    "Big": (
        "EntityProperty",
        "EntityProperty(value=1099511627776, edm_type=<EdmType.INT64: 'Edm.Int64'>)",
    ),
    "BigTuple": (
        "EntityProperty",
        "EntityProperty(value=-1099511627776, edm_type=<EdmType.INT64: 'Edm.Int64'>)",
    ),
    "TypedText": ("str", "'typed'"),
    "Flag": ("bool", "True"),
    "Off": ("bool", "False"),
    "When": (
        "TablesEntityDatetime",
        "TablesEntityDatetime(2026, 11, 2, 14, 30, 15, 123456, tzinfo=datetime.timezone.utc)",
    ),
    "Naive": (
        "TablesEntityDatetime",
        "TablesEntityDatetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)",
    ),
    "Id": ("UUID", "UUID('00000000-0000-0000-0000-00000000002a')"),
    "Raw": ("bytes", r"b'\x00\xff'"),
}
ODD_KEYS = ["plain", "it's", "a b", "100%", "x+y&z=1", "ünï çødé \U0001f600", "(paren)", "c,s;"]
PARTITION = "p'1 %ü"


class Seen:
    """The requests the clients' pipeline sent (azure-core's ``raw_request_hook``)."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, pipeline_request: Any) -> None:
        self.requests.append(pipeline_request.http_request)

    def methods(self) -> list[str]:
        return [request.method for request in self.requests]


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def service(azurite: Azurite, seen: Seen) -> TableServiceClient:
    return TableServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=seen
    )


@pytest.fixture
def transport(transport_name: str) -> TablesTransport:
    """The transport under test (importing the direct one is part of its contract)."""
    if transport_name == "sdk":
        return SdkTransport()
    from shared.storage.transport.direct import DirectTransport

    return DirectTransport()


@pytest.fixture
def table(service: TableServiceClient, seen: Seen) -> Iterator[TableClient]:
    """An empty table of its own; ``seen`` cleared once it exists."""
    created = service.create_table("c" + uuid.uuid4().hex[:12])
    seen.requests.clear()
    yield created
    service.delete_table(created.table_name)


def stored(table: TableClient) -> dict[str, dict[str, tuple[str, str]]]:
    """Every stored entity by RowKey: its properties' (type, repr), keys included."""
    return {
        entity["RowKey"]: {
            name: (type(value).__name__, repr(value)) for name, value in entity.items()
        }
        for entity in table.list_entities()
    }


def etags(table: TableClient) -> dict[str, str]:
    return {entity["RowKey"]: entity.metadata["etag"] for entity in table.list_entities()}


def raised(call: Callable[[], object]) -> tuple[str, int | None, str | None]:
    """What ``call`` raised: the exception's type, HTTP status and the service's error code."""
    try:
        call()
    except (HttpResponseError, ValueError, TypeError) as error:
        code = getattr(error, "error_code", None)
        code = code and str(getattr(code, "value", code))  # the SDK's TableErrorCode, or text
        return (type(error).__name__, getattr(error, "status_code", None), code)
    pytest.fail("nothing was raised")


def keyed(partition: str, row: str, **values: Any) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": row, **values}


def test_creates_store_every_property_type_under_odd_keys(
    transport: TablesTransport, table: TableClient, seen: Seen
) -> None:
    """Creates store every property type under keys that need quoting, in one request,
    and answer each entity's stored ETag."""
    entities = [keyed(PARTITION, key, **VALUES) for key in ODD_KEYS]
    answer = transport.submit_transaction(table, [("create", entity) for entity in entities])
    assert seen.methods() == ["POST"]
    now = etags(table)
    assert answer == [{"etag": now[key]} for key in ODD_KEYS]
    keys = {"PartitionKey": ("str", repr(PARTITION))}
    assert stored(table) == {
        key: {**keys, "RowKey": ("str", repr(key)), **STORED_VALUES} for key in ODD_KEYS
    }


def test_upserts_merge_by_default_or_replace(
    transport: TablesTransport, table: TableClient
) -> None:
    """An upsert merges (by default or by mode) or replaces, and creates what is missing."""
    for row in ("merged", "replaced"):
        table.create_entity(keyed("p", row, A=1.0, B="b"))
    answer = transport.submit_transaction(
        table,
        [
            ("upsert", keyed("p", "merged", A=2.0), {"mode": UpdateMode.MERGE}),
            ("upsert", keyed("p", "replaced", C=3), {"mode": UpdateMode.REPLACE}),
            ("upsert", keyed("p", "new merged", D="d")),
            ("upsert", keyed("p", "new replaced", E=False), {"mode": UpdateMode.REPLACE}),
        ],
    )
    now = etags(table)
    assert answer == [
        {"etag": now[row]} for row in ("merged", "replaced", "new merged", "new replaced")
    ]
    assert {
        row: {k: v for k, v in values.items() if k not in ("PartitionKey", "RowKey")}
        for row, values in stored(table).items()
    } == {
        "merged": {"A": ("float", "2.0"), "B": ("str", "'b'")},
        "replaced": {"C": ("int", "3")},
        "new merged": {"D": ("str", "'d'")},
        "new replaced": {"E": ("bool", "False")},
    }


def test_updates_and_deletes_with_and_without_etags(
    transport: TablesTransport, table: TableClient
) -> None:
    """Updates and deletes hold to the ETag given, or to any version without one."""
    for row in ("guarded", "any", "deleted guarded", "deleted any"):
        table.create_entity(keyed("p", row, A=1.0, B="b"))
    tags = etags(table)
    guarded = {"etag": tags["guarded"], "match_condition": MatchConditions.IfNotModified}
    answer = transport.submit_transaction(
        table,
        [
            ("update", keyed("p", "guarded", A=2.0), {**guarded, "mode": UpdateMode.MERGE}),
            ("update", keyed("p", "any", C=3), {"mode": UpdateMode.REPLACE}),
            (
                "delete",
                keyed("p", "deleted guarded"),
                {"etag": tags["deleted guarded"], "match_condition": MatchConditions.IfNotModified},
            ),
            ("delete", keyed("p", "deleted any")),
        ],
    )
    now = etags(table)
    assert answer == [{"etag": now["guarded"]}, {"etag": now["any"]}, {}, {}]
    rows = stored(table)
    assert sorted(rows) == ["any", "guarded"]
    assert (rows["guarded"]["A"], rows["guarded"]["B"]) == (("float", "2.0"), ("str", "'b'"))
    assert "A" not in rows["any"]
    assert rows["any"]["C"] == ("int", "3")


STALE = "W/\"datetime'2020-01-01T00%3A00%3A00.0000000Z'\""


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (("create", keyed("p", "present", A=9.0)), (409, "EntityAlreadyExists")),
        (
            (
                "update",
                keyed("p", "present", A=9.0),
                {"etag": STALE, "match_condition": MatchConditions.IfNotModified},
            ),
            (412, "UpdateConditionNotSatisfied"),
        ),
        (
            (
                "delete",
                keyed("p", "present"),
                {"etag": STALE, "match_condition": MatchConditions.IfNotModified},
            ),
            (412, "UpdateConditionNotSatisfied"),
        ),
        (("update", keyed("p", "absent", A=9.0)), (404, "ResourceNotFound")),
        (("delete", keyed("p", "absent")), (404, "ResourceNotFound")),
        (("upsert", keyed("p", "huge", A="x" * 70_000)), (400, "PropertyValueTooLarge")),
    ],
    ids=[
        "exists",
        "stale-etag",
        "stale-etag-delete",
        "update-missing",
        "delete-missing",
        "value-too-large",
    ],
)
def test_a_refused_operation_raises_the_services_error_and_writes_nothing(
    transport: TablesTransport, table: TableClient, failing: Any, expected: tuple[int, str]
) -> None:
    """One refused operation refuses the transaction: TableTransactionError with the
    failed part's status and code, and nothing of it is stored."""
    table.create_entity(keyed("p", "present", A=1.0))
    operations = [
        ("upsert", keyed("p", "before", A=1.0)),
        failing,
        ("upsert", keyed("p", "after", A=1.0)),
    ]
    answer = raised(lambda: transport.submit_transaction(table, operations))
    assert answer == ("TableTransactionError", *expected)
    assert stored(table) == {
        "present": {
            "PartitionKey": ("str", "'p'"),
            "RowKey": ("str", "'present'"),
            "A": ("float", "1.0"),
        },
    }


def test_a_missing_table_is_not_found(
    transport: TablesTransport, service: TableServiceClient
) -> None:
    """Writing to a table that does not exist is a refused transaction, reading it is not
    found: both 404 TableNotFound."""
    missing = service.get_table_client("c" + uuid.uuid4().hex[:12])
    write = raised(lambda: transport.submit_transaction(missing, [("upsert", keyed("p", "r"))]))
    read = raised(
        lambda: transport.query_entities(missing, "PartitionKey eq @pk", parameters={"pk": "p"})
    )
    assert write == ("TableTransactionError", 404, "TableNotFound")
    assert read == ("ResourceNotFoundError", 404, "TableNotFound")


def test_size_limits(transport: TablesTransport, table: TableClient, seen: Seen) -> None:
    """100 operations commit in one request; 101 are refused before sending; a body over
    4 MiB is refused by storage as RequestTooLargeError (413) and stores nothing."""
    hundred = [("upsert", keyed("p", f"{n:03d}", N=n)) for n in range(100)]
    assert len(transport.submit_transaction(table, hundred)) == 100
    assert seen.methods() == ["POST"]
    seen.requests.clear()
    more = [*hundred, ("upsert", keyed("p", "100", N=100))]
    assert raised(lambda: transport.submit_transaction(table, more)) == ("ValueError", None, None)
    assert seen.requests == []
    big = [("upsert", keyed("q", f"{n:03d}", A="x" * 30_000, B="y" * 30_000)) for n in range(80)]
    answer = raised(lambda: transport.submit_transaction(table, big))
    assert answer == ("RequestTooLargeError", 413, "RequestBodyTooLarge")
    assert len(stored(table)) == 100


@pytest.mark.parametrize(
    ("operations", "expected"),
    [
        ([("upsert", keyed("a", "1")), ("upsert", keyed("b", "1"))], "ValueError"),
        ([("merge", keyed("a", "1"))], "ValueError"),
        ([("upsert", {"PartitionKey": "a"})], "ValueError"),
        ([("upsert", keyed("a", 1))], "TypeError"),  # type: ignore[arg-type]
        ([("upsert", keyed("a", "1"), {"mode": "sideways"})], "ValueError"),
        ([("update", keyed("a", "1"), {"etag": STALE})], "ValueError"),
        (
            [("delete", keyed("a", "1"), {"match_condition": MatchConditions.IfNotModified})],
            "ValueError",
        ),
        (
            [
                (
                    "delete",
                    keyed("a", "1"),
                    {"match_condition": MatchConditions.IfModified, "etag": STALE},
                )
            ],
            "ValueError",
        ),
    ],
    ids=[
        "two-partitions",
        "unknown-kind",
        "no-row-key",
        "key-not-a-string",
        "unknown-mode",
        "etag-without-condition",
        "condition-without-etag",
        "unsupported-condition",
    ],
)
def test_what_storage_would_refuse_is_refused_before_sending(
    transport: TablesTransport,
    table: TableClient,
    seen: Seen,
    operations: Sequence[Any],
    expected: str,
) -> None:
    """Malformed transactions raise before any request, and an empty one sends nothing."""
    assert raised(lambda: transport.submit_transaction(table, operations))[0] == expected
    assert transport.submit_transaction(table, []) == []
    assert seen.requests == []
    assert stored(table) == {}


def test_queries_return_every_type_with_its_metadata(
    transport: TablesTransport, table: TableClient, seen: Seen
) -> None:
    """A query answers the SDK's entities: every value typed, ETag and timestamp in
    ``metadata``; ``select`` narrows them; parameters of each type are substituted."""
    table.create_entity(keyed(PARTITION, "it's", **VALUES))
    reference = table.get_entity(PARTITION, "it's")
    seen.requests.clear()
    (found,) = transport.query_entities(table, "PartitionKey eq @pk", parameters={"pk": PARTITION})
    assert seen.methods() == ["GET"]
    assert isinstance(found, TableEntity)
    assert {k: (type(v).__name__, repr(v)) for k, v in found.items()} == {
        "PartitionKey": ("str", repr(PARTITION)),
        "RowKey": ("str", '"it\'s"'),
        **STORED_VALUES,
    }
    assert found.metadata == reference.metadata
    (selected,) = transport.query_entities(
        table,
        "RowKey eq @rk and Whole eq @n and Flag eq @f and When eq @t",
        parameters={"rk": "it's", "n": 7, "f": True, "t": VALUES["When"]},
        select=["Big", "Text"],
    )
    assert {k: (type(v).__name__, repr(v)) for k, v in selected.items()} == {
        "Big": STORED_VALUES["Big"],
        "Text": STORED_VALUES["Text"],
    }
    assert transport.query_entities(table, "Flag eq @f", parameters={"f": False}) == []


def test_odd_keys_and_values_are_quoted(transport: TablesTransport, table: TableClient) -> None:
    """Keys and values with quotes, spaces, %, +, &, =, non-ASCII, # and ? match exactly."""
    for key in ODD_KEYS:
        table.create_entity(keyed("p", key, Value=key + " #?"))
    for key in ODD_KEYS:
        by_key = transport.query_entities(table, "RowKey eq @k", parameters={"k": key})
        assert [entity["RowKey"] for entity in by_key] == [key]
        by_value = transport.query_entities(
            table, "Value eq @v", parameters={"v": key + " #?"}, select=["Value"]
        )
        assert [dict(entity) for entity in by_value] == [{"Value": key + " #?"}]


@pytest.fixture(scope="module")
def paged(service: TableServiceClient) -> Iterator[TableClient]:
    """1,100 entities over two partitions, seeded once: Azurite answers 1,000 a page, so the
    first page ends inside the second partition."""
    created = service.create_table("c" + uuid.uuid4().hex[:12])
    for partition, count in (("a", 995), ("b", 105)):
        for start in range(0, count, 100):
            created.submit_transaction(
                [
                    ("create", keyed(partition, f"{n:05d}", N=n))
                    for n in range(start, min(start + 100, count))
                ]
            )
    yield created
    service.delete_table(created.table_name)


def test_pages_are_followed_across_partitions_to_the_last(
    transport: TablesTransport, paged: TableClient, seen: Seen
) -> None:
    """Continuation (next partition and row) is followed: every entity once, in key
    order, one request per page; a range with ``select`` too."""
    seen.requests.clear()
    found = transport.query_entities(paged, "RowKey ge @low", parameters={"low": ""})
    assert seen.methods() == ["GET"] * 2
    assert [(e["PartitionKey"], e["N"]) for e in found] == [
        *(("a", n) for n in range(995)),
        *(("b", n) for n in range(105)),
    ]
    ranged = transport.query_entities(
        paged,
        "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
        parameters={"pk": "a", "low": "00490", "high": "00510"},
        select=["N"],
    )
    assert [dict(entity) for entity in ranged] == [{"N": n} for n in range(490, 510)]


def test_a_malformed_filter_is_refused(transport: TablesTransport, table: TableClient) -> None:
    """A filter storage cannot parse raises its 400."""
    answer = raised(lambda: transport.query_entities(table, "PartitionKey eq and eq"))
    assert answer[:2] == ("HttpResponseError", 400)


def test_plain_answers_strings_and_int32_as_plain_dicts(
    transport: TablesTransport, table: TableClient
) -> None:
    """``plain`` reads (String and Int32 only) give plain dicts of the same values."""
    table.create_entity(keyed("p", "r", Text="héllo", Count=7, Big=(2**40, EdmType.INT64)))
    plain = transport.query_entities(
        table,
        "PartitionKey eq @pk",
        parameters={"pk": "p"},
        select=["RowKey", "Text", "Count"],
        plain=True,
    )
    assert plain == [{"RowKey": "r", "Text": "héllo", "Count": 7}]
    assert [type(value) for value in plain[0].values()] == [str, str, int]
    assert not hasattr(plain[0], "metadata")


_CHANGESET = re.compile(rb"--changeset_[0-9a-f-]+")


def sub_requests(body: bytes) -> list[tuple[str, str | None, bytes]]:
    """Each operation of a ``$batch`` body: request line (host and table left out),
    If-Match, and the entity's JSON text."""
    found = []
    for part in _CHANGESET.split(body)[1:-1]:
        _, _, request = part.partition(b"\r\n\r\n")
        head, _, content = request.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, url, _ = lines[0].split(" ")
        if_match = next((line[10:] for line in lines if line.startswith("If-Match: ")), None)
        found.append(
            (f"{method} {url[url.index('/', 8) :].split('/', 3)[-1]}", if_match, content.strip())
        )
    return found


def test_the_direct_path_writes_what_the_sdk_writes(
    transport_name: str, service: TableServiceClient, seen: Seen
) -> None:
    """The direct path's operations (request lines, If-Match, entity JSON character for
    character) are the SDK's: an SDK that encodes differently fails here first."""
    if transport_name == "sdk":
        pytest.skip("the SDK is the reference the direct path is held to")
    from shared.storage.transport.direct import DirectTransport

    bodies: dict[str, list[tuple[str, str | None, bytes]]] = {}
    for name, transport in (("sdk", SdkTransport()), ("direct", DirectTransport())):
        table = service.create_table("c" + uuid.uuid4().hex[:12])
        table.create_entity(keyed(PARTITION, "it's", A=1.0))
        tag = etags(table)["it's"]
        seen.requests.clear()
        transport.submit_transaction(
            table,
            [
                ("create", keyed(PARTITION, "x+y&z=1", **VALUES)),
                ("upsert", keyed(PARTITION, "a b", **VALUES), {"mode": UpdateMode.REPLACE}),
                ("upsert", keyed(PARTITION, "100%", Text="t", N=1.5)),
                (
                    "update",
                    keyed(PARTITION, "it's", Flag=True),
                    {"etag": tag, "match_condition": MatchConditions.IfNotModified},
                ),
            ],
        )
        (request,) = seen.requests
        body = request.body if isinstance(request.body, bytes) else request.body.encode()
        bodies[name] = [
            (
                line.replace(table.table_name, "{table}"),
                if_match and if_match.replace(tag, "{etag}"),
                content,
            )
            for line, if_match, content in sub_requests(body)
        ]
        service.delete_table(table.table_name)
    assert len(bodies["direct"]) == len(bodies["sdk"])
    for index, (direct, sdk) in enumerate(zip(bodies["direct"], bodies["sdk"], strict=True)):
        assert direct == sdk, f"operation {index}: {first_change(direct, sdk)}"


def first_change(direct: tuple[Any, ...], sdk: tuple[Any, ...]) -> str:
    """Where one sub-request of the direct path first differs from the SDK's, in one line."""
    for part, ours, theirs in zip(("request line", "If-Match", "entity"), direct, sdk, strict=True):
        if ours != theirs:
            ours, theirs = str(ours), str(theirs)
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), len(ours)
            )
            start = max(at - 20, 0)
            return (
                f"{part} differs at character {at}: direct {ours[start : at + 40]!r}, "
                f"SDK {theirs[start : at + 40]!r}"
            )
    return "equal"
