"""The query_usage and openapi_document entry points, driven by real func.HttpRequest objects."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import azure.functions as func
import pytest

import openapi_document
import query_usage
from shared.app import LazyApp
from shared.query import usage_api
from shared.query.openapi import DOCUMENT
from tests.integration.test_query_support import (
    DAY,
    PROVIDER_PATH,
    World,
    query_string,
    window,
)


@pytest.fixture
def environment(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The world's app settings in the environment, as the Functions host provides them."""
    for name, value in world.values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(query_usage, "app", LazyApp())  # this test's settings
    return world


def request(path: str, params: dict[str, str], token: str | None = None, **headers: str):
    """A real HttpRequest as the host builds it for the catch-all route."""
    sent = dict(headers)
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return func.HttpRequest(
        "GET",
        f"http://localhost{path}?{query_string(params)}",
        headers=sent,
        params=params,
        route_params={"path": path.removeprefix("/subscriptions")},
        body=b"",
    )


def test_provider_page_through_the_entry_point(environment: World) -> None:
    """A real HttpRequest gives a 1,000-row JSON page with nextLink and a Link header."""
    world = environment
    provider = world.fleet.delegated_providers[0].subscription_id
    response = query_usage.main(
        request(PROVIDER_PATH.format(provider), window(), world.admin_token())
    )
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.get_body())
    assert len(body["value"]) == 1000
    # PUBLIC_BASE_URL unset in local mode: the local host's default address, not the request's.
    base = world.settings.api_base_url
    assert body["nextLink"].startswith(f"{base}{PROVIDER_PATH.format(provider.lower())}?")
    assert "continuationToken=" in body["nextLink"]
    assert response.headers["Link"] == f'<{body["nextLink"]}>; rel="next"'


def test_errors_are_arm_envelopes_from_the_entry_point(environment: World) -> None:
    """401 and 400 come back as ARM envelopes with x-ms-error-code, never as exceptions."""
    world = environment
    provider = world.fleet.default_provider.subscription_id
    unauthenticated = query_usage.main(request(PROVIDER_PATH.format(provider), window()))
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    assert unauthenticated.headers["x-ms-error-code"] == "InvalidAuthenticationToken"
    bad = query_usage.main(
        request(
            PROVIDER_PATH.format(provider),
            {**window(), "aggregationGranularity": "Monthly"},
            world.admin_token(),
        )
    )
    assert bad.status_code == 400
    assert json.loads(bad.get_body())["error"]["code"] == "InvalidAggregationGranularity"


def test_unexpected_errors_answer_500_without_a_trace(
    environment: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug deep inside answers 500 InternalServerError with a correlation id, logged."""
    world = environment

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(usage_api, "resolve_scope", broken)
    with caplog.at_level(logging.ERROR):
        response = query_usage.main(
            request(PROVIDER_PATH.format(uuid.uuid4()), window(), world.admin_token())
        )
    assert response.status_code == 500
    body = json.loads(response.get_body())
    assert body["error"]["code"] == "InternalServerError"
    assert "secret" not in response.get_body().decode()
    correlation = response.headers["x-ms-correlation-request-id"]
    assert correlation in body["error"]["message"]
    assert any(correlation in record.getMessage() for record in caplog.records)


def test_bad_settings_answer_500_not_an_exception(
    environment: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings that fail validation still give an ARM 500 from the entry point."""
    monkeypatch.setenv("CONTINUATION_TOKEN_KEY", "short")
    monkeypatch.setattr(query_usage, "app", LazyApp())
    response = query_usage.main(request(PROVIDER_PATH.format(uuid.uuid4()), window(), "x"))
    assert response.status_code == 500
    assert response.headers["x-ms-error-code"] == "InternalServerError"


def test_storage_fault_mid_page_is_503_not_a_partial_page(
    environment: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first tenant's read works, the next one fails for good: 503, no rows at all."""
    from azure.core.exceptions import ServiceRequestError

    from shared.query import reader as usage_reader

    world = environment
    calls = {"n": 0}
    original = usage_reader.UsageReader._query

    def flaky(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise ServiceRequestError("connection reset")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(usage_reader.UsageReader, "_query", flaky)
    provider = world.fleet.default_provider.subscription_id
    response = query_usage.main(
        request(PROVIDER_PATH.format(provider), window(), world.admin_token())
    )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert json.loads(response.get_body()) == {
        "error": {
            "code": "ServiceUnavailable",
            "message": "the service is busy; retry after the interval in Retry-After",
        }
    }


def test_openapi_entry_point_serves_the_document() -> None:
    """GET /openapi.json answers the shipped document byte for byte."""
    response = openapi_document.main(
        func.HttpRequest("GET", "http://localhost/openapi.json", body=b"")
    )
    assert response.status_code == 200
    assert response.get_body() == Path(DOCUMENT).read_bytes()
    assert json.loads(response.get_body())["openapi"].startswith("3.")


def test_window_constant_is_in_the_past() -> None:
    """The fixtures' window lies in the past (else every call would be RequestEndTimeIsInFuture)."""
    from shared.core.hours import utc_now

    assert DAY.year == 2026
    assert utc_now() > DAY
