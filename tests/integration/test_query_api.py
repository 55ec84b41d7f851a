"""query_usage's contract at the HTTP edge: every error code, auth, routes, OpenAPI, 503.

Real HTTP through the local Functions host, real Azurite, tokens from the local issuer
(and forged ones). Each spec error is asserted by status, body code and x-ms-error-code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.host import LocalFunctionsHost
from devstack.tokens import LocalIssuer
from shared.core.hours import utc_now
from shared.query.openapi import DOCUMENT
from tests.integration.test_query_support import (
    DAY,
    HOUR,
    PROVIDER_PATH,
    TENANT_PATH,
    World,
    call,
    deleted,
    follow,
    serving,
    window,
)

OPENAPI = json.loads(DOCUMENT.read_text())


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the ARM envelope with ``code``, repeated in x-ms-error-code."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["x-ms-error-code"] == code
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    validate(body, "ErrorResponse")
    return body


def validate(document: Any, schema_name: str) -> None:
    """Validate against the shipped OpenAPI document's schema (OpenAPI 3.0 nullable aware);
    fails with the error ``jsonschema.validate`` would raise (its best match)."""
    error = jsonschema.exceptions.best_match(_validator(schema_name).iter_errors(document))
    if error is not None:
        raise error


@functools.cache
def _validator(schema_name: str) -> Any:
    """One checked validator per schema: ``jsonschema.validate`` re-converted the whole
    document and re-checked it against the metaschema on every call (once per row's
    instanceData here), which was most of the time of the tests that validate pages."""
    schema = {
        "$ref": f"#/components/schemas/{schema_name}",
        "components": _nullable(OPENAPI)["components"],
    }
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema's type list."""
    if isinstance(node, dict):
        out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    return node


def tenant_and_owner(world: World) -> tuple[str, str]:
    tenant = next(t for t in world.tenants() if t.owners and t.state.value == "active")
    return tenant.subscription_id, tenant.owners[0]


# --- every error code of the spec table --------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"api-version": None}, "NoApiVersion"),
        ({"api-version": "2016-01-01"}, "InvalidApiVersionParameter"),
        ({"reportedStartTime": "yesterday"}, "InvalidProperty"),
        ({"reportedStartTime": None}, "InvalidProperty"),
        ({"reportedStartTime": (DAY + timedelta(minutes=30)).isoformat()}, "InvalidProperty"),
        ({"reportedEndTime": DAY.isoformat()}, "InvalidProperty"),
        ({"aggregationGranularity": "Daily"}, "InvalidProperty"),  # 01:00 is not midnight
        ({"showDetails": "maybe"}, "InvalidProperty"),
        ({"aggregationGranularity": "Weekly"}, "InvalidAggregationGranularity"),
        (
            {
                "reportedEndTime": (utc_now() + timedelta(hours=2))
                .replace(minute=0, second=0, microsecond=0)
                .isoformat()
            },
            "RequestEndTimeIsInFuture",
        ),
        ({"continuationToken": "not-a-token"}, "InvalidContinuationToken"),
    ],
)
def test_bad_arguments_are_400_with_the_spec_code(
    world: World, host: LocalFunctionsHost, change: dict[str, str | None], code: str
) -> None:
    """Each malformed argument answers 400 with its code (spec Errors table)."""
    subscription, owner = tenant_and_owner(world)
    params: dict[str, str] = window(DAY + HOUR, DAY + 5 * HOUR)
    for name, value in change.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    response = call(host.base_url, TENANT_PATH.format(subscription), params, world.token(owner))
    assert_error(response, 400, code)


@pytest.mark.parametrize(
    "path",
    [
        "/subscriptions//providers/Microsoft.Commerce/usageAggregates",
        "/subscriptions/providers/Microsoft.Commerce/usageAggregates",
        "/SUBSCRIPTIONS//providers/microsoft.commerce.admin/SubscriberUsageAggregates",
    ],
)
def test_missing_subscription_is_400(world: World, host: LocalFunctionsHost, path: str) -> None:
    """No subscription segment in the path: 400 SubscriptionIdMissingInRequest."""
    assert_error(
        call(host.base_url, path, window(), world.admin_token()),
        400,
        "SubscriptionIdMissingInRequest",
    )


def test_subscriber_outside_the_providers_tenants_is_400(
    world: World, host: LocalFunctionsHost
) -> None:
    """subscriberId naming another provider's tenant, or none: SubscriberIdIsNotDirectTenant."""
    p1, p2 = world.fleet.delegated_providers
    owner = world.token(p1.owners[0])
    for subscriber in (
        sorted(world.direct_tenants(p2.subscription_id))[0],
        str(uuid.uuid4()),
        "not-a-guid",
    ):
        response = call(
            host.base_url,
            PROVIDER_PATH.format(p1.subscription_id),
            {**window(), "subscriberId": subscriber},
            owner,
        )
        assert_error(response, 400, "SubscriberIdIsNotDirectTenant")


def test_forbidden_is_403_and_identical_for_missing_subscriptions(
    world: World, host: LocalFunctionsHost
) -> None:
    """403 AuthorizationFailed, with the same body whether or not the subscription exists;
    a path id that is not a GUID is one 400 for every caller (it can name nothing)."""
    subscription, owner = tenant_and_owner(world)
    stranger = world.token(str(uuid.uuid4()))
    bodies = []
    for target in (subscription, str(uuid.uuid4())):
        for path in (TENANT_PATH, PROVIDER_PATH):
            body = assert_error(
                call(host.base_url, path.format(target), window(), stranger),
                403,
                "AuthorizationFailed",
            )
            bodies.append(body)
    assert all(body == bodies[0] for body in bodies)
    malformed = [
        assert_error(call(host.base_url, path.format("not-a-guid"), window(), token), 400,
                     "InvalidProperty")
        for path in (TENANT_PATH, PROVIDER_PATH)
        for token in (stranger, world.token(owner), world.admin_token())
    ]  # fmt: skip
    assert all(body == malformed[0] for body in malformed)


def test_unknown_resource_is_404_in_the_arm_envelope(
    world: World, host: LocalFunctionsHost
) -> None:
    """A path under /subscriptions that names no resource of the API: 404 NotFound."""
    subscription, owner = tenant_and_owner(world)
    response = call(
        host.base_url,
        f"/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachines",
        window(),
        world.token(owner),
    )
    assert_error(response, 404, "NotFound")


def test_paths_and_argument_names_are_case_insensitive(
    world: World, host: LocalFunctionsHost
) -> None:
    """UsageAggregates / usageaggregates and REPORTEDSTARTTIME-style names all work alike."""
    subscription, owner = tenant_and_owner(world)
    token = world.token(owner)
    baseline = call(host.base_url, TENANT_PATH.format(subscription), window(), token)
    assert baseline.status_code == 200
    shouting = {key.upper(): value for key, value in window().items()}
    shouting["AGGREGATIONGRANULARITY"] = "hOURLY"
    path = f"/Subscriptions/{subscription.upper()}/Providers/MICROSOFT.COMMERCE/UsageAggregates"
    other = call(host.base_url, path, shouting, token)
    assert other.status_code == 200
    assert other.json()["value"] == [
        {**row, "id": row["id"].replace(subscription, subscription.lower())}
        for row in baseline.json()["value"]
    ]


def test_escaped_time_forms_are_accepted(world: World, host: LocalFunctionsHost) -> None:
    """%3a, %2b, Z, fractional seconds, an unescaped + (decoded as space) all parse."""
    subscription, owner = tenant_and_owner(world)
    base = (
        f"{host.base_url}{TENANT_PATH.format(subscription)}?api-version=2015-06-01-preview"
        "&aggregationGranularity=Hourly&reportedEndTime=2026-11-20T06%3a00%3a00%2b00%3a00"
    )
    headers = {"Authorization": f"Bearer {world.token(owner)}"}
    for start in (
        "2026-11-20T01%3a00%3a00%2b00%3a00",
        "2026-11-20T01:00:00Z",
        "2026-11-20T01:00:00.000Z",
        "2026-11-20T01:00:00+00:00",
        "2026-11-20T01%253a00%253a00Z",
    ):
        response = requests.get(f"{base}&reportedStartTime={start}", headers=headers, timeout=30)
        assert response.status_code == 200, (start, response.text)


def test_deleted_subscription_usage_is_readable_by_its_provider(
    world: World, host: LocalFunctionsHost
) -> None:
    """A deleted tenant's rows come back through the provider route (subscriberId)."""
    gone = deleted(world)[0]
    provider = gone.provider_subscription_id
    assert provider is not None
    owner = next(p for p in world.providers() if p.subscription_id.lower() == provider.lower())
    response = call(
        host.base_url,
        PROVIDER_PATH.format(provider),
        {**window(), "subscriberId": gone.subscription_id},
        world.token(owner.owners[0]),
    )
    assert response.status_code == 200
    assert {row["properties"]["subscriptionId"] for row in response.json()["value"]} <= {
        gone.subscription_id.lower()
    }


# --- bearer tokens -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_tokens(world: World, owner: str, directory: Path) -> dict[str, str]:
    """Tokens that must all be refused, each wrong in exactly one way."""
    issuer = world.issuer
    now = utc_now()
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "oid": owner,
        "sub": owner,
        "tid": issuer.tenant_id,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    header_none = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": issuer.kid}).encode())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        issuer._ensure_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    hs_payload = _b64(json.dumps(claims).encode())
    hs_signature = _b64(
        hmac.new(public_pem, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest()
    )
    return {
        "alg none": f"{header_none}.{_b64(json.dumps(claims).encode())}.",
        "wrong key (same kid)": jwt.encode(
            claims, other_key, algorithm="RS256", headers={"kid": issuer.kid}
        ),
        "other issuer's key": LocalIssuer(directory).mint(owner),
        "HS256 with the public key": f"{hs_header}.{hs_payload}.{hs_signature}",
        "expired": issuer.mint(owner, now=now - timedelta(hours=3)),
        "not yet valid": issuer.mint(
            owner, extra_claims={"nbf": int((now + timedelta(hours=1)).timestamp())}
        ),
        "wrong issuer": issuer.mint(owner, extra_claims={"iss": "https://evil.example/v2.0"}),
        "wrong audience": issuer.mint(owner, extra_claims={"aud": "api://someone-else"}),
        "no oid": issuer.mint(owner, extra_claims={"oid": None}),
        "no exp": issuer.mint(owner, extra_claims={"exp": None}),
        "garbage": "abc.def.ghi",
    }


def test_forged_tokens_are_refused_with_401_and_www_authenticate(
    world: World, host: LocalFunctionsHost, tmp_path: Path
) -> None:
    """alg none, wrong key, HS256 key confusion, expired, nbf, iss, aud, missing claims: 401."""
    subscription, owner = tenant_and_owner(world)
    path = TENANT_PATH.format(subscription)
    assert call(host.base_url, path, window(), world.token(owner)).status_code == 200
    for name, token in forged_tokens(world, owner, tmp_path).items():
        response = call(host.base_url, path, window(), token)
        assert_error(response, 401, "InvalidAuthenticationToken")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
    for header in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = call(host.base_url, path, window(), None, header)
        assert_error(response, 401, "InvalidAuthenticationToken")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_admin_role_is_required_for_other_subscriptions(
    world: World, host: LocalFunctionsHost
) -> None:
    """The same caller without the admin app role is 403 where with it it reads."""
    subscription, _ = tenant_and_owner(world)
    caller = str(uuid.uuid4())
    path = TENANT_PATH.format(subscription)
    assert call(host.base_url, path, window(), world.token(caller, admin=True)).status_code == 200
    assert_error(
        call(host.base_url, path, window(), world.token(caller)), 403, "AuthorizationFailed"
    )


# --- OpenAPI -----------------------------------------------------------------------------


def test_openapi_document_is_served_and_describes_both_routes(host: LocalFunctionsHost) -> None:
    """GET /openapi.json serves the shipped document: OpenAPI 3, both routes."""
    response = requests.get(f"{host.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    document = response.json()
    assert document == OPENAPI
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) >= {
        "/subscriptions/{subscriptionId}/providers/Microsoft.Commerce/usageAggregates",
        "/subscriptions/{subscriptionId}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates",
    }


LEGACY_PROVIDER_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/subscriberUsageAggregates"
OPERATIONS_PATH = "/providers/Microsoft.Commerce.Admin/operations"


def test_the_provider_route_answers_under_the_first_azsadmin_spelling(
    world: World, host: LocalFunctionsHost
) -> None:
    """``Microsoft.Commerce/subscriberUsageAggregates`` (the first azsadmin description's
    path, which the first Azs.Commerce.Admin modules call) answers exactly what the provider
    route answers, page for page, with links in the Microsoft.Commerce.Admin spelling; a
    stranger is refused the same way; both paths are in the OpenAPI document."""
    provider = world.fleet.delegated_providers[0]
    token = world.token(provider.owners[0])
    tenants = sorted(
        world.direct_tenants(provider.subscription_id) & world.reported_subscriptions()
    )
    six_hours = window(DAY, DAY + 6 * HOUR)
    for params in (six_hours, {**six_hours, "subscriberId": tenants[0]}):
        legacy = call(host.base_url, LEGACY_PROVIDER_PATH.format(provider.subscription_id),
                      params, token)  # fmt: skip
        current = call(host.base_url, PROVIDER_PATH.format(provider.subscription_id),
                       params, token)  # fmt: skip
        assert legacy.status_code == current.status_code == 200
        legacy_rows, legacy_pages = follow(legacy, token)
        current_rows, _ = follow(current, token)
        assert legacy_rows == current_rows
        assert legacy_rows
        assert len(legacy_pages) > 1 or "subscriberId" in params  # the links are exercised
        for page in legacy_pages[:-1]:
            assert "/Microsoft.Commerce.Admin/subscriberUsageAggregates?" in page.json()["nextLink"]
    stranger = world.token(str(uuid.uuid4()))
    assert_error(
        call(host.base_url, LEGACY_PROVIDER_PATH.format(provider.subscription_id), window(),
             stranger),
        403,
        "AuthorizationFailed",
    )  # fmt: skip
    assert LEGACY_PROVIDER_PATH.format("{subscriptionId}") in OPENAPI["paths"]


def test_the_admin_namespace_lists_its_operations_in_arms_shape(
    world: World, host: LocalFunctionsHost
) -> None:
    """``GET /providers/Microsoft.Commerce.Admin/operations``: ARM's OperationList (name and
    display per operation) for any authenticated caller, 401 without a token, the
    api-version rules of every route, and described in the OpenAPI document."""
    for token in (world.admin_token(), world.token(str(uuid.uuid4()))):
        response = call(host.base_url, OPERATIONS_PATH, {"api-version": "2015-06-01-preview"},
                        token)  # fmt: skip
        assert response.status_code == 200
        body = response.json()
        validate(body, "OperationList")
        names = {operation["name"] for operation in body["value"]}
        assert "Microsoft.Commerce.Admin/operations/read" in names
        assert "Microsoft.Commerce.Admin/subscriberUsageAggregates/read" in names
        assert all(set(op["display"]) == {"provider", "resource", "operation", "description"}
                   for op in body["value"])  # fmt: skip
    assert_error(call(host.base_url, OPERATIONS_PATH, {"api-version": "2015-06-01-preview"}),
                 401, "InvalidAuthenticationToken")  # fmt: skip
    assert_error(call(host.base_url, OPERATIONS_PATH, {}, world.admin_token()), 400, "NoApiVersion")
    assert OPERATIONS_PATH in OPENAPI["paths"]


def test_real_responses_validate_against_the_openapi_document(
    world: World, host: LocalFunctionsHost
) -> None:
    """Detailed, collapsed, daily and provider pages all match the shipped schemas."""
    subscription, _ = tenant_and_owner(world)
    token = world.admin_token()
    provider = world.fleet.delegated_providers[0].subscription_id
    for path, params in (
        (TENANT_PATH.format(subscription), window()),
        (TENANT_PATH.format(subscription), {**window(), "showDetails": "false"}),
        (TENANT_PATH.format(subscription), window(granularity="Daily")),
        (PROVIDER_PATH.format(provider), window()),
    ):
        response = call(host.base_url, path, params, token)
        assert response.status_code == 200
        body = response.json()
        validate(body, "UsageAggregationListResult")
        for row in body["value"]:
            if "instanceData" in row["properties"]:
                validate(json.loads(row["properties"]["instanceData"]), "InstanceData")


# --- storage faults ----------------------------------------------------------------------


def test_storage_down_is_503_with_retry_after(world: World, tmp_path: Path) -> None:
    """Azurite unreachable: 503 ServiceUnavailable with Retry-After, never a 500 or a page."""
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    values = dict(world.values)
    values["AzureWebJobsStorage"] = re.sub(
        r"TableEndpoint=http://127\.0\.0\.1:\d+/",
        f"TableEndpoint=http://127.0.0.1:{port}/",
        values["AzureWebJobsStorage"],
    )
    down = World(world.settings, values, world.fleet, world.issuer, world.subscriptions)
    subscription, owner = tenant_and_owner(world)
    with serving(down) as host:
        response = call(
            host.base_url, TENANT_PATH.format(subscription), window(), world.token(owner)
        )
    assert_error(response, 503, "ServiceUnavailable")
    assert int(response.headers["Retry-After"]) >= 1


def test_storage_refusing_the_apps_credentials_is_500_with_the_cause_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong account key (as a missing RBAC role: storage answers 403) is a
    misconfiguration, not "try again later": 500 with a correlation id, the cause logged."""
    from devstack.azurite import ACCOUNT_KEY

    values = dict(world.values)
    values["AzureWebJobsStorage"] = values["AzureWebJobsStorage"].replace(
        ACCOUNT_KEY, "A" * 86 + "=="
    )
    wrong_key = World(world.settings, values, world.fleet, world.issuer, world.subscriptions)
    subscription, owner = tenant_and_owner(world)
    caplog.set_level(logging.ERROR)
    with serving(wrong_key) as host:
        response = call(
            host.base_url, TENANT_PATH.format(subscription), window(), world.token(owner)
        )
    assert_error(response, 500, "InternalServerError")
    assert "Retry-After" not in response.headers
    correlation = response.headers["x-ms-correlation-request-id"]
    assert correlation in response.json()["error"]["message"]
    logged = [r.getMessage() for r in caplog.records if correlation in r.getMessage()]
    assert logged
    assert "HTTP 403" in logged[0]
    assert "AuthorizationFailure" in logged[0]


def test_entra_v1_and_v2_issuers_of_one_tenant_both_pass(world: World) -> None:
    """AUTH_ISSUER lists the v2 and the v1 issuer: a token of either version reads usage."""
    v1 = f"https://sts.windows.net/{world.issuer.tenant_id}/"
    both = World(
        world.settings,
        {**world.values, "AUTH_ISSUER": f"{world.values['AUTH_ISSUER']}, {v1}"},
        world.fleet,
        world.issuer,
        world.subscriptions,
    )
    subscription, owner = tenant_and_owner(world)
    path = TENANT_PATH.format(subscription)
    with serving(both) as host:
        for iss in (world.values["AUTH_ISSUER"], v1):
            token = world.token(owner, extra_claims={"iss": iss})
            assert call(host.base_url, path, window(), token).status_code == 200, iss
        stranger = world.token(owner, extra_claims={"iss": "https://sts.windows.net/other/"})
        assert_error(call(host.base_url, path, window(), stranger), 401,
                     "InvalidAuthenticationToken")  # fmt: skip
