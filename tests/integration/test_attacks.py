"""Attacks on query_usage over real HTTP: forged tokens, forged paging, injection, path tricks.

Every case asserts the documented 4xx (status and ``x-ms-error-code``), that no row outside
the caller's scope comes back, and that neither the answer nor the app's logs (captured
in-process: the local host runs the real entry point in this process) hold a stack trace or
a secret: the bearer token sent, the continuation token or its key, the storage AccountKey.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from devstack.azurite import ACCOUNT_KEY, Azurite
from devstack.demo_tokens import demo_principal
from devstack.example_prices import load_example_prices
from devstack.fleet import fleet_from_settings
from devstack.host import LocalFunctionsHost
from devstack.sign_in import LocalSignIn
from devstack.tokens import LocalIssuer
from ops.mint_token import readable
from shared.app import FunctionApp
from shared.collection.collector import Collector
from shared.core.config import Settings
from shared.core.hours import iso, utc_now
from shared.query.arm_responses import HttpAnswer
from shared.query.rate_card_filter import FILTER_MESSAGE
from shared.query.usage_api import HttpCall
from shared.storage.account import StorageAccount
from shared.storage.subscriptions import Subscription
from tests.app_settings import LOCAL_VALUES
from tests.integration.test_host import raw_exchange
from tests.integration.test_ops_cli import run_ops
from tests.integration.test_query_support import (
    API_VERSION,
    DAY,
    HOUR,
    PROVIDER_PATH,
    REPO,
    TENANT_PATH,
    World,
    call,
    drop_world,
    query_string,
    serving,
    window,
)

INJECTIONS = (
    "' or '1' eq '1",
    "x' or PartitionKey ne '",
    "%27 or PartitionKey ge %27",
    "H2026112000' or RowKey gt '",
    ") or (PartitionKey ne '",
    "2026-11-20T00:00:00Z' or '' eq '",
)
# The code each argument answers when it is not a value it accepts (spec Errors table).
ARGUMENT_CODES = {
    "api-version": "InvalidApiVersionParameter",
    "reportedStartTime": "InvalidProperty",
    "reportedEndTime": "InvalidProperty",
    "aggregationGranularity": "InvalidAggregationGranularity",
    "showDetails": "InvalidProperty",
    "continuationToken": "InvalidContinuationToken",
}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything the app logs while a test runs (the host serves in this process)."""
    caplog.set_level(logging.DEBUG)
    return caplog


class Attacker:
    """An HTTP server on loopback that records every request (it must never get one)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        attacker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                attacker.hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"keys": []}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Attacker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def owned_tenant(world: World) -> tuple[Subscription, str]:
    tenant = next(t for t in world.tenants() if t.owners and t.state.value == "active")
    return tenant, tenant.owners[0]


def victim_of(world: World, owner: str) -> Subscription:
    """A tenant subscription the owner may NOT read."""
    return next(t for t in world.tenants() if owner not in (*t.owners, *t.readers))


def rows_of(response: requests.Response | tuple[int, dict[str, str], bytes]) -> list[Any]:
    body = _json(response)
    return list(body.get("value", [])) if isinstance(body, dict) else []


def _json(response: requests.Response | tuple[int, dict[str, str], bytes]) -> Any:
    raw = response.content if isinstance(response, requests.Response) else response[2]
    try:
        return json.loads(raw)
    except ValueError:
        return None


def assert_refused(
    response: requests.Response, status: int, code: str, secrets: tuple[str, ...] = ()
) -> None:
    """The documented error: status, code in body and header, no rows, nothing leaked."""
    assert response.status_code == status, (code, response.status_code, response.text[:300])
    assert response.headers.get("x-ms-error-code") == code
    body = response.json()
    assert body["error"]["code"] == code
    assert "value" not in body
    assert_clean(response.text, secrets)


def assert_clean(text: str, secrets: tuple[str, ...] = ()) -> None:
    """No stack trace, no storage key, no continuation key, none of ``secrets``."""
    for leak in ("Traceback", 'File "', ACCOUNT_KEY, "AccountKey", *secrets):
        assert leak not in text, leak[:40]


def assert_logs_clean(
    logs: pytest.LogCaptureFixture, world: World, secrets: tuple[str, ...]
) -> None:
    """The app's log records (the test's own HTTP client, urllib3, excluded) leak nothing."""
    key = world.values["CONTINUATION_TOKEN_KEY"]
    for record in logs.records:
        if record.name.startswith("urllib3"):
            continue
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info)
                                      if record.exc_info else "")  # fmt: skip
        assert "Traceback" not in text, record.name
        for leak in (key, ACCOUNT_KEY, *(s for s in secrets if len(s) >= 16)):
            assert leak not in text, (record.name, leak[:20])


def raw_get(host: LocalFunctionsHost, target: str, headers: dict[str, str]) -> requests.Response:
    """GET ``target`` byte for byte (no client-side normalisation of ``..`` or escapes)."""
    split = urlsplit(host.base_url)
    connection = http.client.HTTPConnection(split.hostname or "", split.port, timeout=60)
    try:
        connection.putrequest("GET", target, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        response = requests.Response()
        response.status_code = answer.status
        response.headers.update(dict(answer.getheaders()))
        response._content = answer.read()
        return response
    finally:
        connection.close()


# --- bearer tokens -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_tokens(world: World, owner: str, directory: Path, attacker_url: str) -> dict[str, str]:
    """Tokens that must all be refused, each wrong in one way (query issue cases + key ids)."""
    issuer = world.issuer
    now = utc_now()
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "oid": owner,
        "sub": owner,
        "tid": issuer.tenant_id,
        "roles": [world.settings.auth_admin_role],
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker_key.public_key()))
    public_pem = (
        issuer._ensure_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def unsigned(header: dict[str, Any]) -> str:
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."

    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    hs_payload = _b64(json.dumps(claims).encode())
    hs_signature = _b64(
        hmac.new(public_pem, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest()
    )

    def by_attacker(**header: Any) -> str:
        return jwt.encode(claims, attacker_key, algorithm="RS256", headers=header)

    genuine = issuer.mint(owner)
    head, payload, signature = genuine.split(".")
    tampered_claims = {**jwt.decode(genuine, options={"verify_signature": False}), "oid": "x"}
    return {
        "alg none": unsigned({"alg": "none", "typ": "JWT", "kid": issuer.kid}),
        "alg None": unsigned({"alg": "None", "typ": "JWT", "kid": issuer.kid}),
        "HS256 with the public key": f"{hs_header}.{hs_payload}.{hs_signature}",
        "wrong key, same kid": by_attacker(kid=issuer.kid),
        "other issuer's key": LocalIssuer(directory).mint(owner),
        "kid of an unknown key": by_attacker(kid="attacker-key-1"),
        "kid path traversal": by_attacker(kid="../../../../etc/passwd"),
        "jku to the attacker": by_attacker(kid="attacker-key-2", jku=f"{attacker_url}/jwks"),
        "x5u to the attacker": by_attacker(kid="attacker-key-3", x5u=f"{attacker_url}/cert"),
        "embedded jwk": by_attacker(kid=issuer.kid, jwk=attacker_jwk),
        "payload tampered": f"{head}.{_b64(json.dumps(tampered_claims).encode())}.{signature}",
        "signature stripped": f"{head}.{payload}.",
        "expired": issuer.mint(owner, now=now - timedelta(hours=3)),
        "not yet valid": issuer.mint(
            owner, extra_claims={"nbf": int((now + timedelta(hours=1)).timestamp())}
        ),
        "wrong issuer": issuer.mint(owner, extra_claims={"iss": "https://evil.example/v2.0"}),
        "wrong audience": issuer.mint(owner, extra_claims={"aud": "api://someone-else"}),
        "oversized": "a" * 20_000,
    }


def test_forged_tokens_are_401_and_the_attacker_key_server_is_never_contacted(
    world: World, host: LocalFunctionsHost, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """alg none / HS256 key confusion / foreign, unknown, jku, x5u and embedded keys,
    tampered, expired, iss, aud: each 401 with WWW-Authenticate; no JWKS fetched elsewhere."""
    tenant, owner = owned_tenant(world)
    path = TENANT_PATH.format(tenant.subscription_id)
    sent: list[str] = []
    with Attacker() as attacker:
        for name, token in forged_tokens(world, owner, tmp_path, attacker.url).items():
            for target in (
                path,
                PROVIDER_PATH.format(world.fleet.default_provider.subscription_id),
            ):
                response = call(host.base_url, target, window(), token)
                assert_refused(response, 401, "InvalidAuthenticationToken", (token,))
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
            sent.append(token)
        assert attacker.hits == []
    assert_logs_clean(logs, world, tuple(sent))


# --- continuation tokens -------------------------------------------------------------------


def first_page(host: LocalFunctionsHost, path: str, token: str) -> tuple[dict[str, str], str]:
    """The query arguments of a first page and the continuation token of its nextLink."""
    response = call(host.base_url, path, window(), token)
    assert response.status_code == 200, response.text[:300]
    link = response.json().get("nextLink")
    assert link, "the day must span more than one page"
    params = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    return params, params["continuationToken"]


def resigned(world: World, token: str, **changes: Any) -> str:
    """``token`` with its body changed and signed again with the real key (as the server
    itself would have issued it): how a genuinely expired token looks."""
    payload, _, _ = token.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    new_payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    key = world.values["CONTINUATION_TOKEN_KEY"].encode()
    signature = _b64(hmac.new(key, new_payload.encode(), hashlib.sha256).digest())
    return f"{new_payload}.{signature}"


def test_forged_replayed_and_expired_continuation_tokens_are_400(
    world: World, host: LocalFunctionsHost, logs: pytest.LogCaptureFixture
) -> None:
    """Tampered, truncated, replayed by another provider or tenant, or for another window,
    expired: 400 InvalidContinuationToken and no rows."""
    p0 = world.fleet.default_provider
    p1 = world.fleet.delegated_providers[0]
    p0_owner, p1_owner = world.token(p0.owners[0]), world.token(p1.owners[0])
    p0_path = PROVIDER_PATH.format(p0.subscription_id)
    params, token = first_page(host, p0_path, p0_owner)
    assert call(host.base_url, p0_path, params, p0_owner).status_code == 200  # genuine works
    payload, _, signature = token.partition(".")
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    tenant, owner = owned_tenant(world)
    cases: list[tuple[str, str, dict[str, str], str]] = [
        ("payload tampered", p0_path, {**params, "continuationToken": f"{flipped}.{signature}"},
         p0_owner),
        ("signature tampered", p0_path, {**params, "continuationToken": f"{payload}.{payload}"},
         p0_owner),
        ("truncated", p0_path, {**params, "continuationToken": token[:-5]}, p0_owner),
        ("unsigned", p0_path, {**params, "continuationToken": payload}, p0_owner),
        ("another provider", PROVIDER_PATH.format(p1.subscription_id), params, p1_owner),
        ("a tenant", TENANT_PATH.format(tenant.subscription_id), params, world.token(owner)),
        ("another window", p0_path,
         {**params, "reportedEndTime": (DAY + 12 * HOUR).isoformat()}, p0_owner),
        ("other granularity", p0_path, {**params, "aggregationGranularity": "Daily",
         "reportedEndTime": (DAY + 24 * HOUR).isoformat()}, p0_owner),
        ("expired", p0_path,
         {**params, "continuationToken": resigned(world, token, x=int(utc_now().timestamp()) - 60)},
         p0_owner),
    ]  # fmt: skip
    for name, path, arguments, bearer in cases:
        response = call(host.base_url, path, arguments, bearer)
        assert response.status_code == 400, name
        assert_refused(response, 400, "InvalidContinuationToken", (token, bearer))
    # Scope comes before the token: another provider on P0's path is refused outright.
    assert_refused(call(host.base_url, p0_path, params, p1_owner), 403, "AuthorizationFailed")
    # Continuation tokens are bookmarks bound to their caller (as above), not credentials:
    # the access log may show them; bearer tokens and the signing key it may not.
    assert_logs_clean(logs, world, (p0_owner, p1_owner))


# --- OData injection -----------------------------------------------------------------------


@pytest.mark.parametrize("argument", [*ARGUMENT_CODES, "subscriberId"])
def test_odata_injection_in_every_argument_is_400(
    world: World, host: LocalFunctionsHost, argument: str, logs: pytest.LogCaptureFixture
) -> None:
    """Quotes, ``or``, PartitionKey fragments, %27 in each argument: the argument's 400,
    never a filter widened to other partitions."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    if argument == "subscriberId":
        provider = world.fleet.delegated_providers[0]
        bearer = world.token(provider.owners[0])
        path, code = PROVIDER_PATH.format(provider.subscription_id), "SubscriberIdIsNotDirectTenant"
    else:
        path, code = TENANT_PATH.format(tenant.subscription_id), ARGUMENT_CODES[argument]
    for payload in INJECTIONS:
        for value in (payload, quote(payload, safe=""), tenant.subscription_id + payload):
            response = call(host.base_url, path, {**window(), argument: value}, bearer)
            assert_refused(response, 400, code, (bearer,))
    assert_logs_clean(logs, world, (bearer,))


# --- path tricks ---------------------------------------------------------------------------


def path_tricks(own: str, victim: str) -> dict[str, str]:
    """Subscription-id segments that try to reach ``victim`` (or anything) from ``own``."""
    lookalike = victim.replace("a", "\u0430").replace("e", "\u0435").replace("1", "\uff11")
    return {
        "victim": victim,
        "victim upper": victim.upper(),
        "dot-dot": f"{own}/../{victim}",
        "dot-dot escaped": f"{own}%2f..%2f{victim}",
        "dot-dot double escaped": f"{own}%252f..%252f{victim}",
        "escaped slash": f"{victim}%2f",
        "backslash": f"{own}%5c..%5c{victim}",
        "very long": "a" * 4000,
        "unicode look-alike": quote(lookalike),
        "trailing space": f"{victim}%20",
        "trailing spaces own": f"{own}%20%20",
        "nul": f"{own}%00{victim}",
        "quote": f"{own}'%20or%20'1'%20eq%20'1",
        "wildcard": "*",
    }


def test_path_tricks_in_subscription_ids_never_cross_scope(
    world: World, host: LocalFunctionsHost, logs: pytest.LogCaptureFixture
) -> None:
    """``..``, %2f, double escapes, very long, unicode look-alikes, trailing spaces, NUL: a
    documented 4xx with its code, or (a spelling of the caller's own id) only its own rows."""
    tenant, owner = owned_tenant(world)
    own = tenant.subscription_id.lower()
    victim = victim_of(world, owner).subscription_id.lower()
    bearer = world.token(owner)
    headers = {"Authorization": f"Bearer {bearer}"}
    arguments = query_string(window(DAY, DAY + 6 * HOUR))
    outcomes = {}
    for name, segment in path_tricks(own, victim).items():
        for template in (TENANT_PATH, PROVIDER_PATH):
            target = template.format(segment) + "?" + arguments
            response = raw_get(host, target, headers)
            outcomes[(name, template is TENANT_PATH)] = response.status_code
            assert response.status_code in (200, 400, 403, 404), (name, response.status_code)
            assert_clean(response.text, (bearer,))
            if response.status_code == 200:
                assert template is TENANT_PATH, name
                assert {r["properties"]["subscriptionId"] for r in rows_of(response)} <= {own}
            else:
                code = response.headers.get("x-ms-error-code")
                assert code, name
                assert response.json()["error"]["code"] == code, name
                assert code in {
                    "AuthorizationFailed", "SubscriptionIdMissingInRequest", "NotFound",
                    "InvalidProperty",
                }, (name, code)  # fmt: skip
    assert outcomes[("victim", True)] == 403
    assert outcomes[("victim upper", True)] == 403
    assert_logs_clean(logs, world, (bearer,))


# --- oversized input -----------------------------------------------------------------------


def test_oversized_headers_and_arguments_are_refused_cleanly(
    world: World, host: LocalFunctionsHost, logs: pytest.LogCaptureFixture
) -> None:
    """Huge tokens, argument values, continuation tokens and header counts: the documented
    4xx (or the host's 414/431 before the app), never a 500 or rows."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    path = TENANT_PATH.format(tenant.subscription_id)
    huge = "A" * 60_000
    for argument, code in (
        ("reportedStartTime", "InvalidProperty"),
        ("aggregationGranularity", "InvalidAggregationGranularity"),
        ("continuationToken", "InvalidContinuationToken"),
        ("api-version", "InvalidApiVersionParameter"),
    ):
        response = call(host.base_url, path, {**window(), argument: "x" * 8000}, bearer)
        assert_refused(response, 400, code, (bearer,))
    response = call(host.base_url, path, window(), "x" * 40_000)
    assert_refused(response, 401, "InvalidAuthenticationToken")
    response = call(host.base_url, path, window(), bearer, {"X-Padding": huge})
    assert response.status_code in (200, 431), response.status_code
    many = {f"X-H{n}": "v" for n in range(150)}
    response = call(host.base_url, path, window(), bearer, many)
    assert response.status_code in (200, 431), response.status_code
    response = call(host.base_url, path, {**window(), "junk": "j" * 70_000}, bearer)
    assert response.status_code in (400, 414), response.status_code
    for answer in (response,):
        assert_clean(answer.text, (bearer,))
    assert_logs_clean(logs, world, (bearer,))


def test_a_caller_reads_only_its_own_subscription_whatever_it_sends(
    world: World, host: LocalFunctionsHost
) -> None:
    """Control: the owner's real request returns rows, all of its own subscription, and the
    same request with a stranger's token is 403 with the same body for any id."""
    tenant, owner = owned_tenant(world)
    path = TENANT_PATH.format(tenant.subscription_id)
    response = call(host.base_url, path, window(), world.token(owner))
    assert response.status_code == 200
    rows = rows_of(response)
    assert rows
    assert {r["properties"]["subscriptionId"] for r in rows} == {tenant.subscription_id.lower()}
    stranger = world.token(str(uuid.uuid4()))
    assert_refused(call(host.base_url, path, window(), stranger), 403, "AuthorizationFailed")


# --- links and repeated arguments ----------------------------------------------------------

CRAFTED = "x=>,<http://evil.example/?y="


def test_links_never_carry_what_the_request_sent(
    world: World, host: LocalFunctionsHost, logs: pytest.LogCaptureFixture
) -> None:
    """A crafted argument (``x=>,<http://evil.example/?y=``) and another Host header reach
    neither nextLink nor Link: one link, at PUBLIC_BASE_URL, which a client can follow (a
    Host that is not a loopback name of the host is refused outright)."""
    provider = world.fleet.default_provider
    bearer = world.admin_token()
    path = PROVIDER_PATH.format(provider.subscription_id)
    target = f"{path}?{query_string(window())}&{CRAFTED}"
    other = {"Host": f"localhost:{urlsplit(host.base_url).port}"}
    spoofed = raw_get(host, target, {"Authorization": f"Bearer {bearer}", "Host": "evil.example"})
    assert spoofed.status_code == 400
    assert "evil" not in spoofed.text
    for extra in ({}, other, {**other, "Accept": "text/csv"}):
        response = raw_get(host, target, {"Authorization": f"Bearer {bearer}", **extra})
        assert response.status_code == 200, (extra, response.text[:300])
        header = response.headers["Link"]
        assert (header.count("<"), header.count(">")) == (1, 1), header
        assert header.endswith('>; rel="next"')
        link = header[1 : header.index(">")]
        assert link.startswith(f"{host.base_url}{path}?"), link
        assert "evil" not in header
        if "Accept" not in extra:
            assert response.json()["nextLink"] == link
        following = requests.get(link, headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
        assert following.status_code == 200
        assert following.json()["value"]
    assert_logs_clean(logs, world, (bearer,))


def test_links_start_with_the_configured_public_base_url(world: World) -> None:
    """PUBLIC_BASE_URL (a gateway's address with a path) is the base of every link."""
    base = "https://usage.example.test/gateway"
    configured = World(
        world.settings,
        {**world.values, "PUBLIC_BASE_URL": base},
        world.fleet,
        world.issuer,
        world.subscriptions,
    )
    path = PROVIDER_PATH.format(world.fleet.default_provider.subscription_id)
    with serving(configured) as own:
        response = call(own.base_url, path, window(), world.admin_token(),
                        {"Host": f"localhost:{urlsplit(own.base_url).port}"})  # fmt: skip
    assert response.status_code == 200
    assert response.json()["nextLink"].startswith(f"{base}{path}?api-version=")


@pytest.mark.parametrize(
    "repeated",
    [
        "subscriberId={a}&subscriberId={b}",
        "api-version=2015-06-01-preview",
        "API-Version=2015-06-01-preview",
        "reportedStartTime=2026-11-20T05:00:00Z",
        "aggregationGranularity=Hourly&aggregationGranularity=Daily",
    ],
)
def test_repeated_arguments_are_400_not_last_one_wins(
    world: World, host: LocalFunctionsHost, repeated: str, logs: pytest.LogCaptureFixture
) -> None:
    """An argument given twice (same spelling or another case) is ambiguous: 400
    InvalidProperty and no rows, as for case-variant duplicates."""
    provider = world.fleet.delegated_providers[0]
    tenants = sorted(world.direct_tenants(provider.subscription_id))
    bearer = world.token(provider.owners[0])
    path = PROVIDER_PATH.format(provider.subscription_id)
    extra = repeated.format(a=tenants[0], b=tenants[1])
    target = f"{path}?{query_string(window())}&{extra}"
    response = raw_get(host, target, {"Authorization": f"Bearer {bearer}"})
    assert_refused(response, 400, "InvalidProperty", (bearer,))
    assert_logs_clean(logs, world, (bearer,))


# --- issue 26: every hostile request gets a fast, plain 4xx ----------------------------------
#
# One test per finding of the attack run against ``./dev run`` (its numbers in the names'
# docstrings); each failed on the code before the fix. Requests go over real HTTP through the
# module's host (the app and the portal's local sign-in, as ``./dev run`` serves them), or,
# where a storage request count is the proof, through the same ``FunctionApp`` in-process
# with a storage account that counts every request it sends.

API_CSP = "default-src 'none'; frame-ancestors 'none'"
MONTH_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/statements/{}"
ROLLUP_PATH = "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberStatements/{}"
ADJUSTMENTS_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/adjustments/{}"
SUBSCRIBER_ADJUSTMENTS_PATH = (
    "/subscriptions/{}/providers/Microsoft.Commerce.Admin/subscriberAdjustments/{}"
)
RATE_CARD_PATH = "/subscriptions/{}/providers/Microsoft.Commerce/RateCard"
RATE_CARD_FILTER = (
    "OfferDurableId eq 'MS-AZR-0003P' and Currency eq 'USD' and Locale eq 'en-US' "
    "and RegionInfo eq 'US'"
)
VERSION = {"api-version": API_VERSION}
SIGN_IN = "/local-sign-in"
ARTIFACTS = REPO / "test-artifacts" / "attacks"
DAY_SPAN = timedelta(days=1)


ANSWERED = re.compile(r'" (\d{3}) ')  # the host's access-log line: "GET /x HTTP/1.1" 200 -
COUNTS: dict[str, Counter[str]] = {}


class _AnsweredRequests(logging.Handler):
    """Counts the HTTP answers the local host logs (its access log, at DEBUG)."""

    def __init__(self, counts: Counter[str]) -> None:
        super().__init__(logging.DEBUG)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        found = ANSWERED.search(record.getMessage())
        if found:
            self.counts["requests"] += 1
            self.counts[f"{found.group(1)[0]}xx"] += 1


@pytest.fixture(autouse=True)
def counted_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """How many HTTP requests each test of the attack suite sends (the hosts' access logs),
    written to ``test-artifacts/attacks/request-counts.json`` for RELIABILITY.md."""
    logger = logging.getLogger("devstack.host")
    counts = COUNTS.setdefault(request.node.name, Counter())
    handler = _AnsweredRequests(counts)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    total = Counter[str]()
    for each in COUNTS.values():
        total.update(each)
    document = {"tests": {name: dict(c) for name, c in sorted(COUNTS.items())},
                "total": dict(total)}  # fmt: skip
    (ARTIFACTS / "request-counts.json").write_text(json.dumps(document, indent=1) + "\n")


@pytest.fixture(scope="module")
def host(world: World) -> Iterator[LocalFunctionsHost]:
    """The app and the portal's local sign-in behind one local host, as ``./dev run`` serves
    them (this module's override of the shared ``host``)."""
    values = {**world.values, "PORTAL_LOCAL_SIGN_IN_URL": SIGN_IN}
    load_example_prices(world.settings)  # as ./dev run does (idempotent)
    sign_in = LocalSignIn(Settings.from_environ(values), world.issuer)
    with LocalFunctionsHost(
        REPO, values, run_timers_at_start=False, local_routes=(sign_in.route(SIGN_IN),)
    ) as running:
        yield running


class CountingAccount(StorageAccount):
    """The real storage account, counting every request it sends to storage."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, request_hook=self._count)
        self.requests = 0
        self._lock = threading.Lock()

    def _count(self, request: Any) -> None:
        with self._lock:
            self.requests += 1


def counted(world: World) -> tuple[FunctionApp, CountingAccount]:
    """The app the host runs, built in-process over a counting storage account."""
    app = FunctionApp(world.settings)
    account = CountingAccount(world.settings)
    app.account = account
    return app, account


def in_process(app: FunctionApp, path: str, arguments: str, token: str) -> HttpAnswer:
    """One GET of the API answered by ``app`` in this process (no HTTP)."""
    return app.answer_usage_request(
        HttpCall(
            method="GET",
            url=f"http://127.0.0.1{path}?{arguments}",
            route_path=path.removeprefix("/subscriptions"),
            headers={"Authorization": f"Bearer {token}"},
        )
    )


def error_of(answer: HttpAnswer) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(answer.body)["error"]
    assert answer.headers["x-ms-error-code"] == error["code"]
    return error


def assert_api_headers(response: requests.Response, cache: str = "no-store") -> None:
    """The headers every API answer carries (issue 26, What to build)."""
    assert response.headers.get("X-Content-Type-Options") == "nosniff", response.headers
    assert response.headers.get("Content-Security-Policy") == API_CSP, response.headers
    assert response.headers.get("Cache-Control") == cache, response.headers


def test_1_a_month_in_other_digits_is_one_400_on_any_subscription_before_permission(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 1 (and 11's months): ``2026-1²`` (was a 500), full-width or Arabic-Indic digits
    and a trailing newline are 400 InvalidMonth, the same on one's own subscription, another's,
    a roll-up and the adjustments routes, before the permission check and without a storage
    request."""
    tenant, owner = owned_tenant(world)
    own, victim = tenant.subscription_id, victim_of(world, owner).subscription_id
    provider = world.fleet.delegated_providers[0]
    bearer = world.token(owner)
    months = (
        "2026-1%C2%B2",  # a superscript two: passed isdigit, failed int()
        "%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-%EF%BC%91%EF%BC%91",  # full-width
        "%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A1%D9%A1",  # Arabic-Indic
        "2026-11%0A",
        "2026-11%20",
        "+2026-11",
    )
    app, account = counted(world)
    for month in months:
        targets = (
            (MONTH_PATH.format(own, month), bearer),
            (MONTH_PATH.format(victim, month), bearer),
            (ROLLUP_PATH.format(provider.subscription_id, month), bearer),
            (ROLLUP_PATH.format(provider.subscription_id, month), world.token(provider.owners[0])),
            (ADJUSTMENTS_PATH.format(own, month), bearer),
            (ADJUSTMENTS_PATH.format(victim, month), bearer),
            (SUBSCRIBER_ADJUSTMENTS_PATH.format(provider.subscription_id, month), bearer),
        )
        bodies = []
        for target, token in targets:
            response = raw_get(host, f"{target}?api-version={API_VERSION}",
                               {"Authorization": f"Bearer {token}"})  # fmt: skip
            assert_refused(response, 400, "InvalidMonth", (token,))
            bodies.append(response.json()["error"])
            answer = in_process(app, unquote(target), f"api-version={API_VERSION}", token)
            assert (answer.status, error_of(answer)["code"]) == (400, "InvalidMonth")
        assert all(body == bodies[0] for body in bodies), month
    assert account.requests == 0


def test_2_a_huge_subscriber_id_is_400_and_never_reaches_storage(
    world: World, host: LocalFunctionsHost, logs: pytest.LogCaptureFixture
) -> None:
    """Finding 2: a 20,000-character ``subscriberId`` on subscriberUsageAggregates,
    subscriberStatements (storage refused it with 431, answered as a 500 that blamed role
    assignments) and subscriberAdjustments is 400 SubscriberIdIsNotDirectTenant, with no
    storage request."""
    provider = world.fleet.delegated_providers[0]
    bearer = world.token(provider.owners[0])
    app, account = counted(world)
    for value in ("a" * 20_000, "b" * 37, str(uuid.uuid4()) + "\n", "{" + str(uuid.uuid4()) + "}"):
        for path, arguments in (
            (PROVIDER_PATH.format(provider.subscription_id), window()),
            (ROLLUP_PATH.format(provider.subscription_id, "2026-11"), VERSION),
            (SUBSCRIBER_ADJUSTMENTS_PATH.format(provider.subscription_id, "2026-11"), VERSION),
        ):
            query = {**arguments, "subscriberId": value}
            response = call(host.base_url, path, query, bearer)
            assert_refused(response, 400, "SubscriberIdIsNotDirectTenant", (bearer,))
            assert value not in response.text
            answer = in_process(app, path, query_string(query), bearer)
            assert error_of(answer)["code"] == "SubscriberIdIsNotDirectTenant"
    assert account.requests == 0
    assert not [r for r in logs.records if "storage refused" in r.getMessage()]


def test_3_the_local_sign_in_bounds_its_body(world: World, host: LocalFunctionsHost) -> None:
    """Finding 3: ``[`` x 100,000 then ``]`` x 100,000 (an uncaught RecursionError, an empty
    500) is 413; deep JSON under the size cap is 400; neither mints a token."""
    url = f"{host.base_url}{SIGN_IN}/token"
    json_type = {"Content-Type": "application/json"}
    for body, status in (
        (b"[" * 100_000 + b"]" * 100_000, 413),
        (b"[" * 400 + b"]" * 400, 400),
        (b'{"principal": {"principal": {"principal": "admin"}}}', 400),
    ):
        response = requests.post(url, data=body, headers=json_type, timeout=60)
        assert response.status_code == status, response.text[:200]
        assert "accessToken" not in response.text
        assert response.json()["error"]["code"] == response.headers["x-ms-error-code"]
        assert_api_headers(response)
    granted = requests.post(url, data=b'{"principal": "admin"}', headers=json_type, timeout=60)
    assert granted.status_code == 200  # the control: a well-formed body still signs in


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "n" * 5_000, "caf\u00e9"])
def test_4_a_repeated_argument_is_never_sent_back(
    world: World, host: LocalFunctionsHost, name: str
) -> None:
    """Finding 4: a repeated argument this API does not read is described, not named (its
    name came back in ``message`` and in full in ``target``); one of ours is named in our
    own spelling."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    path = TENANT_PATH.format(tenant.subscription_id)
    sent = quote(name, safe="")
    response = raw_get(host, f"{path}?{query_string(window())}&{sent}=1&{sent}=2",
                       {"Authorization": f"Bearer {bearer}"})  # fmt: skip
    assert_refused(response, 400, "InvalidProperty", (bearer,))
    assert "target" not in response.json()["error"]
    for piece in (name, name[:64], sent, "<img"):
        assert piece not in response.text
        assert all(piece not in value for value in response.headers.values())
    ours = raw_get(host, f"{path}?{query_string(window())}&SHOWDETAILS=true&showdetails=false",
                   {"Authorization": f"Bearer {bearer}"})  # fmt: skip
    assert_refused(ours, 400, "InvalidProperty", (bearer,))
    assert ours.json()["error"]["target"] == "showDetails"


def test_5_the_rate_card_answers_its_own_spelling_of_a_bounded_locale(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 5: the answer's ``Locale`` is built from the parsed tag (``eN-us`` answers
    ``en-US``), and a tag over 35 characters or four subtags is 400 InvalidFilter."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    path = RATE_CARD_PATH.format(tenant.subscription_id)
    sent = RATE_CARD_FILTER.replace("'en-US'", "'eN-us'")
    response = call(host.base_url, path, {**VERSION, "$filter": sent}, bearer)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["Locale"] == "en-US"
    assert_api_headers(response)
    for locale in ("en-" + "-".join(["abcdefgh"] * 4), "en-aa-bb-cc-dd", "en-US\u00a0"):
        text = RATE_CARD_FILTER.replace("en-US", locale)
        refused = call(host.base_url, path, {**VERSION, "$filter": text}, bearer)
        assert_refused(refused, 400, "InvalidFilter", (bearer,))
        assert locale not in refused.text


def test_6_the_portal_redirect_never_follows_the_host_header(host: LocalFunctionsHost) -> None:
    """Finding 6: ``Host: x/\\evil.example`` made ``Location: /\\evil.example/portal/`` (a
    browser follows it off-site); now such a Host is refused, and the redirect is
    ``PUBLIC_BASE_URL/portal/`` whichever loopback name the request used."""
    port = urlsplit(host.base_url).port
    refused = raw_get(host, "/portal", {"Host": "x/\\evil.example"})
    assert refused.status_code == 400
    assert "Location" not in refused.headers
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        moved = raw_get(host, "/portal", {"Host": name})
        assert moved.status_code == 308, (name, moved.status_code)
        assert moved.headers["Location"] == f"{host.base_url}/portal/"
        assert moved.headers["X-Content-Type-Options"] == "nosniff"


def test_7_a_filter_of_whitespace_runs_is_refused_by_its_length(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 7: ``OfferDurableId`` + 64,000 spaces + ``x`` (17 s of backtracking before
    its 400) is refused by the 1,024-character cap, before any parsing; under the cap the
    filter is read in one pass (the same shape at 1,000 characters: Azure's 400)."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    path = RATE_CARD_PATH.format(tenant.subscription_id)
    for spaces in (64_000, 20_000, 1_010):
        # Spaces as "+" (form encoding), so 64,000 of them fit the host's request line.
        target = f"{path}?api-version={API_VERSION}&$filter=OfferDurableId{'+' * spaces}x"
        response = raw_get(host, target, {"Authorization": f"Bearer {bearer}"})
        assert_refused(response, 400, "InvalidFilter", (bearer,))
        assert "1024 characters" in response.json()["error"]["message"]
    under = call(host.base_url, path,
                 {**VERSION, "$filter": "OfferDurableId" + " " * 980 + "x"}, bearer)  # fmt: skip
    assert_refused(under, 400, "InvalidFilter", (bearer,))
    assert under.json()["error"]["message"] == FILTER_MESSAGE


def test_8_a_ten_year_window_costs_what_it_answers(world: World) -> None:
    """Finding 8: a 10-year window on the provider route (15.8 s for a delegated provider:
    one activity query per day, 3,650) costs the storage requests of the days that hold
    usage: no more than a one-day window's plus one."""
    end = DAY + timedelta(days=1)
    decade = window(end - timedelta(days=3650), end)
    one_day = window(DAY, end)
    for provider in (world.fleet.delegated_providers[0], world.fleet.default_provider):
        bearer = world.token(provider.owners[0])
        path = PROVIDER_PATH.format(provider.subscription_id)
        requests_of = {}
        for name, arguments in (("day", one_day), ("decade", decade)):
            app, account = counted(world)
            answer = in_process(app, path, query_string(arguments), bearer)
            assert answer.status == 200, answer.body[:300]
            requests_of[name] = account.requests
        assert requests_of["decade"] <= requests_of["day"] + 1, requests_of


STATUS_LINE = re.compile(rb"HTTP/1\.1 \d{3} ")


def exchange(host: LocalFunctionsHost, data: bytes) -> list[bytes]:
    """The status of every answer the host writes for ``data`` until it closes (found
    anywhere: an answer's body does not end its last line, so the next status line may
    follow it on the same line)."""
    return STATUS_LINE.findall(raw_exchange(host.base_url, data))


def test_9_the_local_host_refuses_ambiguous_framing_and_foreign_hosts(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 9: two Content-Length values, ``xchunked``, ``chunked, identity`` (each let
    the body be read as a hidden second request), a Host carrying a query, a foreign Host
    (DNS rebinding to the local sign-in with ``text/plain``) and an absolute-form target:
    one 400 each, and nothing after it is answered."""
    port = urlsplit(host.base_url).port
    here = f"Host: 127.0.0.1:{port}\r\n".encode()
    hidden = f"GET /portal/config.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sign_in = b"POST /local-sign-in/token HTTP/1.1\r\n"
    for name, data in {
        "two lengths": sign_in + here + b"Content-Length: 0\r\nContent-Length: "
        + str(len(hidden)).encode() + b"\r\n\r\n" + hidden,
        "length list": sign_in + here + b"Content-Length: 0, 0\r\n\r\n" + hidden,
        "xchunked": sign_in + here + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + hidden,
        "chunked, identity": sign_in + here
        + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + hidden,
        "both": sign_in + here + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        + b"0\r\n\r\n" + hidden,
        "host with a query": b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1:"
        + str(port).encode() + b"?api-version=x&y=\r\n\r\n",
        "rebound name": sign_in + b"Host: evil.example\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 22\r\n\r\n" + b'{"principal":"admin"}\n',
        "a port that is not one": b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1:80x\r\n\r\n",
        "a loopback suffix": b"GET /openapi.json HTTP/1.1\r\nHost: localhost.evil.example\r\n\r\n",
        "two hosts": b"GET /openapi.json HTTP/1.1\r\n" + here + here + b"\r\n",
        "absolute form": b"GET http://evil.example/openapi.json HTTP/1.1\r\n" + here + b"\r\n",
    }.items():  # fmt: skip
        answer = raw_exchange(host.base_url, data)
        assert STATUS_LINE.findall(answer) == [b"HTTP/1.1 400 "], (name, answer[:300])
        assert b"x-ms-error-code: BadRequest" in answer, (name, answer[:300])  # the host's
    # "//x/portal" names a host to URL parsers; http.server reduces it to "/x/portal",
    # which routes nowhere: never the portal, never x.
    scheme_relative = b"GET //evil.example/portal HTTP/1.1\r\n" + here + b"Connection: close\r\n"
    assert exchange(host, scheme_relative + b"\r\n") == [b"HTTP/1.1 404 "]
    # The control: the same loopback request, well framed, is answered.
    ok = f"GET /openapi.json HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    assert exchange(host, ok.encode()) == [b"HTTP/1.1 200 "]


def test_10_every_answer_is_json_with_nosniff_no_store_and_a_csp(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 10: usage, statement, roll-up, RateCard and error answers (API and host:
    404, 405, 414, 431), the sign-in's and the portal's 404/405 carry nosniff, no-store
    and (API) ``default-src 'none'; frame-ancestors 'none'``, as JSON, never HTML."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    admin = world.admin_token()
    provider = world.fleet.default_provider.subscription_id
    auth = {"Authorization": f"Bearer {bearer}"}
    api = [
        call(host.base_url, TENANT_PATH.format(tenant.subscription_id), window(), bearer),
        call(host.base_url, TENANT_PATH.format(tenant.subscription_id), window(), bearer,
             {"Accept": "text/csv"}),
        call(host.base_url, MONTH_PATH.format(tenant.subscription_id, "2026-11"), VERSION,
             bearer),
        call(host.base_url, ROLLUP_PATH.format(provider, "2026-11"), VERSION, admin),
        call(host.base_url, RATE_CARD_PATH.format(tenant.subscription_id),
             {**VERSION, "$filter": RATE_CARD_FILTER}, bearer),
        call(host.base_url, TENANT_PATH.format(tenant.subscription_id), window()),  # 401
        call(host.base_url, TENANT_PATH.format(provider), window(), bearer),  # 403
        call(host.base_url, f"/subscriptions/{provider}/providers/x/y", window(), bearer),
        requests.post(f"{host.base_url}{TENANT_PATH.format(provider)}", headers=auth,
                      timeout=60),  # 405
        call(host.base_url, "/providers/Microsoft.Commerce.Admin/operations", VERSION, bearer),
    ]  # fmt: skip
    assert [r.status_code for r in api] == [200, 200, 200, 200, 200, 401, 403, 404, 405, 200]
    for response in api:
        assert_api_headers(response)
        assert response.headers["Content-Type"].startswith(("application/json", "text/csv"))
    document = call(host.base_url, "/openapi.json")
    assert_api_headers(document, cache="public, max-age=3600")
    own = [
        raw_get(host, "/nothing/here", {}),  # the host's 404
        raw_get(host, "/" + "a" * 70_000, {}),  # 414
        raw_get(host, "/openapi.json", {"X-Big": "b" * 70_000}),  # 431: a line too long
        raw_get(host, "/openapi.json", {f"X-H{n}": "v" for n in range(120)}),  # 431: too many
        requests.get(f"{host.base_url}{SIGN_IN}/token", timeout=60),  # the sign-in's 405
        requests.get(f"{host.base_url}{SIGN_IN}/nothing", timeout=60),  # its 404
        requests.get(f"{host.base_url}{SIGN_IN}/principals", timeout=60),  # its 200
    ]
    assert [r.status_code for r in own] == [404, 414, 431, 431, 405, 404, 200]
    for response in own:
        assert_api_headers(response)
        assert response.headers["Content-Type"].startswith("application/json")
        assert b"<html" not in response.content.lower()
    for response in (
        requests.get(f"{host.base_url}/portal/nothing.js", timeout=60),
        requests.post(f"{host.base_url}/portal/", timeout=60),
    ):
        assert response.status_code in (404, 405)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def restyled(token: str) -> dict[str, str]:
    """Other spellings of a genuine continuation token: the same bytes, another encoding."""
    payload, _, signature = token.partition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    standard = base64.b64encode(raw).decode()
    return {
        "padded": f"{payload}.{signature}=",
        "padded payload": f"{payload}{'=' * (-len(payload) % 4) or '=='}.{signature}",
        "standard base64": f"{payload}.{standard}",
        "standard, unpadded": f"{payload}.{standard.rstrip('=')}",
        "trailing newline": f"{token}\n",
    }


def test_11_odd_digits_spaces_and_token_spellings_are_refused(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 11: a time with a trailing newline or full-width digits, a RateCard filter
    with non-breaking spaces or newlines, and a genuine continuation token re-spelled with
    ``=`` padding or standard base64 (all accepted) are each their argument's 400."""
    tenant, owner = owned_tenant(world)
    bearer = world.token(owner)
    path = TENANT_PATH.format(tenant.subscription_id)
    for start in ("2026-11-20T00:00:00Z\n", "\uff12\uff10\uff12\uff16-11-20T00:00:00Z",
                  "2026-11-20T00:00:00Z\u00a0", " 2026-11-20T00:00:00Z"):  # fmt: skip
        response = call(host.base_url, path, {**window(), "reportedStartTime": start}, bearer)
        assert_refused(response, 400, "InvalidProperty", (bearer,))
    rate_card = RATE_CARD_PATH.format(tenant.subscription_id)
    for spaced in (RATE_CARD_FILTER.replace(" and ", "\u00a0and\u00a0", 1),
                   RATE_CARD_FILTER.replace(" and ", "\nand ", 1),
                   RATE_CARD_FILTER.replace(" eq ", "\teq ", 1)):  # fmt: skip
        response = call(host.base_url, rate_card, {**VERSION, "$filter": spaced}, bearer)
        assert_refused(response, 400, "InvalidFilter", (bearer,))
    provider = world.fleet.default_provider
    admin = world.admin_token()
    provider_path = PROVIDER_PATH.format(provider.subscription_id)
    params, token = first_page(host, provider_path, admin)
    assert call(host.base_url, provider_path, params, admin).status_code == 200  # genuine
    for name, spelled in restyled(token).items():
        if spelled == token:  # a signature with no "-" or "_" is spelled alike in both
            continue
        response = call(host.base_url, provider_path, {**params, "continuationToken": spelled},
                        admin)  # fmt: skip
        assert response.status_code == 400, name
        assert_refused(response, 400, "InvalidContinuationToken", (admin,))


def test_12_ops_token_lists_as_readable_exactly_what_the_api_serves(
    world: World, host: LocalFunctionsHost
) -> None:
    """Finding 12: ``ops token tenant --verbose`` listed deleted subscriptions as readable
    (the API answers 403); now it applies the API's own rule: every subscription it lists
    answers 200 on the tenant route, every other one the principal owns answers 403."""
    hour = DAY + DAY_SPAN  # the last closed hour is DAY's 23:00, as the world was collected
    deleted_seen = 0
    for index in range(4):
        principal = demo_principal(world.settings, "tenant", index, at=hour)
        text = readable(world.settings, principal, at=hour)
        listed = set(text.partition("tenant route: ")[2].split(";")[0].split(", ")) - {"none"}
        owned = {s.subscription_id.lower() for s in world.subscriptions.values()
                 if principal.object_id in s.owners}  # fmt: skip
        deleted_seen += sum(world.subscriptions[s].state.value == "deleted" for s in owned)
        bearer = world.token(principal.object_id)
        for subscription_id in owned:
            response = call(host.base_url, TENANT_PATH.format(subscription_id),
                            window(DAY, DAY + HOUR), bearer)  # fmt: skip
            expected = 200 if subscription_id in listed else 403
            assert response.status_code == expected, (index, subscription_id, text)
        assert listed <= owned
    assert deleted_seen  # the principals own deleted subscriptions: the rule is exercised


@pytest.fixture(scope="module")
def partial_day(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A small fleet collected for 00:00-05:00 of one day only (a backfill), its own tables."""
    day = DAY + timedelta(days=2)
    issuer = LocalIssuer(tmp_path_factory.mktemp("partial-day") / "auth")
    values = {
        **LOCAL_VALUES,
        "FLEET_SEED": "7", "FLEET_TENANTS": "2", "FLEET_SCALE": "0.3",
        "AzureWebJobsStorage": azurite.connection_string,
        "USAGE_TABLE_PREFIX": "p" + uuid.uuid4().hex[:12],
        "AUTH_JWKS_URI": str(issuer.jwks_path),
        "COLLECT_LOOKBACK_HOURS": "6",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobs.collect_usage.Disabled": "true",
        "AzureWebJobs.collect_slice.Disabled": "true",
        "AzureWebJobs.report_to_azure.Disabled": "true",
    }  # fmt: skip
    settings = Settings.from_environ(values)
    fleet = fleet_from_settings(settings)
    Collector(settings, StorageAccount(settings), fleet).collect_due_hours(
        day + timedelta(hours=6, minutes=30)
    )
    listed = {s.subscription_id.lower(): s for s in fleet.subscriptions(day + 5 * HOUR)}
    world = World(settings, values, fleet, issuer, listed)
    yield world
    drop_world(world, azurite)


def test_13_a_daily_window_over_a_partly_collected_day_is_refused_by_api_and_cli(
    partial_day: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 13: a day collected 00:00-05:00 answered Daily with nothing, silently, while
    Hourly had its rows; now Daily is one 400 naming the day and how far it is collected,
    the same from the API and from ``ops aggregates``."""
    world = partial_day
    day = DAY + timedelta(days=2)
    provider = world.fleet.delegated_providers[0].subscription_id  # the tenants' provider
    admin = world.admin_token()
    path = PROVIDER_PATH.format(provider)
    with serving(world) as running:
        hourly = call(running.base_url, path, window(day, day + 6 * HOUR), admin)
        assert hourly.status_code == 200
        assert hourly.json()["value"]
        daily = call(running.base_url, path, window(day, day + DAY_SPAN, "Daily"), admin)
        assert_refused(daily, 400, "InvalidProperty", (admin,))
        message = daily.json()["error"]["message"]
        assert "2026-11-22" in message
        assert "05:00" in message
        before = call(running.base_url, path, window(day - DAY_SPAN, day, "Daily"), admin)
        assert before.status_code == 200  # a window that ends before the day is answered
        code, out, err = run_ops(
            capsys, "aggregates", "--api-url", running.base_url, "--token", admin,
            "--provider-subscription", provider, "--granularity", "daily",
            "--reported-start", iso(day), "--reported-end", iso(day + DAY_SPAN),
        )  # fmt: skip
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert "InvalidProperty" in err
    assert " ".join(message.split()) in err


# --- the property: every route, anything within the host's limits ---------------------------

ROUTES = (
    "/subscriptions/{sub}/providers/Microsoft.Commerce/usageAggregates",
    "/subscriptions/{sub}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates",
    "/subscriptions/{sub}/providers/Microsoft.Commerce/subscriberUsageAggregates",
    "/subscriptions/{sub}/providers/Microsoft.Commerce/RateCard",
    "/subscriptions/{sub}/providers/Microsoft.Commerce/statements/{month}",
    "/subscriptions/{sub}/providers/Microsoft.Commerce.Admin/subscriberStatements/{month}",
    "/subscriptions/{sub}/providers/Microsoft.Commerce/adjustments/{month}",
    "/subscriptions/{sub}/providers/Microsoft.Commerce.Admin/subscriberAdjustments/{month}",
    "/subscriptions/{sub}/providers/Microsoft.CostManagement/query",
    "/subscriptions/{sub}/resourceGroups/{junk}/providers/Microsoft.CostManagement/query",
    "/subscriptions/{sub}/providers/Microsoft.Commerce.Admin/providers/Microsoft.CostManagement/query",
    "/subscriptions",
    "/subscriptions/{sub}/providers/{junk}",
    "/providers/Microsoft.Commerce.Admin/operations",
    "/openapi.json",
    "/portal/{junk}",
    "/portal",
    "/local-sign-in/{junk}",
    "/local-sign-in/token",
    "/local-sign-in/principals",
    "/{junk}",
)
NAMES = ("api-version", "reportedStartTime", "reportedEndTime", "aggregationGranularity",
         "showDetails", "subscriberId", "continuationToken", "$filter", "$top",
         "$skiptoken")  # fmt: skip
GOOD_VALUES = (
    "2015-06-01-preview",
    "2023-03-01",  # the cost query's
    "2022-12-01",  # the subscriptions list's
    "1000",
    "2026-11-20T00:00:00Z",
    "2026-11-21T00:00:00Z",
    "2026-11-20T06:00:00%2B00:00",
    "Hourly",
    "Daily",
    "false",
    "true",
    RATE_CARD_FILTER,
)
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
# Cost query definitions: a good one (by pricing level and subscription, so a provider's
# scope reads wholesale too, and every answer names subscriptions), and the same with one
# member swapped for arbitrary JSON.
COST_BODY: dict[str, Any] = {
    "type": "ActualCost",
    "timeframe": "Custom",
    "timePeriod": {"from": "2026-11-01T00:00:00Z", "to": "2026-11-30T00:00:00Z"},
    "dataset": {
        "granularity": "Daily",
        "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
        "grouping": [
            {"type": "Dimension", "name": "PricingLevel"},
            {"type": "Dimension", "name": "SubscriptionId"},
        ],
    },
}
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), ANY_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(ANY_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def cost_bodies(draw: st.DrawFn) -> bytes:
    """A cost query definition: the good one, or one of its members (or the dataset's)
    replaced by arbitrary JSON."""
    body = json.loads(json.dumps(COST_BODY))
    where = draw(st.sampled_from((None, "type", "timeframe", "timePeriod", "dataset", "granularity",
                                  "aggregation", "grouping", "filter")))  # fmt: skip
    if where in ("granularity", "aggregation", "grouping", "filter"):
        body["dataset"][where] = draw(JSON_VALUES)
    elif where is not None:
        body[where] = draw(JSON_VALUES)
    return json.dumps(body).encode()


PORTAL_TYPES = ("text/html", "text/css", "text/javascript", "image/svg+xml", "image/png")


@st.composite
def hostile_requests(draw: st.DrawFn, subscriptions: tuple[str, ...]) -> dict[str, Any]:
    """A request to one of the routes: path segments, arguments, headers and a body drawn
    from good values, their neighbours and arbitrary text, within the host's limits."""
    segment = st.one_of(st.sampled_from(subscriptions), st.uuids().map(str), ANY_TEXT)
    template = draw(st.sampled_from(ROUTES))
    path = template.format(
        sub=quote(draw(segment), safe=""),
        month=quote(draw(st.one_of(st.sampled_from(("2026-11", "2026-12", "1969-12",
                                                    "9999-12")), ANY_TEXT)), safe=""),
        junk=quote(draw(ANY_TEXT), safe="/"),
    )  # fmt: skip
    names = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES).map(str.upper), ANY_TEXT)
    values = st.one_of(st.sampled_from((*GOOD_VALUES, *subscriptions)), ANY_TEXT)
    arguments = draw(st.lists(st.tuples(names, values), max_size=7))
    versions = {"CostManagement/query": "2023-03-01", "/subscriptions": "2022-12-01"}
    version = next((v for k, v in versions.items() if template.endswith(k)), None)
    if version and draw(st.booleans()):  # past the version check, into the route's own code
        arguments.insert(0, ("api-version", version))
    query = "&".join(f"{quote(n, safe='$')}={quote(v, safe='%')}" for n, v in arguments)
    headers = {
        f"X-{name}": value
        for name, value in draw(
            st.dictionaries(
                st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
                st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
                max_size=4,
            )
        ).items()
    }
    accept = draw(st.sampled_from((None, "text/csv", "application/json", "*/*", "text/html")))
    if accept:
        headers["Accept"] = accept
    content_type = draw(st.sampled_from((None, "application/json", "text/plain")))
    if content_type:
        headers["Content-Type"] = content_type
    if template.endswith("CostManagement/query"):
        method = draw(st.sampled_from(("POST", "POST", "POST", "GET", "PUT")))
        body = draw(st.one_of(cost_bodies(), cost_bodies(), st.binary(max_size=512)))
    else:
        method = draw(st.sampled_from(("GET", "GET", "GET", "POST", "HEAD", "PUT", "OPTIONS")))
        known = st.sampled_from((b'{"principal": "admin"}', b"[[[[]]]]"))
        body = draw(st.one_of(st.just(b""), st.binary(max_size=512), known))
    return {
        "method": method,
        "target": path + (f"?{query}" if query else ""),
        "headers": headers,
        "body": body if method != "GET" else b"",
        "caller": draw(st.sampled_from((None, "admin", "provider", "tenant", "stranger", "x"))),
    }


def send(host: LocalFunctionsHost, request: dict[str, Any], token: str | None) -> Any:
    """One request, byte for byte (the target is not normalised by a client)."""
    split = urlsplit(host.base_url)
    connection = http.client.HTTPConnection(split.hostname or "", split.port, timeout=60)
    try:
        connection.putrequest(request["method"], request["target"], skip_accept_encoding=True)
        headers = dict(request["headers"])
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        headers["Content-Length"] = str(len(request["body"]))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(request["body"])
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def test_every_route_answers_anything_with_a_plain_4xx_or_json_and_the_headers(
    world: World, host: LocalFunctionsHost
) -> None:
    """Hypothesis over every route (random segments, arguments, headers, bodies; every
    role's token and none): only 2xx, the portal's 308, 4xx or 503; JSON (or CSV, or the
    portal's own file); nosniff and a CSP on every answer, no-store on every answer but the
    public OpenAPI document and the portal's files; no stack trace, no 5xx; and no answer of
    the API to a tenant, a provider or a stranger names a subscription it may not read."""
    tenant, owner = owned_tenant(world)
    provider, other = world.fleet.delegated_providers[:2]
    victim = victim_of(world, owner).subscription_id.lower()
    outside = sorted(world.direct_tenants(other.subscription_id) - {tenant.subscription_id.lower()})
    subscriptions = (tenant.subscription_id, provider.subscription_id, victim, outside[0],
                     other.subscription_id)  # fmt: skip
    hidden = {  # what each caller may not read, and so must never see in an answer
        "provider": {s.encode() for s in outside},
        "tenant": {victim.encode()},
        "stranger": {victim.encode(), tenant.subscription_id.lower().encode()},
    }
    tokens = {
        None: None,
        "admin": world.admin_token(),
        "provider": world.token(provider.owners[0]),
        "tenant": world.token(owner),
        "stranger": world.token(str(uuid.uuid4())),
        "x": "not.a.token",
    }
    seen: dict[int, int] = {}

    @hypothesis_settings(max_examples=150, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(request=hostile_requests(subscriptions))
    def check(request: dict[str, Any]) -> None:
        status, headers, body = send(host, request, tokens[request["caller"]])
        seen[status] = seen.get(status, 0) + 1
        path = request["target"].partition("?")[0]
        portal_file = path.startswith("/portal/") and status in (200, 304)
        assert (
            200 <= status < 300
            or 400 <= status < 500
            or status == 503
            or (status == 308 and path == "/portal")
        ), (status, request)
        content_type = headers.get("content-type", "")
        if portal_file:
            assert content_type.startswith((*PORTAL_TYPES, "application/json")), request
        else:
            assert content_type.startswith(("application/json", "text/csv")), (status, request)
            if request["method"] != "HEAD" and content_type.startswith("application/json"):
                json.loads(body)
        assert headers.get("x-content-type-options") == "nosniff", (status, request)
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), request
        if path == "/openapi.json" and status == 200:
            assert headers["cache-control"] == "public, max-age=3600"
        elif portal_file:
            assert headers["cache-control"] == "no-cache"
        else:
            assert headers.get("cache-control") == "no-store", (status, request)
        assert b"Traceback" not in body
        if 200 <= status < 300 and not path.startswith(("/portal", "/local-sign-in")):
            for subscription_id in hidden.get(request["caller"] or "", set()):
                assert subscription_id not in body.lower(), (request["caller"], request)

    check()
    assert set(seen) & {200, 400, 401, 403, 404, 405}  # the property met real answers
