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


def call(endpoint: LocalSignIn, method: str, action: str, body: bytes = b"") -> func.HttpResponse:
    return endpoint.handle(
        func.HttpRequest(
            method,
            f"http://localhost/local-sign-in/{action}",
            headers={},
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


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("POST", "token", b'{"principal": "root"}'),
        ("POST", "token", b"not json"),
        ("POST", "token", b'["admin"]'),
        ("GET", "token", b""),
        ("GET", "anything", b""),
    ],
)
def test_anything_else_is_refused_without_a_token(
    tmp_path: Path, method: str, action: str, body: bytes
) -> None:
    """Unknown principals, bad bodies, other verbs and paths: 400/404, no token."""
    endpoint = LocalSignIn(Settings.from_environ(VALUES), LocalIssuer(tmp_path))
    answer = call(endpoint, method, action, body)
    assert answer.status_code in (400, 404)
    assert b"accessToken" not in answer.get_body()


def test_refused_outside_local_mode(tmp_path: Path) -> None:
    """Production settings cannot build the endpoint."""
    settings = Settings.from_environ(VALUES).model_copy(update={"app_mode": AppMode.PRODUCTION})
    with pytest.raises(ConfigurationError):
        LocalSignIn(settings, LocalIssuer(tmp_path))
