"""Bearer tokens for the commerce (Marketplace metering) endpoint.

Production: Entra ID tokens for the metering scope from a managed identity or a service
principal, cached until shortly before they expire (one provider per app, so the cache is
shared by every invocation). Local: the commerce emulator's fixed token, which the settings
refuse outside local mode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from shared.core.config import Settings
from shared.core.errors import ConfigurationError

# The Marketplace metering resource (a public, well-known application id, not a secret).
METERING_SCOPE = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7/.default"
# Refresh a cached token this long before it expires, so no request carries a dying one.
TOKEN_REFRESH_MARGIN_SECONDS = 300.0


@runtime_checkable
class RefreshableTokenProvider(Protocol):
    """A token provider that can drop its cached token (the client calls it after a 403)."""

    def __call__(self) -> str: ...

    def invalidate(self) -> None: ...


TokenProvider = Callable[[], str]


def static_token_provider(token: str) -> TokenProvider:
    """A fixed token: the local emulator's."""

    def provide() -> str:
        return token

    return provide


class _CachedCredentialToken:
    """Caches an azure-identity token until shortly before it expires; thread-safe."""

    def __init__(
        self,
        credential: Any,
        *,
        margin_seconds: float = TOKEN_REFRESH_MARGIN_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._margin = margin_seconds
        self._now = now
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_on = 0.0

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or self._now() >= self._expires_on - self._margin:
                access = self._credential.get_token(METERING_SCOPE)
                self._token = str(access.token)
                self._expires_on = float(access.expires_on)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({type(self._credential).__name__})"


def identity_token_provider(
    *,
    client_id: str | None = None,
    tenant_id: str | None = None,
    client_secret: str | None = None,
) -> TokenProvider:
    """Entra ID tokens for the metering scope, cached until 5 minutes before expiry.

    No secret: ``ManagedIdentityCredential`` (``client_id`` picks a user-assigned identity).
    With a secret: ``ClientSecretCredential``, which also needs ``tenant_id`` and
    ``client_id``. azure.identity is imported here so the emulator path never loads it.
    """
    from azure.identity import ClientSecretCredential, ManagedIdentityCredential

    credential: Any
    if client_secret:
        if not (tenant_id and client_id):
            raise ConfigurationError(
                "a commerce client secret needs both tenant_id and client_id",
                target="commerce",
            )
        credential = ClientSecretCredential(tenant_id, client_id, client_secret)
    elif client_id:
        credential = ManagedIdentityCredential(client_id=client_id)
    else:
        credential = ManagedIdentityCredential()
    return _CachedCredentialToken(credential)


def token_provider_for(settings: Settings) -> TokenProvider:
    """The token provider the settings describe; build it once per app and keep it, so its
    cached token is reused by every invocation."""
    if settings.commerce_auth == "static":
        static = settings.commerce_static_token
        assert static is not None  # Settings refuses static auth without a token
        return static_token_provider(static.get_secret_value())
    secret = settings.commerce_client_secret
    if settings.commerce_auth == "client_secret":
        assert secret is not None  # Settings refuses client_secret auth without a secret
        return identity_token_provider(
            client_id=settings.commerce_client_id,
            tenant_id=settings.commerce_tenant_id,
            client_secret=secret.get_secret_value(),
        )
    return identity_token_provider(client_id=settings.commerce_client_id)
