"""The portal's local "sign in as" endpoint: demo tokens for the simulated fleet's principals.

Local only: it lives in the local stack (never deployed), the settings refuse
``PORTAL_LOCAL_SIGN_IN_URL`` outside local mode, and :class:`LocalSignIn` refuses to be
built from production settings. The local host serves it beside the functions
(``LocalFunctionsHost(local_routes=...)``), on the portal's own origin, so the page needs no
other origin in its Content-Security-Policy:

- ``GET  {path}/principals``: who one may sign in as: the service admin, the default
  provider, each delegated provider and the first few tenants, each with the subscriptions
  the portal should open for them (a tenant's own; a provider's provider subscription; for
  the admin, every provider subscription). These are where the portal starts, not what it
  may read: the API decides that from the token, as for any caller;
- ``POST {path}/token`` with ``{"principal": "<key>"}``: a fresh one-hour token for that
  principal from the local issuer (``devstack.demo_tokens``), in the response body only.

Tokens never appear in a URL or a log line (the host logs the method and path only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import azure.functions as func

from devstack.demo_tokens import DemoPrincipal, demo_principal, fleet_of
from devstack.host import LocalHttpRoute
from devstack.tokens import LocalIssuer
from shared.core.config import AppMode, Settings
from shared.core.errors import ConfigurationError
from shared.core.hours import last_closed_hour, utc_now
from shared.storage.subscriptions import SubscriptionState

DEFAULT_PATH: Final = "/local-sign-in"
TENANTS_LISTED: Final = 4


@dataclass(frozen=True)
class SignInChoice:
    """One principal of the sign-in page."""

    key: str
    principal: DemoPrincipal
    subscriptions: tuple[dict[str, str], ...]  # {"id", "route", "name"}

    def document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "role": self.principal.role,
            "label": self.principal.description,
            "admin": bool(self.principal.app_roles),
            "subscriptions": list(self.subscriptions),
        }


class LocalSignIn:
    """The endpoint's two answers, for one fleet and one local issuer."""

    def __init__(
        self,
        settings: Settings,
        issuer: LocalIssuer,
        *,
        at: datetime | None = None,
        tenants: int = TENANTS_LISTED,
    ) -> None:
        if settings.app_mode is not AppMode.LOCAL:
            raise ConfigurationError("the local sign-in endpoint is for local mode only")
        self._issuer = issuer
        self._choices = {choice.key: choice for choice in _choices(settings, at, tenants)}

    @property
    def choices(self) -> list[SignInChoice]:
        return list(self._choices.values())

    def route(self, path: str = DEFAULT_PATH) -> LocalHttpRoute:
        """This endpoint as a local host route under ``path``."""
        return LocalHttpRoute(
            name="local_sign_in",
            route=f"{path.strip('/')}/{{*action}}",
            methods=frozenset({"GET", "POST"}),
            handler=self.handle,
        )

    def handle(self, req: func.HttpRequest) -> func.HttpResponse:
        action = (req.route_params.get("action") or "").strip("/")
        if action == "principals" and req.method.upper() == "GET":
            return _json(200, {"principals": [c.document() for c in self._choices.values()]})
        if action == "token" and req.method.upper() == "POST":
            try:
                key = json.loads(req.get_body() or b"{}").get("principal")
            except (ValueError, AttributeError):
                key = None
            choice = self._choices.get(key) if isinstance(key, str) else None
            if choice is None:
                return _json(400, {"error": "unknown principal"})
            principal = choice.principal
            token = self._issuer.mint(principal.object_id, roles=principal.app_roles)
            return _json(200, {"accessToken": token, "principal": choice.document()})
        return _json(404, {"error": "not found"})


def sign_in_route(values: Mapping[str, str]) -> LocalHttpRoute | None:
    """The endpoint for app settings ``values``, or None if they name no local sign-in.

    The issuer is the one whose JWKS the API reads (``AUTH_JWKS_URI``, a file locally).
    """
    path = values.get("PORTAL_LOCAL_SIGN_IN_URL")
    if not path:
        return None
    settings = Settings.from_environ(values)
    issuer = LocalIssuer(Path(settings.auth_jwks_uri).parent)
    return LocalSignIn(settings, issuer).route(path)


def _json(status: int, document: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(document),
        status_code=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _choices(settings: Settings, at: datetime | None, tenants: int) -> list[SignInChoice]:
    fleet = fleet_of(settings)
    hour = last_closed_hour(at or utc_now())
    listed = fleet.subscriptions(hour)
    providers = [fleet.default_provider, *fleet.delegated_providers]

    def provider_entry(subscription_id: str, name: str) -> dict[str, str]:
        return {"id": subscription_id.lower(), "route": "provider", "name": name}

    admin = demo_principal(settings, "admin", at=at)
    choices = [
        SignInChoice(
            "admin",
            admin,
            tuple(provider_entry(p.subscription_id, p.display_name) for p in providers),
        )
    ]

    def make(role: str, index: int = 0) -> DemoPrincipal:
        return demo_principal(settings, role, index, at)

    provider = make("provider")
    choices.append(
        SignInChoice(
            "provider",
            provider,
            (provider_entry(provider.subscription_id, provider.description),),
        )
    )
    for index in range(len(fleet.delegated_providers)):
        delegated = make("delegated", index)
        choices.append(
            SignInChoice(
                f"delegated-{index}",
                delegated,
                (provider_entry(delegated.subscription_id, delegated.description),),
            )
        )
    for index in range(tenants):
        try:
            tenant = make("tenant", index)
        except ValueError:  # fewer active tenant subscriptions than asked for
            break
        owned = sorted(
            (
                s
                for s in listed
                if not s.is_provider
                and s.state is not SubscriptionState.DELETED
                and tenant.object_id in s.owners
            ),
            key=lambda s: s.subscription_id,
        )
        choices.append(
            SignInChoice(
                f"tenant-{index}",
                tenant,
                tuple(
                    {"id": s.subscription_id.lower(), "route": "tenant", "name": s.display_name}
                    for s in owned
                ),
            )
        )
    return choices
