"""Bearer tokens for the simulated fleet's principals, for trying the usage API locally.

    python -m devstack.demo_tokens {admin|provider|delegated|tenant} [--index N]

- ``admin``: the fleet's service admin, with the admin app role (reads everything);
- ``provider``: the owner of the default provider subscription (its direct tenants);
- ``delegated``: the owner of delegated provider N (its direct tenants only);
- ``tenant``: the first owner of tenant subscription N (sorted by id; active ones).

The fleet is built from the app settings' ``FLEET_*`` values (``local.settings.json`` or
the example file), exactly as the collector builds it, and tokens are signed by the local
issuer in ``.local/auth``. Refuses to run unless ``APP_MODE`` is local: these tokens are
for the local issuer only. :func:`demo_principal` and :func:`mint_demo_token` are the
reusable part (an operator CLI can call them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from devstack.azurite import REPO_ROOT
from devstack.fleet import SimulatedFleet, fleet_from_settings
from devstack.tokens import DEFAULT_DIRECTORY, LocalIssuer
from shared.core.config import AppMode, Settings
from shared.core.errors import ConfigurationError
from shared.core.hours import last_closed_hour, utc_now
from shared.storage.subscriptions import SubscriptionState

ROLES: Final = ("admin", "provider", "delegated", "tenant")


@dataclass(frozen=True)
class DemoPrincipal:
    role: str
    object_id: str
    app_roles: tuple[str, ...]
    subscription_id: str  # the subscription this principal calls the API for
    description: str


def fleet_of(settings: Settings) -> SimulatedFleet:
    return fleet_from_settings(settings)


def demo_principal(
    settings: Settings, role: str, index: int = 0, at: datetime | None = None
) -> DemoPrincipal:
    """The fleet principal for ``role`` (``index`` picks among delegated providers/tenants)."""
    if settings.app_mode is not AppMode.LOCAL:
        raise ConfigurationError("demo tokens are for local mode only (APP_MODE=local)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if index < 0:
        raise ValueError("index must not be negative")
    fleet = fleet_of(settings)
    if role == "admin":
        provider = fleet.default_provider
        return DemoPrincipal(
            role,
            fleet.admin_object_id,
            (settings.auth_admin_role,),
            provider.subscription_id,
            "service admin (admin app role)",
        )
    if role == "provider":
        provider = fleet.default_provider
        return DemoPrincipal(
            role, provider.owners[0], (), provider.subscription_id, provider.display_name
        )
    if role == "delegated":
        providers = fleet.delegated_providers
        if index >= len(providers):
            raise ValueError(f"the fleet has {len(providers)} delegated providers")
        chosen = providers[index]
        return DemoPrincipal(
            role, chosen.owners[0], (), chosen.subscription_id, chosen.display_name
        )
    hour = last_closed_hour(at or utc_now())
    tenants = sorted(
        (
            s
            for s in fleet.subscriptions(hour)
            if not s.is_provider and s.owners and s.state is SubscriptionState.ACTIVE
        ),
        key=lambda s: s.subscription_id,
    )
    if index >= len(tenants):
        raise ValueError(f"the fleet has {len(tenants)} active tenant subscriptions")
    tenant = tenants[index]
    return DemoPrincipal(role, tenant.owners[0], (), tenant.subscription_id, tenant.display_name)


def mint_demo_token(
    settings: Settings, role: str, index: int = 0, directory: Path = DEFAULT_DIRECTORY
) -> tuple[DemoPrincipal, str]:
    """The principal and a fresh one-hour token for it from the local issuer."""
    principal = demo_principal(settings, role, index)
    token = LocalIssuer(directory).mint(principal.object_id, roles=principal.app_roles)
    return principal, token


def _settings_values() -> dict[str, str]:
    for name in ("local.settings.json", "local.settings.example.json"):
        path = REPO_ROOT / name
        if path.exists():
            values: dict[str, str] = json.loads(path.read_text())["Values"]
            values.setdefault("AUTH_JWKS_URI", str(REPO_ROOT / DEFAULT_DIRECTORY / "jwks.json"))
            return values
    raise ConfigurationError("no local.settings.json or local.settings.example.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo_tokens",
        description="Print a bearer token for one of the simulated fleet's principals.",
    )
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--index", type=int, default=0, help="which delegated provider/tenant")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIRECTORY, help="issuer key directory")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_environ(_settings_values())
        principal, token = mint_demo_token(settings, args.role, args.index, args.dir)
    except (ConfigurationError, ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print(f"# {principal.description}: subscription {principal.subscription_id}", file=sys.stderr)
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
