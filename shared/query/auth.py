"""Bearer-token validation: who is calling, proved by a signature we chose to trust.

Every request to the usage API carries ``Authorization: Bearer <JWT>`` issued by Entra ID
(or, locally, by ``devstack.tokens.LocalIssuer``). :class:`TokenValidator` turns that header
into a :class:`Caller` or refuses with ``NotAllowedError(code="InvalidAuthenticationToken")``,
which the HTTP edge answers as 401 with ``WWW-Authenticate: Bearer``. What is checked, in
order, and why:

1. **Shape and size before parsing.** The header must be ``Bearer <compact JWS>`` (scheme
   case-insensitive). Tokens over 16 KiB are refused before any base64 or JSON work, so a
   hostile header costs us a length check, not a parse.
2. **Pinned algorithms, checked on the unverified header before a key is chosen.** The
   token's ``alg`` must be one of the configured RSA algorithms (default ``RS256``). ``none``
   and every ``HS*`` are refused, and the validator cannot even be configured to allow them.
   This defeats the *key-confusion attack*: a verifier that lets the token pick the algorithm
   can be handed an ``HS256`` token whose HMAC secret is the IdP's *public* key (which anyone
   can download), and will "verify" it. PyJWT is also given the pinned list, never the
   token's own ``alg``.
3. **The key comes only from our configured JWKS**, looked up by the header's ``kid``. The
   ``jku``, ``x5u``, ``jwk`` and ``x5c`` header parameters are ignored: a key named or
   embedded by the token is a key chosen by whoever wrote the token. Only RSA keys whose
   ``use`` is ``sig`` (or absent) are taken from the JWKS, and only their public part.
4. **Signature, then claims.** ``exp``, ``iat``, ``nbf``, ``iss``, ``aud`` and ``oid`` are
   required; the issuer must be exactly one of the configured ones (Entra ID v1 tokens say
   ``https://sts.windows.net/{tid}/``, v2 tokens ``https://login.microsoftonline.com/{tid}/v2.0``);
   audience must be one of the configured values (Entra spells it as the app id URI or the
   client id depending on token version); time claims are checked against an injectable
   clock with a small leeway for clock skew.

An unknown ``kid`` may mean the IdP rotated its keys, so the JWKS is refetched, but at most
once per ``min_refresh_interval_seconds``: otherwise anyone could make us hammer the IdP by
sending made-up kids. A JWKS endpoint that cannot be reached is a ``TransientError`` (503),
not a 401: the caller's token may be fine; we just cannot tell yet.

Refusal messages are short and fixed; they never echo token content (which may be a live
credential and ends up in logs and response bodies).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from shared.core.errors import ConfigurationError, NotAllowedError, TransientError
from shared.core.hours import as_utc, utc_now

logger = logging.getLogger(__name__)

INVALID_TOKEN_CODE: Final = "InvalidAuthenticationToken"  # noqa: S105 - an error code, not a secret
DEFAULT_ADMIN_ROLE: Final = "UsageAdmin"
MAX_TOKEN_CHARS: Final = 16 * 1024
REQUIRED_CLAIMS: Final = ("exp", "iat", "nbf", "iss", "aud", "oid")
# The only algorithms a validator may be configured with: signatures checked with an RSA
# public key. HS* (shared secret) and none are deliberately absent.
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})

_MAX_KID_CHARS = 256
# "Bearer", whitespace, and the token: anything longer is refused before it is split.
_MAX_HEADER_CHARS = MAX_TOKEN_CHARS + 64
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Caller:
    """The authenticated principal, resolved once per request and passed down."""

    object_id: str
    tenant_id: str | None
    roles: frozenset[str]
    is_admin: bool


def _refuse(reason: str) -> NotAllowedError:
    return NotAllowedError(reason, code=INVALID_TOKEN_CODE)


# --- key sources -----------------------------------------------------------------------


class JwksSource(Protocol):
    """Where signing keys come from. Never the token itself."""

    def key_for(self, kid: str) -> RSAPublicKey | None:
        """The RSA public key named ``kid``, or None if the key set has no such key.

        Raises ``TransientError`` when the key set cannot be obtained at all.
        """
        ...


def parse_jwks(document: object) -> dict[str, RSAPublicKey]:
    """The usable signing keys of a JWKS document, by kid.

    Only RSA keys meant for signatures (``use`` "sig" or absent) with a string kid are kept,
    and only their public numbers (``n``, ``e``) are read, so a JWKS that wrongly carries
    private material or an odd ``alg`` cannot change how we verify.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, RSAPublicKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        public_part = {"kty": "RSA", "kid": kid, "n": entry.get("n"), "e": entry.get("e")}
        try:
            key = jwt.PyJWK(public_part, algorithm="RS256").key
        except (jwt.PyJWTError, TypeError, ValueError):
            logger.warning("JWKS key %s is not a usable RSA key; skipped", kid[:_MAX_KID_CHARS])
            continue
        if isinstance(key, RSAPublicKey):
            keys[kid] = key
    if not keys:
        raise ValueError("JWKS has no usable RSA signing keys")
    return keys


class HttpJwksSource:
    """A JWKS fetched over HTTPS (the IdP's ``jwks_uri``), cached for ``ttl_seconds``.

    Refetch rules:

    * the cache is older than ``ttl_seconds`` -> refetch before use; if that fails, the last
      keys are kept for up to one more TTL (Entra overlaps rotations by weeks, and a blip at
      the IdP should not take the API down), then the failure surfaces as ``TransientError``;
    * a token names a kid we do not have -> one refetch (the IdP may have rotated), but
      network attempts of any kind happen at most once per ``min_refresh_interval_seconds``,
      so a flood of made-up kids costs the IdP one request per interval.

    ``monotonic`` is injectable so tests can move time without sleeping. Thread-safe: the
    Functions worker may validate on several threads, and the lock also stops a stampede of
    concurrent refetches.
    """

    def __init__(
        self,
        uri: str,
        *,
        session: requests.Session | None = None,
        ttl_seconds: float = 3600,
        min_refresh_interval_seconds: float = 60,
        timeout: float = 5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not uri.startswith(("https://", "http://")):
            raise ConfigurationError(f"JWKS URI must be an http(s) URL, got {uri!r}")
        if min_refresh_interval_seconds < 0 or ttl_seconds < min_refresh_interval_seconds:
            raise ConfigurationError(
                "JWKS cache needs 0 <= min_refresh_interval_seconds <= ttl_seconds"
            )
        if timeout <= 0:
            raise ConfigurationError("JWKS fetch timeout must be positive")
        self._uri = uri
        self._session = session or requests.Session()
        self._ttl = ttl_seconds
        self._min_interval = min_refresh_interval_seconds
        self._timeout = timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, RSAPublicKey] | None = None
        self._fetched_at = 0.0
        self._last_attempt_at: float | None = None
        self._last_attempt_failed = False

    def key_for(self, kid: str) -> RSAPublicKey | None:
        with self._lock:
            now = self._monotonic()
            if self._keys is None or now - self._fetched_at >= self._ttl:
                try:
                    self._refresh(now)
                except TransientError:
                    if self._keys is None or now - self._fetched_at >= 2 * self._ttl:
                        raise
                    logger.warning("JWKS refresh from %s failed; using last known keys", self._uri)
            assert self._keys is not None  # _refresh either filled the cache or raised
            key = self._keys.get(kid)
            if key is None and self._refresh(now):
                key = self._keys.get(kid)
            return key

    def _refresh(self, now: float) -> bool:
        """Fetch the key set unless one was attempted within the interval.

        True if new keys were loaded, False if skipped because the last attempt (which
        succeeded) was too recent; raises ``TransientError`` if the fetch fails, or if it is
        skipped while the last attempt had failed (the IdP is down as far as we know).
        """
        if self._last_attempt_at is not None:
            since = now - self._last_attempt_at
            if since < self._min_interval:
                if self._last_attempt_failed:
                    raise TransientError(
                        "signing keys are unavailable",
                        retry_after_seconds=max(1.0, self._min_interval - since),
                    )
                return False
        self._last_attempt_at = now
        self._last_attempt_failed = True
        try:
            response = self._session.get(self._uri, timeout=self._timeout)
            response.raise_for_status()
            keys = parse_jwks(response.json())
        except (requests.RequestException, ValueError) as error:
            # requests' JSONDecodeError is a ValueError too.
            logger.warning("JWKS fetch from %s failed: %s", self._uri, error)
            raise TransientError("signing keys are unavailable") from error
        self._keys = keys
        self._fetched_at = now
        self._last_attempt_failed = False
        return True


class FileJwksSource:
    """A JWKS file on disk (local mode), re-read whenever its mtime or size changes.

    Stat-ing a local file per request is cheap, so there is no TTL: a key minted by
    ``python -m devstack.tokens`` after the API started is picked up on the next request.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, RSAPublicKey] = {}

    def key_for(self, kid: str) -> RSAPublicKey | None:
        with self._lock:
            try:
                stat = self._path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if stamp != self._stamp:
                    self._keys = parse_jwks(json.loads(self._path.read_text(encoding="utf-8")))
                    self._stamp = stamp
            except (OSError, ValueError) as error:
                logger.warning("JWKS file %s unusable: %s", self._path, error)
                raise TransientError("signing keys are unavailable") from error
            return self._keys.get(kid)


# --- validation ------------------------------------------------------------------------


class TokenValidator:
    """Validates ``Authorization`` headers into :class:`Caller` (see the module docstring).

    There is deliberately no switch to turn any check off: local mode differs only in the
    issuer, audience and key source it is given.
    """

    def __init__(
        self,
        *,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        jwks: JwksSource,
        admin_role: str = DEFAULT_ADMIN_ROLE,
        algorithms: tuple[str, ...] = ("RS256",),
        leeway_seconds: int = 60,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        issuers = (issuer,) if isinstance(issuer, str) else tuple(issuer)
        if not issuers or not all(isinstance(iss, str) and iss for iss in issuers):
            raise ConfigurationError("token issuer must be one or more non-empty strings")
        if not audiences or not all(isinstance(aud, str) and aud for aud in audiences):
            raise ConfigurationError("token audience must be one or more non-empty strings")
        if not algorithms or not set(algorithms) <= RSA_ALGORITHMS:
            raise ConfigurationError(
                f"token algorithms must be drawn from {sorted(RSA_ALGORITHMS)}, got {algorithms}"
            )
        if leeway_seconds < 0:
            raise ConfigurationError("token leeway must not be negative")
        if not admin_role:
            raise ConfigurationError("admin role must be set")
        self._issuers = issuers
        self._audiences = audiences
        self._jwks = jwks
        self._admin_role = admin_role
        self._algorithms = tuple(algorithms)
        self._leeway = leeway_seconds
        self._clock = clock or utc_now

    def validate(self, authorization_header: str | None) -> Caller:
        """The caller proved by ``authorization_header``; raises ``NotAllowedError`` (401).

        Raises ``TransientError`` if the signing keys cannot be obtained.
        """
        token = self._extract_token(authorization_header)
        kid = self._pinned_kid(token)
        key = self._jwks.key_for(kid)
        if key is None:
            raise _refuse("token signing key is not recognised")
        claims = self._verified_claims(token, key)
        self._check_times(claims)
        return self._caller(claims)

    @staticmethod
    def _extract_token(header: str | None) -> str:
        if header is None or not isinstance(header, str) or not header.strip():
            raise _refuse("bearer token is missing")
        if len(header) > _MAX_HEADER_CHARS:
            raise _refuse("bearer token is too large")
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise _refuse("authorization header must be 'Bearer <token>'")
        token = parts[1]
        if len(token) > MAX_TOKEN_CHARS:
            raise _refuse("bearer token is too large")
        if not _COMPACT_JWS.fullmatch(token):
            raise _refuse("bearer token is malformed")
        return token

    def _pinned_kid(self, token: str) -> str:
        """The header's kid, once its alg is known to be pinned; before any key is chosen."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refuse("bearer token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _refuse("token algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
            raise _refuse("token has no usable key id")
        return kid

    def _verified_claims(self, token: str, key: RSAPublicKey) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(self._algorithms),
                audience=list(self._audiences),
                issuer=self._issuers,
                options={
                    "verify_signature": True,
                    "verify_iss": True,
                    "verify_aud": True,
                    "require": list(REQUIRED_CLAIMS),
                    # Times are checked in _check_times against the injected clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise _refuse("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            # error.claim is one of REQUIRED_CLAIMS (our names, not token content).
            raise _refuse(f"token lacks required claim '{error.claim}'") from None
        except jwt.InvalidIssuerError:
            raise _refuse("token issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise _refuse("token audience is not accepted") from None
        except jwt.PyJWTError:
            raise _refuse("bearer token is malformed") from None

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = as_utc(self._clock()).timestamp()
        exp, nbf, iat = (_numeric_date(claims, name) for name in ("exp", "nbf", "iat"))
        if exp <= now - self._leeway:
            raise _refuse("token has expired")
        if nbf > now + self._leeway:
            raise _refuse("token is not yet valid")
        if iat > now + self._leeway:
            raise _refuse("token was issued in the future")

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        object_id, tenant_id, roles = claims.get("oid"), claims.get("tid"), claims.get("roles")
        if not isinstance(object_id, str) or not object_id:
            raise _refuse("token claim 'oid' is malformed")
        if tenant_id is not None and not isinstance(tenant_id, str):
            raise _refuse("token claim 'tid' is malformed")
        if roles is None:
            roles = []
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise _refuse("token claim 'roles' is malformed")
        role_set = frozenset(roles)
        return Caller(
            object_id=object_id,
            tenant_id=tenant_id or None,
            roles=role_set,
            is_admin=self._admin_role in role_set,
        )


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    """A NumericDate claim (seconds since the epoch); bools, strings, NaN and inf are refused."""
    value = claims.get(name)
    # json.loads accepts Infinity and NaN, which would make a token valid forever.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(f"token claim '{name}' is malformed")
    return float(value)
