"""The demo-token command: the fleet's principals, local mode only."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.demo_tokens import demo_principal, mint_demo_token
from devstack.fleet import FleetOptions, SimulatedFleet
from shared.core.config import AppMode, Settings
from shared.core.errors import ConfigurationError
from shared.query.auth import FileJwksSource, TokenValidator
from tests.app_settings import LOCAL_VALUES

VALUES = {
    **LOCAL_VALUES,
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "FLEET_TENANTS": "12",
}


def test_principals_are_the_fleets_and_tokens_validate(tmp_path: Path) -> None:
    """admin holds the admin role; the others own their subscriptions; tokens verify."""
    settings = Settings.from_environ(VALUES)
    fleet = SimulatedFleet(FleetOptions(seed=settings.fleet_seed, tenants=12))
    admin, token = mint_demo_token(settings, "admin", directory=tmp_path)
    assert admin.object_id == fleet.admin_object_id
    validator = TokenValidator(
        issuer=settings.auth_issuer,
        audience=settings.auth_audiences,
        jwks=FileJwksSource(tmp_path / "jwks.json"),
        admin_role=settings.auth_admin_role,
    )
    assert validator.validate(f"Bearer {token}").is_admin
    provider = demo_principal(settings, "provider")
    assert provider.object_id in fleet.default_provider.owners
    delegated = demo_principal(settings, "delegated", 1)
    assert delegated.subscription_id == fleet.delegated_providers[1].subscription_id
    tenant, tenant_token = mint_demo_token(settings, "tenant", 3, tmp_path)
    caller = validator.validate(f"Bearer {tenant_token}")
    assert caller.object_id == tenant.object_id
    assert not caller.is_admin
    with pytest.raises(ValueError, match="delegated providers"):
        demo_principal(settings, "delegated", 99)


def test_refused_outside_local_mode() -> None:
    """Production settings make the command refuse."""
    settings = Settings.from_environ(VALUES).model_copy(update={"app_mode": AppMode.PRODUCTION})
    with pytest.raises(ConfigurationError):
        demo_principal(settings, "admin")
