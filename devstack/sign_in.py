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

It mints admin tokens, so what it accepts is narrow: ``POST token`` must be
``Content-Type: application/json`` (a page on another origin can send ``text/plain`` without
asking, but not JSON without a CORS preflight, which this endpoint never grants), its body at
most :data:`MAX_BODY_BYTES` and nested at most :data:`MAX_DEPTH` deep (checked in one pass
before ``json.loads``, which recursed until Python's limit on ``[`` x 100,000: an empty 500).
Every answer is JSON with ``nosniff``, ``Cache-Control: no-store`` and a CSP that loads and
frames nothing; other verbs are 405 and other paths 404, in the API's error envelope.
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
MAX_BODY_BYTES: Final = 1024
MAX_DEPTH: Final = 2  # {"principal": "..."} is one level; nothing legitimate needs more
ANSWER_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
_ALLOWED = {"principals": "GET", "token": "POST"}


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
            methods=frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}),
            handler=self.handle,
        )

    def handle(self, req: func.HttpRequest) -> func.HttpResponse:
        action = (req.route_params.get("action") or "").strip("/")
        allowed = _ALLOWED.get(action)
        if allowed is None:
            return _error(404, "NotFound", "the local sign-in has no such endpoint")
        if req.method.upper() != allowed:
            return _error(405, "MethodNotAllowed", f"only {allowed} is supported", allowed)
        if action == "principals":
            return _json(200, {"principals": [c.document() for c in self._choices.values()]})
        media_type = (req.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return _error(415, "UnsupportedMediaType", "the body must be application/json")
        body = req.get_body() or b""
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "RequestEntityTooLarge", f"the body is over {MAX_BODY_BYTES} bytes")
        choice = self._choices.get(_principal_key(body))
        if choice is None:
            return _error(400, "UnknownPrincipal", "unknown principal")
        principal = choice.principal
        token = self._issuer.mint(principal.object_id, roles=principal.app_roles)
        return _json(200, {"accessToken": token, "principal": choice.document()})


def _principal_key(body: bytes) -> str:
    """The ``principal`` of a ``{"principal": "<key>"}`` body, or "" for anything else
    (not JSON, not an object, nested deeper than ``MAX_DEPTH``)."""
    if _depth(body) > MAX_DEPTH:
        return ""
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return ""
    key = document.get("principal") if isinstance(document, dict) else None
    return key if isinstance(key, str) else ""


def _depth(body: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, outside strings (one pass)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


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


def _json(
    status: int, document: dict[str, Any], headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(document),
        status_code=status,
        mimetype="application/json",
        headers={**ANSWER_HEADERS, **(headers or {})},
    )


def _error(status: int, code: str, message: str, allow: str | None = None) -> func.HttpResponse:
    """The API's error envelope (code repeated in ``x-ms-error-code``); fixed text only."""
    headers = {"x-ms-error-code": code, **({"Allow": allow} if allow else {})}
    return _json(status, {"error": {"code": code, "message": message}}, headers)


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
