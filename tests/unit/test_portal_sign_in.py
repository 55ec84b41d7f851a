"""The portal's local "sign in as" endpoint (devstack/sign_in.py): local mode only."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func
import pytest

from devstack.fleet import FleetOptions, SimulatedFleet
from devstack.sign_in import LocalSignIn
from devstack.tokens import LocalIssuer
from shared.core.config import AppMode, Settings
from shared.core.errors import ConfigurationError
from shared.query.auth import FileJwksSource, TokenValidator
from tests.app_settings import LOCAL_VALUES

VALUES = {
    **LOCAL_VALUES,
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "FLEET_TENANTS": "12",
}


def call(
    endpoint: LocalSignIn,
    method: str,
    action: str,
    body: bytes = b"",
    content_type: str = "application/json",
) -> func.HttpResponse:
    return endpoint.handle(
        func.HttpRequest(
            method,
            f"http://localhost/local-sign-in/{action}",
            headers={"Content-Type": content_type} if body else {},
            params={},
            route_params={"action": action},
            body=body,
        )
    )


def test_principals_are_the_fleets_and_tokens_validate(tmp_path: Path) -> None:
    """Admin (every provider), each provider, four tenants; a token per key that validates."""
    settings = Settings.from_environ(VALUES)
    fleet = SimulatedFleet(FleetOptions(seed=settings.fleet_seed, tenants=12))
    endpoint = LocalSignIn(settings, LocalIssuer(tmp_path))
    listed = json.loads(call(endpoint, "GET", "principals").get_body())["principals"]
    keys = [p["key"] for p in listed]
    assert keys == [
        "admin",
        "provider",
        "delegated-0",
        "delegated-1",
        *(f"tenant-{n}" for n in range(4)),
    ]
    providers = {
        p.subscription_id.lower() for p in [fleet.default_provider, *fleet.delegated_providers]
    }
    assert {s["id"] for s in listed[0]["subscriptions"]} == providers
    assert all(s["route"] == "tenant" for s in listed[-1]["subscriptions"])
    validator = TokenValidator(
        issuer=settings.auth_issuer,
        audience=settings.auth_audiences,
        jwks=FileJwksSource(tmp_path / "jwks.json"),
        admin_role=settings.auth_admin_role,
    )
    answer = call(endpoint, "POST", "token", json.dumps({"principal": "admin"}).encode())
    assert answer.headers["Cache-Control"] == "no-store"
    caller = validator.validate(f"Bearer {json.loads(answer.get_body())['accessToken']}")
    assert caller.is_admin
    assert caller.object_id == fleet.admin_object_id


ADMIN = b'{"principal": "admin"}'


@pytest.mark.parametrize(
    ("method", "action", "body", "content_type", "status"),
    [
        ("POST", "token", b'{"principal": "root"}', "application/json", 400),
        ("POST", "token", b"not json", "application/json", 400),
        ("POST", "token", b'["admin"]', "application/json", 400),
        ("POST", "token", b'{"principal": "admin", "x": [[[]]]}', "application/json", 400),
        ("POST", "token", b"[" * 100_000 + b"]" * 100_000, "application/json", 413),
        ("POST", "token", b"[" * 500 + b"]" * 500, "application/json", 400),
        ("POST", "token", ADMIN, "text/plain", 415),  # what a page may send cross-origin
        ("POST", "token", ADMIN, "application/x-www-form-urlencoded", 415),
        ("GET", "token", b"", "application/json", 405),
        ("GET", "anything", b"", "application/json", 404),
    ],
)
def test_anything_else_is_refused_without_a_token(
    tmp_path: Path, method: str, action: str, body: bytes, content_type: str, status: int
) -> None:
    """Unknown principals, bad, deep or huge bodies, other media types, verbs and paths:
    the API's JSON error envelope with nosniff and no-store, and no token."""
    endpoint = LocalSignIn(Settings.from_environ(VALUES), LocalIssuer(tmp_path))
    answer = call(endpoint, method, action, body, content_type)
    assert answer.status_code == status
    assert b"accessToken" not in answer.get_body()
    code = json.loads(answer.get_body())["error"]["code"]
    assert answer.headers["x-ms-error-code"] == code
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-store"


def test_refused_outside_local_mode(tmp_path: Path) -> None:
    """Production settings cannot build the endpoint."""
    settings = Settings.from_environ(VALUES).model_copy(update={"app_mode": AppMode.PRODUCTION})
    with pytest.raises(ConfigurationError):
        LocalSignIn(settings, LocalIssuer(tmp_path))
