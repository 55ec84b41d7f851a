"""Query argument parsing, continuation tokens, Accept negotiation and row rendering (pure)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import BadInputError, UnknownResourceError
from shared.core.meters import catalogue
from shared.query.arguments import (
    ApiPath,
    Granularity,
    Route,
    parse_path,
    parse_query,
    parse_time,
    query_arguments,
)
from shared.query.auth import Caller
from shared.query.caller_scope import CallerScope
from shared.query.continuation import ContinuationCodec, Cursor, PageState
from shared.query.reader import CollapsedRow, StoredRow, partition_key, visible_bound
from shared.query.rows import page_csv, usage_aggregate
from shared.query.usage_api import next_page_url, wants_csv
from shared.rating.engine import Month
from shared.storage.usage_rows import UsageRow

NOW = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)
SUB = "0b0e5a38-6c5f-4b64-9f0a-3a1f5ad7a111"
TENANT = ApiPath(Route.TENANT, SUB)
PROVIDER = ApiPath(Route.PROVIDER, SUB)
VM = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
BASE = {
    "api-version": "2015-06-01-preview",
    "reportedStartTime": "2026-11-20T00:00:00+00:00",
    "reportedEndTime": "2026-11-21T00:00:00+00:00",
}


def code_of(params: dict[str, str], path: ApiPath = TENANT) -> str:
    with pytest.raises(BadInputError) as caught:
        parse_query(path, params, NOW)
    return caught.value.code


def test_paths_pick_the_route_case_insensitively() -> None:
    """Both resources in any letter case; the subscription id is lower-cased."""
    assert parse_path(f"/{SUB.upper()}/providers/MICROSOFT.COMMERCE/UsageAggregates") == TENANT
    provider = parse_path(f"/{SUB}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates/")
    assert provider.route is Route.PROVIDER


@pytest.mark.parametrize(
    "remainder",
    [
        "//providers/Microsoft.Commerce/usageAggregates",
        "/providers/microsoft.commerce/usageaggregates",
    ],
)
def test_missing_subscription_segment(remainder: str) -> None:
    """An empty or absent subscription segment is SubscriptionIdMissingInRequest."""
    with pytest.raises(BadInputError) as caught:
        parse_path(remainder)
    assert caught.value.code == "SubscriptionIdMissingInRequest"


def test_unknown_resources_are_not_found() -> None:
    """Other resources under /subscriptions are 404, not a 400 of ours."""
    with pytest.raises(UnknownResourceError):
        parse_path(f"/{SUB}/providers/Microsoft.Compute/virtualMachines")


def test_defaults_and_case_insensitive_names() -> None:
    """Daily and showDetails=true by default; argument names in any case."""
    query = parse_query(TENANT, {key.upper(): value for key, value in BASE.items()}, NOW)
    assert query.granularity is Granularity.DAILY
    assert query.show_details is True
    assert query.start == datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"api-version": None}, "NoApiVersion"),
        ({"api-version": "2020-01-01"}, "InvalidApiVersionParameter"),
        ({"reportedStartTime": "2026-11-20T01:00:00Z"}, "InvalidProperty"),
        ({"reportedEndTime": "2026-11-19T00:00:00Z"}, "InvalidProperty"),
        ({"reportedEndTime": "2026-11-28T00:00:00Z"}, "RequestEndTimeIsInFuture"),
        ({"aggregationGranularity": "Monthly"}, "InvalidAggregationGranularity"),
        ({"showDetails": "yes"}, "InvalidProperty"),
        ({"REPORTEDSTARTTIME": "2026-11-20T00:00:00Z"}, "InvalidProperty"),  # given twice
    ],
)
def test_argument_errors(change: dict[str, str | None], code: str) -> None:
    """Each rule of the spec's argument table maps to its code."""
    params = dict(BASE)
    for name, value in change.items():
        if value is None:
            params.pop(name)
        else:
            params[name] = value
    assert code_of(params) == code


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T00:00:00Z",
        "2026-11-20T00:00:00+00:00",
        "2026-11-20T00:00:00 00:00",  # an unescaped + decoded as a space
        "2026-11-20T00%3a00%3a00%2b00%3a00",
        "2026-11-20T00%253a00%253a00Z",
        "2026-11-20T00:00:00.0000000Z",
        "2026-11-20T01:00:00+01:00",
    ],
)
def test_time_forms(text: str) -> None:
    """The forms real clients send all mean 2026-11-20 00:00 UTC."""
    assert parse_time(text) == datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T00:00:00Z\n",
        " 2026-11-20T00:00:00Z",
        "2026-11-20T00:00:00Z\u00a0",
        "\uff12\uff10\uff12\uff16-11-20T00:00:00Z",  # full-width digits
        "2026-11-20T0\u0660:00:00Z",  # an Arabic-Indic zero
        "2026-W47-5",  # week dates: fromisoformat takes them, the API does not
        "20261120T000000Z",
        "2026-11-20 00:00:00Z",
        "2026-11-20T00:00:00.00000000Z",  # eight fraction digits
        "2026-11-20T00:00:00Z" + "0" * 100,
    ],
)
def test_times_outside_the_exact_shape_are_refused(text: str) -> None:
    """ASCII digits in the documented ISO 8601 shape only: anything else is not a time."""
    assert parse_time(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "2026-1\u00b2",
        "\uff12\uff10\uff12\uff16-\uff11\uff11",
        "\u0662\u0660\u0662\u0666-\u0661\u0661",
        "2026-11\n",
        "2026-11 ",
        " 2026-11",
        "+2026-11",
        "2026-13",
        "1969-12",
        "9999-12",
        "2026-1",
    ],
)
def test_months_are_exactly_yyyy_mm_in_ascii_digits(text: str) -> None:
    """``2026-1²`` passed isdigit() and failed int() (a 500); other digits, spaces and
    newlines passed both. Only ``yyyy-MM`` in ASCII digits is a month."""
    assert Month.parse(text) is None
    assert Month.parse("2026-11") == Month(2026, 11)


def test_a_repeated_argument_is_named_only_if_it_is_ours() -> None:
    """One of ours is named in our spelling; any other name is described, never echoed."""
    for name in ("<img src=x onerror=alert(1)>", "n" * 5000, "caf\u00e9", "\u212aey"):
        with pytest.raises(BadInputError) as caught:
            parse_query(TENANT, [*BASE.items(), (name, "1"), (name, "2")], NOW)
        assert caught.value.target is None
        assert name[:20] not in caught.value.message
    with pytest.raises(BadInputError) as caught:
        parse_query(TENANT, [*BASE.items(), ("SHOWDETAILS", "true"), ("showdetails", "x")], NOW)
    assert caught.value.target == "showDetails"


@given(st.dictionaries(st.text(max_size=25), st.text(max_size=40), max_size=8))
def test_parse_query_only_ever_raises_bad_input(params: dict[str, str]) -> None:
    """Arbitrary arguments either parse or raise BadInputError (never another exception)."""
    error: BadInputError | None = None
    try:
        parse_query(TENANT, {**BASE, **params}, NOW)
    except BadInputError as raised:
        error = raised
    assert error is None or error.code


def test_partition_keys_and_the_visible_bound() -> None:
    """Hourly bound = the watermark hour; daily bound = the last day whose 23:00 is collected."""
    watermark = datetime(2026, 11, 20, 22, tzinfo=UTC)
    assert visible_bound(Granularity.HOURLY, watermark) == "H2026112022"
    assert visible_bound(Granularity.DAILY, watermark) == "D20261119"
    assert visible_bound(Granularity.DAILY, watermark + timedelta(hours=1)) == "D20261120"
    assert visible_bound(Granularity.HOURLY, None) == ""
    assert partition_key(Granularity.HOURLY, datetime(1, 1, 1, tzinfo=UTC)) == "H1970010100"


# --- continuation tokens -------------------------------------------------------------------


def scope_for(object_id: str = "caller-1") -> CallerScope:
    from shared.query import caller_scope

    return CallerScope(
        caller=Caller(object_id, None, frozenset(), False),
        path=TENANT,
        subscriber_id=None,
        subscription_ids=(SUB,),
        _key=caller_scope._KEY,
    )


def test_scope_cannot_be_made_outside_resolve_scope() -> None:
    """CallerScope refuses construction without the module's key."""
    with pytest.raises(TypeError):
        CallerScope(Caller("x", None, frozenset(), False), TENANT, None, (SUB,), object())


def test_tokens_round_trip_and_refuse_every_alteration() -> None:
    """Genuine tokens open; tampered, expired, foreign or rebound ones are refused (400)."""
    codec = ContinuationCodec(b"k" * 32, 3600)
    query = parse_query(TENANT, BASE, NOW)
    state = PageState("D20261120", Cursor(SUB, "D20261120", "2026112000_x_y"))
    token = codec.issue(scope_for(), query, state, NOW)
    assert codec.open(token, scope_for(), query, NOW) == state

    payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["c"][0] = "another-subscription"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    other_query = parse_query(TENANT, {**BASE, "showDetails": "false"}, NOW)
    for bad, scope, q, now in (
        (f"{forged}.{signature}", scope_for(), query, NOW),
        (token[:-2] + "AA", scope_for(), query, NOW),
        (token, scope_for("caller-2"), query, NOW),
        (token, scope_for(), other_query, NOW),
        (token, scope_for(), query, NOW + timedelta(hours=2)),
        (
            ContinuationCodec(b"z" * 32, 3600).issue(scope_for(), query, state, NOW),
            scope_for(),
            query,
            NOW,
        ),
        ("", scope_for(), query, NOW),
        ("a.b.c", scope_for(), query, NOW),
        ("x" * 5000, scope_for(), query, NOW),
        # The same bytes in another spelling: padded, standard base64, a trailing newline.
        (f"{token}=", scope_for(), query, NOW),
        (f"{payload}.{base64.b64encode(base64.urlsafe_b64decode(signature + '='))}",
         scope_for(), query, NOW),
        (f"{token}\n", scope_for(), query, NOW),
    ):  # fmt: skip
        with pytest.raises(BadInputError) as caught:
            codec.open(bad, scope, q, now)
        assert caught.value.code == "InvalidContinuationToken"


def test_next_link_is_built_from_the_base_url_and_our_own_spelling() -> None:
    """nextLink: the configured base, the route's path, the validated arguments spelled by
    us, every component percent-encoded, one token; nothing the client sent is copied."""
    query = parse_query(
        TENANT,
        [*BASE.items(), ("x", ">,<http://evil.example/?y="), ("ShowDetails", "FALSE")],
        NOW,
    )
    link = next_page_url("https://usage.example.test/api", query, "a.b+/=")
    assert link == (
        "https://usage.example.test/api/subscriptions/"
        f"{TENANT.subscription_id}/providers/Microsoft.Commerce/usageAggregates"
        "?api-version=2015-06-01-preview"
        "&reportedStartTime=2026-11-20T00%3A00%3A00%2B00%3A00"
        "&reportedEndTime=2026-11-21T00%3A00%3A00%2B00%3A00"
        "&aggregationGranularity=Daily&showDetails=false&continuationToken=a.b%2B%2F%3D"
    )
    # A path subscription that is not a GUID never reaches a link: it is refused first.
    with pytest.raises(BadInputError) as refused:
        parse_path("/a>b,<c/providers/microsoft.commerce/usageaggregates")
    assert (refused.value.code, refused.value.target) == ("InvalidProperty", "subscriptionId")
    assert "a>b" not in refused.value.message


def test_repeated_arguments_are_refused_whatever_their_spelling() -> None:
    """subscriberId twice, api-version twice, or two spellings of one name: 400, never the
    last value winning."""
    for repeated in (
        [("subscriberId", "a"), ("subscriberId", "b")],
        [("api-version", "2015-06-01-preview")],
        [("API-VERSION", "2015-06-01-preview")],
    ):
        with pytest.raises(BadInputError) as raised:
            parse_query(PROVIDER, [*BASE.items(), *repeated], NOW)
        assert raised.value.code == "InvalidProperty"
    assert query_arguments("https://h/p?a=1&a=2&b=&c") == [
        ("a", "1"),
        ("a", "2"),
        ("b", ""),
        ("c", ""),
    ]


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        (None, False),
        ("text/csv", True),
        ("text/csv, */*", True),
        ("application/json", False),
        ("text/csv;q=0.5, application/json", False),
        ("application/json;q=0.1, text/csv", True),
        ("text/csv;q=0", False),
    ],
)
def test_accept_negotiation(accept: str | None, csv: bool) -> None:
    """CSV only when the client prefers it to JSON."""
    assert wants_csv(accept) is csv


# --- rows ------------------------------------------------------------------------------------


def stored(tags: str | None, info: str | None) -> StoredRow:
    start = datetime(2026, 11, 20, 17, tzinfo=UTC)
    return StoredRow(
        SUB,
        "H2026112018",
        "2026112017_x_y",
        UsageRow(
            subscription_id=SUB,
            meter_id="9CD92D4C-BAFD-4492-B278-BEDC2DE8232A",
            usage_start=start,
            usage_end=start + timedelta(hours=1),
            quantity=8.0,
            resource_uri=VM,
            location="local",
            tags_json=tags,
            additional_info_json=info,
        ),
    )


def test_row_matches_the_spec_example() -> None:
    """The spec's example row, plus the catalogue's meterName, unit and meterCategory."""
    row = usage_aggregate(
        "caller-sub", stored('{"env":"prod"}', '{"ServiceType":"Standard_A4"}'), catalogue()
    )
    name = f"{SUB}-9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
    assert (
        row["id"] == f"/subscriptions/caller-sub/providers/Microsoft.Commerce/UsageAggregate/{name}"
    )
    assert row["name"] == name
    properties = row["properties"]
    assert properties["usageStartTime"] == "2026-11-20T17:00:00+00:00"
    assert properties["quantity"] == 8.0
    assert json.loads(properties["instanceData"]) == {
        "Microsoft.Resources": {
            "resourceUri": VM,
            "location": "local",
            "tags": {"env": "prod"},
            "additionalInfo": {"ServiceType": "Standard_A4"},
        }
    }
    assert properties["meterName"]
    assert properties["unit"]
    assert properties["meterCategory"]


@pytest.mark.parametrize("stored_text", [None, "", "null", '"text"', "not json"])
def test_odd_stored_tags_become_null(stored_text: str | None) -> None:
    """Tags/additionalInfo that are not JSON objects are emitted as null."""
    row = usage_aggregate(SUB, stored(stored_text, stored_text), catalogue())
    resources = json.loads(row["properties"]["instanceData"])["Microsoft.Resources"]
    assert resources["tags"] is None
    assert resources["additionalInfo"] is None


def test_collapsed_rows_have_no_instance_data_and_csv_flattens() -> None:
    """Collapsed rows drop instanceData; CSV has a header and flattened instance columns."""
    start = datetime(2026, 11, 20, 17, tzinfo=UTC)
    collapsed = CollapsedRow(
        SUB, "k", "9cd92d4c-bafd-4492-b278-bedc2de8232a", start, start + timedelta(hours=1), 3.5
    )
    row = usage_aggregate(SUB, collapsed, catalogue())
    assert "instanceData" not in row["properties"]
    assert row["properties"]["meterId"] == "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A"
    text = page_csv([stored('{"env":"=cmd"}', None), collapsed], catalogue()).decode()
    lines = text.splitlines()
    assert lines[0].startswith("subscriptionId,usageStartTime,usageEndTime,meterId")
    assert len(lines) == 3
    assert '"{""env"":""=cmd""}"' in lines[1]


def test_daily_rows_of_several_reported_days_merge_into_one_per_resource() -> None:
    """A late row puts one (usage day, meter, resource) in two reported days: one row out."""
    from datetime import UTC, datetime, timedelta

    from shared.query.reader import merge_daily_rows

    day = datetime(2026, 11, 20, tzinfo=UTC)

    def entity(reported: str, row_key: str, quantity: float, env: str) -> dict[str, object]:
        return {
            "PartitionKey": reported,
            "RowKey": row_key,
            "SubscriptionId": "s",
            "MeterId": "M",
            "UsageStartTime": day,
            "UsageEndTime": day + timedelta(days=1),
            "Quantity": quantity,
            "ResourceUri": "/subscriptions/s/providers/p/t/r",
            "Location": "local",
            "Tags": f'{{"env":"{env}"}}',
        }

    rows = merge_daily_rows(
        "s",
        [
            entity("D20261121", "20261120_m_a", 0.25, "late"),
            entity("D20261120", "20261120_m_a", 23.0, "first"),
            entity("D20261120", "20261120_m_b", 5.0, "only"),
        ],
    )
    assert [(row.row_key, row.row.quantity) for row in rows] == [
        ("20261120_m_a", 23.25),
        ("20261120_m_b", 5.0),
    ]
    assert rows[0].row.tags_json == '{"env":"late"}'  # the newest reported day's
