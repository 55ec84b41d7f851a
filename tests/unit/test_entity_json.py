"""Entities are written exactly as the Tables SDK writes them (the JSON text json.dumps gives of
its conversion), on the fast path and off it."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from azure.data.tables import EdmType
from hypothesis import given
from hypothesis import strategies as st

from shared.storage.transport.direct import entity_json, sdk_entity_json


class Colour(enum.Enum):
    RED = "red"


def sdk(entity: dict[str, Any]) -> str | type[Exception]:
    try:
        return sdk_entity_json(entity)
    except TypeError:
        return TypeError


def ours(entity: dict[str, Any]) -> str | type[Exception]:
    try:
        return entity_json(entity)
    except TypeError:
        return TypeError


aware = st.datetimes(
    min_value=datetime(1601, 1, 2),
    max_value=datetime(9998, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min]),
)
values = st.one_of(
    st.text(),
    st.floats(),  # NaN and infinities included: the SDK writes them as strings
    st.integers(min_value=-(2**40), max_value=2**40),  # past 32 bits the SDK refuses
    st.booleans(),
    aware,
    st.none(),
)
rare = st.one_of(
    st.uuids(),
    st.binary(max_size=8),
    st.just(Colour.RED),
    st.datetimes(min_value=datetime(1601, 1, 2)),  # naive: the SDK reads it as local
    st.tuples(st.integers(0, 2**40), st.just(EdmType.INT64)),
    st.tuples(st.text(), st.just(EdmType.STRING)),
)


@given(st.dictionaries(st.text(min_size=1, max_size=5), values, max_size=8))
def test_the_apps_plain_values_are_written_as_the_sdk_writes_them(entity: dict[str, Any]) -> None:
    assert ours(entity) == sdk(entity)


@given(
    st.dictionaries(st.text(min_size=1, max_size=5), values, max_size=6),
    st.text(min_size=6, max_size=8),
    rare,
)
def test_any_other_value_sends_the_whole_entity_to_the_sdks_conversion(
    entity: dict[str, Any], name: str, value: Any
) -> None:
    entity[name] = value
    assert ours(entity) == sdk(entity)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 2**31, -(2**31) - 1, uuid.UUID(int=7), b"\x00", Colour.RED],
)
def test_edges_of_the_fast_path(value: Any) -> None:
    entity = {"PartitionKey": "p", "RowKey": "r", "Value": value}
    assert ours(entity) == sdk(entity)


def test_a_name_that_is_an_annotation_is_left_to_the_sdk() -> None:
    entity = {"Value": "text", "Value@odata.type": "Edm.Guid", "Count": 3}
    # The later value wins, as in the SDK's dictionary (written out, not guessed here).
    assert ours(entity) == sdk(entity)
    assert json.loads(str(ours(entity)))["Value@odata.type"] == "Edm.Guid"


def test_text_escapes_as_json_dumps_does() -> None:
    text = 'quote " backslash \\ control \x01 unicode \u00e9 \U0001f600'
    entity = {'Name \u00e9"\\': text, "F": 0.1}
    assert ours(entity) == sdk(entity)
    assert json.loads(str(ours(entity)))['Name \u00e9"\\'] == text
