"""A local token issuer: the same validation code as production, with a key made here.

Local mode only (``devstack`` is not deployed). ``LocalIssuer`` keeps a 2048-bit RSA signing
key (PEM, mode 0600) and the matching ``jwks.json`` in a directory (the run command uses
``.local/auth/``), creating both on first use. The API in local mode validates with
``shared.query.auth.TokenValidator`` + ``FileJwksSource(issuer.jwks_path)`` and the
``ISSUER``/``AUDIENCE`` below, so every check that runs in production runs here too.

Mint a token from the shell::

    python -m devstack.tokens --dir .local/auth --object-id <uuid> [--role UsageAdmin]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, NoReturn

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.core.errors import ConfigurationError
from shared.core.hours import as_utc, utc_now

# A fixed, made-up tenant: the local issuer's tokens are recognisably not Entra's.
LOCAL_TENANT_ID: Final = "00000000-0000-4000-8000-00000000a11c"
ISSUER: Final = f"https://login.local.usage-reporter/{LOCAL_TENANT_ID}/v2.0"
AUDIENCE: Final = "api://usage-reporter-local"
ALGORITHM: Final = "RS256"
KEY_BITS: Final = 2048
KEY_FILE: Final = "signing-key.pem"
JWKS_FILE: Final = "jwks.json"
DEFAULT_DIRECTORY: Final = Path(".local/auth")


def jwk_thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of an RSA JWK (base64url, unpadded): a stable kid."""
    canonical = json.dumps(
        {"e": public_jwk["e"], "kty": "RSA", "n": public_jwk["n"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class LocalIssuer:
    """Signs tokens with a key kept in ``directory``; publishes it as ``jwks.json``."""

    issuer: Final = ISSUER
    audience: Final = AUDIENCE
    tenant_id: Final = LOCAL_TENANT_ID

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._private_key: rsa.RSAPrivateKey | None = None
        self._kid = ""

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def jwks_path(self) -> Path:
        """The JWKS file a ``FileJwksSource`` reads; created (with the key) if absent."""
        self._ensure_key()
        return self.directory / JWKS_FILE

    @property
    def kid(self) -> str:
        self._ensure_key()
        return self._kid

    def mint(
        self,
        object_id: str,
        *,
        roles: Iterable[str] = (),
        tenant_id: str | None = None,
        lifetime: timedelta = timedelta(hours=1),
        now: datetime | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """An RS256 access token for ``object_id``, shaped like an Entra v2 token.

        ``tenant_id`` defaults to the local tenant (Entra always sends ``tid``). ``roles`` is
        omitted when empty, as Entra does. ``extra_claims`` are applied last and override the
        standard claims; a value of ``None`` removes that claim, so tests can mint tokens
        that lack one.
        """
        if not object_id:
            raise ValueError("object_id must not be empty")
        if lifetime <= timedelta(0):
            raise ValueError("lifetime must be positive")
        key = self._ensure_key()
        issued = as_utc(now if now is not None else utc_now())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": object_id,
            "oid": object_id,
            "tid": tenant_id or LOCAL_TENANT_ID,
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int((issued + lifetime).timestamp()),
            "ver": "2.0",
        }
        role_list = sorted(set(roles))
        if role_list:
            claims["roles"] = role_list
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(
            claims, key, algorithm=ALGORITHM, headers={"kid": self._kid, "typ": "JWT"}
        )

    def _ensure_key(self) -> rsa.RSAPrivateKey:
        if self._private_key is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.key_path.exists():
                _create_exclusively(self.key_path, _new_private_key_pem())
            self._private_key = _load_private_key(self.key_path)
            public_jwk = RSAAlgorithm.to_jwk(self._private_key.public_key(), as_dict=True)
            self._kid = jwk_thumbprint(public_jwk)
            jwks = {
                "keys": [
                    {
                        "kty": "RSA",
                        "use": "sig",
                        "alg": ALGORITHM,
                        "kid": self._kid,
                        "n": public_jwk["n"],
                        "e": public_jwk["e"],
                    }
                ]
            }
            _write_if_changed(self.directory / JWKS_FILE, json.dumps(jwks, indent=2) + "\n")
        return self._private_key


def _new_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_exclusively(path: Path, content: bytes) -> None:
    """Write ``path`` (mode 0600) only if absent, never exposing a half-written file.

    The content goes to a private temp file that is then hard-linked into place; the link
    fails if another process (say the API and the CLI starting together) won the race, and
    then its key is the one used.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _load_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigurationError(
            f"local signing key {path} is unreadable ({error}); delete it to make a new one"
        ) from error
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < KEY_BITS:
        raise ConfigurationError(
            f"local signing key {path} is not a {KEY_BITS}-bit RSA key; delete it to make a new one"
        )
    return key


def _write_if_changed(path: Path, text: str) -> None:
    """Replace ``path`` atomically, and only if different (readers reload on mtime)."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text(encoding="utf-8") == text:
            return
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)


# --- CLI -------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _uuid_text(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {value!r}") from None


def _positive_minutes(value: str) -> timedelta:
    try:
        minutes = int(value)
    except ValueError:
        minutes = 0
    if minutes <= 0:
        raise argparse.ArgumentTypeError(f"not a positive whole number of minutes: {value!r}")
    return timedelta(minutes=minutes)


def _role(value: str) -> str:
    if not value or value != value.strip() or "," in value:
        raise argparse.ArgumentTypeError(f"not a role name: {value!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Print one freshly minted local token; 0 on success, 1 on failure, 2 on bad input."""
    parser = _OneLineParser(
        prog="python -m devstack.tokens",
        description="Mint a bearer token from the local issuer (local mode only).",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIRECTORY, help="key directory")
    parser.add_argument("--object-id", type=_uuid_text, required=True, help="caller's oid")
    parser.add_argument("--tenant-id", type=_uuid_text, help="tid (default: local tenant)")
    parser.add_argument(
        "--role", type=_role, action="append", default=[], help="app role (repeatable)"
    )
    parser.add_argument(
        "--lifetime-minutes", type=_positive_minutes, default=timedelta(hours=1), dest="lifetime"
    )
    args = parser.parse_args(argv)
    try:
        token = LocalIssuer(args.dir).mint(
            args.object_id, roles=args.role, tenant_id=args.tenant_id, lifetime=args.lifetime
        )
    except (OSError, ConfigurationError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
