"""Pure parts of ``ops aggregates``: the request URL, the continuation token, error lines."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ops.__main__ import build_parser
from ops.aggregates import _api_error, _table, continuation_token, first_url
from shared.core.errors import BadInputError, TransientError

SUB = "11111111-1111-1111-1111-111111111111"


def parse(*argv: str) -> dict[str, list[str]]:
    args = build_parser().parse_args(["aggregates", "--api-url", "https://h:1/", *argv])
    url = first_url(args)
    assert url.startswith("https://h:1/subscriptions/")
    return parse_qs(urlsplit(url).query)


def test_first_url_sends_the_cmdlet_arguments_in_utc_and_escaped() -> None:
    """Offsets become UTC Z times (a '+' would arrive as a space); defaults are not sent."""
    query = parse(
        "--subscription", SUB, "--reported-start", "2026-11-20T01:00+01:00",
        "--reported-end", "2026-11-21", "--continuation-token", "a+b/c=",
    )  # fmt: skip
    assert query == {
        "api-version": ["2015-06-01-preview"],
        "reportedStartTime": ["2026-11-20T00:00:00Z"],
        "reportedEndTime": ["2026-11-21T00:00:00Z"],
        "aggregationGranularity": ["Daily"],
        "continuationToken": ["a+b/c="],
    }


def test_provider_route_carries_subscriber_and_show_details() -> None:
    """--provider-subscription picks the admin resource; --no-show-details sends false."""
    args = build_parser().parse_args(
        ["aggregates", "--provider-subscription", SUB, "--subscriber", "s1", "--no-show-details",
         "--granularity", "hourly", "--reported-start", "2026-11-20T05",
         "--reported-end", "2026-11-20T06"]
    )  # fmt: skip
    url = first_url(args)
    assert "/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates?" in url
    query = parse_qs(urlsplit(url).query)
    assert query["subscriberId"] == ["s1"]
    assert query["showDetails"] == ["false"]
    assert query["aggregationGranularity"] == ["Hourly"]


def test_continuation_token_is_read_from_next_link_in_any_case() -> None:
    """The token is the link's continuationToken argument, unescaped."""
    link = "http://h/subscriptions/x/providers/p?api-version=1&ContinuationToken=a%2Bb%3D"
    assert continuation_token(link) == "a+b="


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update(headers or {})
    return response


def test_arm_errors_become_one_line_bad_input_or_transient() -> None:
    """4xx is bad input, 5xx transient; the line is 'code: message' on one line."""
    error = _api_error(answer(400, {"error": {"code": "InvalidProperty", "message": "a\nb"}}))
    assert isinstance(error, BadInputError)
    assert error.message == "InvalidProperty: a b"
    busy = _api_error(answer(503, "not json at all", {"x-ms-error-code": "ServiceUnavailable"}))
    assert isinstance(busy, TransientError)
    assert busy.message.startswith("ServiceUnavailable: ")


@pytest.mark.parametrize("unit", [None, "Hours"])
def test_table_shows_resource_name_and_row_count(unit: str | None) -> None:
    """A row's resource is the URI's last segment; a missing unit is blank, not 'None'."""
    instance = {"Microsoft.Resources": {"resourceUri": "/subscriptions/s/rg/vm1"}}
    row = {
        "properties": {
            "subscriptionId": SUB,
            "usageStartTime": "2026-11-20T00:00:00+00:00",
            "usageEndTime": "2026-11-20T01:00:00+00:00",
            "meterName": "Base VM Size Hours",
            "quantity": 8.0,
            "unit": unit,
            "instanceData": json.dumps(instance),
        }
    }
    lines = _table([row]).splitlines()
    assert lines[1].endswith("vm1")
    assert "None" not in lines[1]
    assert lines[-1] == "(1 rows)"
