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
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.azurite import ACCOUNT_KEY
from devstack.host import LocalFunctionsHost
from devstack.tokens import LocalIssuer
from shared.core.hours import utc_now
from shared.storage.subscriptions import Subscription
from tests.integration.test_query_support import (
    DAY,
    HOUR,
    PROVIDER_PATH,
    TENANT_PATH,
    World,
    call,
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
        connection.putrequest("GET", target, skip_accept_encoding=True)
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
    """A crafted argument (``x=>,<http://evil.example/?y=``) and a spoofed Host header reach
    neither nextLink nor Link: one link, at PUBLIC_BASE_URL, which a client can follow."""
    provider = world.fleet.default_provider
    bearer = world.admin_token()
    path = PROVIDER_PATH.format(provider.subscription_id)
    target = f"{path}?{query_string(window())}&{CRAFTED}"
    for extra in ({}, {"Host": "evil.example"}, {"Host": "evil.example", "Accept": "text/csv"}):
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
                        {"Host": "evil.example"})  # fmt: skip
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
