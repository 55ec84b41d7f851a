"""HttpJwksSource against a real local HTTP server: caching, rotation, flood control, outages."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.tokens import AUDIENCE, ISSUER, LocalIssuer
from shared.core.errors import ConfigurationError, NotAllowedError, TransientError
from shared.query.auth import HttpJwksSource, TokenValidator
from tests.loopback import LoopbackServer

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TTL = 3600.0
INTERVAL = 60.0


@dataclass
class JwksServer:
    """A loopback HTTP server whose JWKS body and status the test can change."""

    server: ThreadingHTTPServer
    document: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uri(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/discovery/v2.0/keys"

    def serve(self, *issuers: LocalIssuer) -> None:
        keys = [json.loads(issuer.jwks_path.read_text())["keys"][0] for issuer in issuers]
        self.document = {"keys": keys}


@dataclass
class FakeMonotonic:
    """A monotonic clock the test advances by hand (no sleeping)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def issuer_a(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("key-a"))


@pytest.fixture(scope="module")
def issuer_b(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("key-b"))


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    """A real HTTP server on 127.0.0.1 and a free port, stopped after the test."""
    state: JwksServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
                status, body = state.status, json.dumps(state.document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with LoopbackServer(Handler) as running:
        state = JwksServer(running.server)
        yield state


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def validator(
    jwks_server: JwksServer, session: requests.Session, monotonic: FakeMonotonic
) -> TokenValidator:
    """A validator reading the test's JWKS server through a fresh source (empty cache)."""
    return make_validator(make_source(jwks_server.uri, session, monotonic))


def make_validator(source: HttpJwksSource) -> TokenValidator:
    return TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=source, clock=lambda: NOW)


def make_source(
    uri: str, session: requests.Session, monotonic: FakeMonotonic, **kwargs: Any
) -> HttpJwksSource:
    return HttpJwksSource(
        uri,
        session=session,
        ttl_seconds=TTL,
        min_refresh_interval_seconds=INTERVAL,
        timeout=2,
        monotonic=monotonic,
        **kwargs,
    )


def bearer(issuer: LocalIssuer, **kwargs: Any) -> str:
    return f"Bearer {issuer.mint(str(uuid.uuid4()), now=NOW, **kwargs)}"


def test_keys_fetched_once_and_cached(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
) -> None:
    """Many validations within the TTL cost exactly one JWKS request."""
    jwks_server.serve(issuer_a)
    for _ in range(20):
        validator.validate(bearer(issuer_a))
        monotonic.advance(60)
    assert jwks_server.requests == 1


def test_ttl_expiry_refetches(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
) -> None:
    """Once the cache is older than the TTL the next validation refetches, once."""
    jwks_server.serve(issuer_a)
    validator.validate(bearer(issuer_a))
    monotonic.advance(TTL)
    validator.validate(bearer(issuer_a))
    validator.validate(bearer(issuer_a))
    assert jwks_server.requests == 2


def test_key_rotation_triggers_one_refetch(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    issuer_b: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
) -> None:
    """A token with a newly published kid causes one refetch, then is served from cache."""
    jwks_server.serve(issuer_a)
    validator.validate(bearer(issuer_a))
    jwks_server.serve(issuer_a, issuer_b)
    monotonic.advance(INTERVAL)
    assert validator.validate(bearer(issuer_b, roles=["UsageAdmin"])).is_admin
    validator.validate(bearer(issuer_b))
    validator.validate(bearer(issuer_a))
    assert jwks_server.requests == 2


def test_unknown_kid_flood_is_rate_limited(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
) -> None:
    """Made-up kids cause at most one refetch per interval, and each is still a 401."""
    jwks_server.serve(issuer_a)
    validator.validate(bearer(issuer_a))
    monotonic.advance(INTERVAL)
    for _ in range(50):
        # The kid is all that matters: lookup fails before any signature is checked.
        forged = bearer(issuer_a, extra_claims={"jti": uuid.uuid4().hex}).split(".")
        header = {"alg": "RS256", "typ": "JWT", "kid": uuid.uuid4().hex}
        forged[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
        with pytest.raises(NotAllowedError) as refused:
            validator.validate(f"Bearer {'.'.join(forged)}")
        assert refused.value.code == "InvalidAuthenticationToken"
        monotonic.advance(INTERVAL / 100)
    assert jwks_server.requests == 2
    monotonic.advance(INTERVAL)
    with pytest.raises(NotAllowedError):
        validator.validate(bearer(issuer_a, extra_claims={"aud": "api://other"}))
    assert jwks_server.requests == 2, "a known kid never triggers a refetch"


def test_unknown_kid_refetch_allowed_again_after_interval(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    issuer_b: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
) -> None:
    """A kid refused within the interval is accepted after it, once the IdP publishes it."""
    jwks_server.serve(issuer_a)
    validator.validate(bearer(issuer_a))
    with pytest.raises(NotAllowedError):
        validator.validate(bearer(issuer_b))
    assert jwks_server.requests == 1
    jwks_server.serve(issuer_a, issuer_b)
    monotonic.advance(INTERVAL)
    validator.validate(bearer(issuer_b))
    assert jwks_server.requests == 2


def test_server_down_is_transient(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    session: requests.Session,
    monotonic: FakeMonotonic,
) -> None:
    """With the JWKS endpoint unreachable, validation raises TransientError, not a 401."""
    uri = jwks_server.uri
    jwks_server.server.shutdown()
    jwks_server.server.server_close()
    validator = make_validator(make_source(uri, session, monotonic))
    with pytest.raises(TransientError) as caught:
        validator.validate(bearer(issuer_a))
    assert caught.value.code == "ServiceUnavailable"
    with pytest.raises(TransientError):
        validator.validate(bearer(issuer_a))


@pytest.mark.parametrize(("status", "document"), [(500, {"keys": []}), (200, {"nope": 1})])
def test_bad_jwks_response_is_transient(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
    status: int,
    document: dict[str, Any],
) -> None:
    """A 5xx or a body with no usable keys is a TransientError; retries wait an interval."""
    jwks_server.status, jwks_server.document = status, document
    for _ in range(3):
        with pytest.raises(TransientError):
            validator.validate(bearer(issuer_a))
    assert jwks_server.requests == 1


def test_last_known_keys_survive_a_failed_ttl_refresh(
    jwks_server: JwksServer,
    issuer_a: LocalIssuer,
    validator: TokenValidator,
    monotonic: FakeMonotonic,
) -> None:
    """After the TTL an IdP failure keeps the old keys for one more TTL, then is a 503."""
    jwks_server.serve(issuer_a)
    validator.validate(bearer(issuer_a))
    jwks_server.status = 503
    monotonic.advance(TTL)
    validator.validate(bearer(issuer_a))
    monotonic.advance(TTL - INTERVAL)
    validator.validate(bearer(issuer_a))
    monotonic.advance(INTERVAL)
    with pytest.raises(TransientError):
        validator.validate(bearer(issuer_a))
    jwks_server.status = 200
    monotonic.advance(INTERVAL)
    validator.validate(bearer(issuer_a))


def test_http_source_configuration_is_checked(tmp_path: Path) -> None:
    """HttpJwksSource refuses a non-HTTP URI and a TTL shorter than the refresh interval."""
    with pytest.raises(ConfigurationError):
        HttpJwksSource(str(tmp_path / "jwks.json"))
    with pytest.raises(ConfigurationError):
        HttpJwksSource(
            "https://login.example/keys", ttl_seconds=10, min_refresh_interval_seconds=60
        )
