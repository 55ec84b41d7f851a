"""Serving the portal: its static files and its sign-in configuration, safely.

``portal/__init__.py`` turns the Functions request into a :class:`PortalRequest` and calls
:meth:`PortalSite.answer`; nothing here knows the Functions SDK, and nothing raises out of it.

What it guarantees, and how:

- **Only the portal's own files.** The files under ``static/`` are read once, when the site
  is built, into a table keyed by their relative path; a request is a lookup in that table.
  A path that is not a key (``..``, ``%2e%2e``, a backslash, an absolute path, a hidden or
  unknown file) is simply not found: there is no path joining to get wrong.
- **A strict Content-Security-Policy on every answer**: scripts, styles, images and fetches
  from this origin only, no inline script or style, no framing. With Entra ID sign-in the
  authority's origin is added for MSAL.js's token requests (``connect-src``) and silent
  renewal (``frame-src``), and nowhere else; the chart and sign-in libraries are files of
  this app (``static/vendor``, copied from npm by ``./dev setup``), never a CDN.
- **Revalidated caching.** Every file carries a strong ETag (its SHA-256) and
  ``Cache-Control: no-cache``: browsers keep a copy and ask ``If-None-Match``, answered 304,
  so a new deployment is seen on the next load without version-stamped file names.
- **Configuration, not data.** ``config.json`` tells the page how to sign in (local demo
  sign-in, Entra ID, or not configured) and which scope to ask for. Usage and charges are
  never served here: the page calls the API itself, with the caller's token.
- **Nothing else.** Every answer that is not a file (404, 405, the redirect) is a small JSON
  document with the same headers, and the redirect from ``/portal`` to ``/portal/`` is
  built from ``PUBLIC_BASE_URL``, never from the request (whose ``Host`` the caller writes:
  ``Host: x/\\evil.example`` once made it ``Location: /\\evil.example/portal/``, which
  browsers follow to another origin).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from shared.core.config import Settings

log = logging.getLogger(__name__)

STATIC_ROOT: Final = Path(__file__).with_name("static")
CONFIG_FILE: Final = "config.json"
INDEX_FILE: Final = "index.html"
# The only kinds of file the portal serves; anything else under static/ is ignored.
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
ALLOWED_METHODS: Final = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class PortalRequest:
    """What the portal needs of a request; header names are matched case-insensitively."""

    method: str
    url: str
    path: str  # the route's catch-all after /portal/, decoded ("" for the page itself)
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class PortalAnswer:
    """A response, independent of the Functions SDK (the entry point wraps it)."""

    status: int
    body: bytes
    mimetype: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


class PortalSite:
    """The portal's files and headers, built once per process from the settings."""

    def __init__(
        self,
        assets: Mapping[str, Asset],
        security_headers: Mapping[str, str],
        page_url: str = "/portal/",
    ) -> None:
        self._assets = dict(assets)
        self._security_headers = dict(security_headers)
        self._page_url = page_url

    @classmethod
    def from_settings(cls, settings: Settings, root: Path = STATIC_ROOT) -> PortalSite:
        assets = load_assets(root)
        config = portal_config(settings)
        text = json.dumps(config, separators=(",", ":")).encode("utf-8")
        assets[CONFIG_FILE] = Asset.of(text, CONTENT_TYPES[".json"])
        return cls(assets, security_headers(config), f"{settings.api_base_url}/portal/")

    def answer(self, request: PortalRequest) -> PortalAnswer:
        """The answer to ``request``; never raises."""
        if request.method.upper() not in ALLOWED_METHODS:
            allow = {"Allow": ", ".join(ALLOWED_METHODS)}
            return self._error(405, "MethodNotAllowed", "only GET and HEAD are supported", allow)
        name = request.path
        if name in ("", "/"):
            if not urlsplit(request.url).path.endswith("/"):
                # /portal -> /portal/, so the page's relative links resolve under /portal/.
                return self._json(308, {"location": self._page_url}, {"Location": self._page_url})
            name = INDEX_FILE
        asset = self._assets.get(name)
        if asset is None:
            return self._error(404, "NotFound", "the portal has no such file")
        headers = {
            **self._security_headers,
            "Cache-Control": "no-cache",
            "ETag": asset.etag,
        }
        if _matches(request.header("If-None-Match"), asset.etag):
            return PortalAnswer(304, b"", asset.content_type, headers)
        body = b"" if request.method.upper() == "HEAD" else asset.body
        return PortalAnswer(200, body, asset.content_type, headers)

    def _error(
        self, status: int, code: str, message: str, extra: Mapping[str, str] | None = None
    ) -> PortalAnswer:
        """An ARM-shaped error, as the API answers (code repeated in ``x-ms-error-code``)."""
        document = {"error": {"code": code, "message": message}}
        return self._json(status, document, {"x-ms-error-code": code, **(extra or {})})

    def _json(
        self, status: int, document: Mapping[str, object], extra: Mapping[str, str]
    ) -> PortalAnswer:
        headers = {**self._security_headers, "Cache-Control": "no-store", **extra}
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        return PortalAnswer(status, body, CONTENT_TYPES[".json"], headers)


def load_assets(root: Path) -> dict[str, Asset]:
    """Every servable file under ``root`` by its relative path (``vendor/chart.umd.min.js``).

    Hidden files and folders, symbolic links and unknown kinds of file are left out, so what
    can be served is exactly what this table lists.
    """
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (
            path.is_symlink()
            or not path.is_file()
            or any(part.startswith(".") for part in relative.parts)
            or path.suffix not in CONTENT_TYPES
        ):
            continue
        assets[relative.as_posix()] = Asset.of(path.read_bytes(), CONTENT_TYPES[path.suffix])
    for library in ("vendor/chart.umd.min.js", "vendor/msal-browser.min.js"):
        if library not in assets:
            log.warning("portal: %s is missing (./dev assets copies it from npm)", library)
    return assets


def portal_config(settings: Settings) -> dict[str, object]:
    """How the page signs in: the local demo endpoint, Entra ID, or not configured.

    The scope asked of Entra ID is the API's own (``{first AUTH_AUDIENCE}/.default``), so the
    token the portal holds is exactly the token a script would send to the API.
    """
    if settings.portal_local_sign_in_url is not None:  # Settings refuse it in production
        return {"signIn": "local", "localSignInUrl": settings.portal_local_sign_in_url}
    if settings.portal_client_id is not None and settings.portal_authority is not None:
        return {
            "signIn": "entra",
            "clientId": settings.portal_client_id,
            "authority": settings.portal_authority.rstrip("/"),
            "scopes": [f"{settings.auth_audiences[0]}/.default"],
            "adminRole": settings.auth_admin_role,
        }
    return {"signIn": "none"}


def security_headers(config: Mapping[str, object]) -> dict[str, str]:
    """The headers every portal answer carries, for its sign-in ``config`` (module docstring)."""
    identity = ""
    if config["signIn"] == "entra":
        parts = urlsplit(str(config["authority"]))
        identity = f"{parts.scheme}://{parts.netloc}"
    frames = identity or "'none'"
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {identity}".rstrip(),
            f"frame-src {frames}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates
