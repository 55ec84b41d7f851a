"""Print a bearer token for one of the simulated fleet's principals (local mode only):

- ``admin``: the service admin, with the admin app role (reads every subscription);
- ``provider``: the owner of the default provider subscription (its direct tenants);
- ``delegated``: the owner of delegated provider ``--index`` (its direct tenants only);
- ``tenant``: the first owner of active tenant subscription ``--index`` (sorted by id).

The fleet is the one the app settings' ``FLEET_*`` values describe, and the token is signed
by the local issuer whose key sits next to ``AUTH_JWKS_URI`` (the file the local API
validates with), so it is accepted by the API those settings run. Only the token goes to
stdout (``TOKEN=$(python -m ops token admin)``); ``--verbose`` adds, on stderr, who it is
for and which subscriptions it may read. Outside ``APP_MODE=local`` it refuses.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from devstack.demo_tokens import ROLES, DemoPrincipal, fleet_of, mint_demo_token
from devstack.tokens import DEFAULT_DIRECTORY
from shared.core.config import AppMode, Settings
from shared.core.errors import BadInputError, ConfigurationError
from shared.core.hours import last_closed_hour, utc_now
from shared.query.caller_scope import reads_on_tenant_route

HELP = "mint a local bearer token for a simulated fleet principal (local mode only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=ROLES, help="whose token")
    parser.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="N",
        help="which delegated provider or tenant subscription (default: 0)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="local issuer key directory (default: the folder of AUTH_JWKS_URI)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also say who it is for and what it may read"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.app_mode is not AppMode.LOCAL:
        raise ConfigurationError(
            "tokens are minted for local mode only (APP_MODE=local); "
            "outside it, get one from Entra ID"
        )
    directory = args.dir if args.dir is not None else issuer_directory(settings)
    try:
        principal, token = mint_demo_token(settings, args.role, args.index, directory)
    except ValueError as error:  # a bad --index: demo_tokens says which range is valid
        raise BadInputError(f"{args.role} --index {args.index}: {error}") from None
    if args.verbose:
        print(f"# {args.role}: {principal.description}", file=sys.stderr)
        print(f"# object id {principal.object_id}", file=sys.stderr)
        print(f"# may read: {readable(settings, principal)}", file=sys.stderr)
    print(token)
    return 0


def issuer_directory(settings: Settings) -> Path:
    """Where the local issuer keeps its key: beside the JWKS file the API reads."""
    uri = settings.auth_jwks_uri
    if uri.startswith(("https://", "http://")):
        return DEFAULT_DIRECTORY
    return Path(uri).parent


def readable(settings: Settings, principal: DemoPrincipal, at: datetime | None = None) -> str:
    """The subscriptions ``principal`` may read, per route, as the fleet lists them now, by
    the API's own rule (``reads_on_tenant_route``: a deleted subscription is not readable on
    the tenant route; the provider route lists every direct tenant, deleted ones included);
    ``at`` is the moment of the listing (now by default).

    Operator-granted readers live in storage and are not shown (``subscriptions list``).
    """
    if settings.auth_admin_role in principal.app_roles:
        return "every subscription, on both routes (admin app role)"
    listed = fleet_of(settings).subscriptions(last_closed_hour(at or utc_now()))
    owned = sorted(
        s.subscription_id.lower() for s in listed if reads_on_tenant_route(principal.object_id, s)
    )
    parts = [f"tenant route: {', '.join(owned) or 'none'}"]
    if principal.role in ("provider", "delegated"):
        provider = principal.subscription_id.lower()
        tenants = sorted(
            s.subscription_id.lower()
            for s in listed
            if (s.provider_subscription_id or "").lower() == provider
        )
        parts.append(
            f"provider route on {provider}: {len(tenants)} direct tenants "
            f"({', '.join(tenants) or 'none'})"
        )
    return "; ".join(parts)
