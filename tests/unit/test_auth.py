"""Bearer-token validation against a LocalIssuer key: what is accepted, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devstack.tokens import AUDIENCE, ISSUER, LOCAL_TENANT_ID, LocalIssuer, main
from shared.core.errors import ConfigurationError, NotAllowedError, TransientError
from shared.query.auth import (
    MAX_TOKEN_CHARS,
    REQUIRED_CLAIMS,
    Caller,
    FileJwksSource,
    TokenValidator,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OID = "6f1c2b4e-5d1a-4c3b-9e8f-1a2b3c4d5e6f"
TENANT = "0b3c2d1e-aaaa-4bbb-8ccc-123456789abc"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    """One key for the module: 2048-bit RSA generation is the slow part."""
    return LocalIssuer(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def validator(issuer: LocalIssuer) -> TokenValidator:
    return TokenValidator(
        issuer=ISSUER,
        audience=(AUDIENCE, "11111111-2222-4333-8444-555555555555"),
        jwks=FileJwksSource(issuer.jwks_path),
        clock=lambda: NOW,
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def our_private_key(issuer: LocalIssuer) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(issuer.key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def sign_rs256(header: dict[str, Any], payload: dict[str, Any], key: Any) -> str:
    """A hand-built RS256 token, for headers PyJWT itself refuses to write."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims LocalIssuer.mint would produce at NOW, with overrides."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "oid": OID,
        "tid": LOCAL_TENANT_ID,
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(hours=1)).timestamp()),
    }
    base.update(overrides)
    return base


def assert_refused(validator: TokenValidator, header: str | None) -> NotAllowedError:
    """The header is refused as a 401 whose message leaks no part of the token."""
    with pytest.raises(NotAllowedError) as caught:
        validator.validate(header)
    error = caught.value
    assert error.code == "InvalidAuthenticationToken"
    assert len(error.message) < 80
    token = (header or "").split()[-1] if (header or "").split() else ""
    for piece in [token, *token.split(".")]:
        if len(piece) >= 8:
            assert piece not in error.message
            assert piece not in str(error)
    return error


# --- accepted ----------------------------------------------------------------------------


def test_good_token_validates_to_caller(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """A minted token yields its oid, tid and roles, and no admin flag without the role."""
    token = issuer.mint(OID, roles=["Reader"], tenant_id=TENANT, now=NOW)
    caller = validator.validate(f"Bearer {token}")
    assert caller == Caller(
        object_id=OID, tenant_id=TENANT, roles=frozenset({"Reader"}), is_admin=False
    )


def test_admin_role_makes_admin(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """The UsageAdmin app role sets is_admin; the scheme is case-insensitive."""
    token = issuer.mint(OID, roles=["UsageAdmin"], now=NOW)
    caller = validator.validate(f"bEaReR {token}")
    assert caller.is_admin
    assert caller.tenant_id == LOCAL_TENANT_ID


def test_configured_admin_role_is_used(issuer: LocalIssuer) -> None:
    """A different configured admin role is honoured, and the default no longer is."""
    validator = TokenValidator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=FileJwksSource(issuer.jwks_path),
        admin_role="Chargeback.Admin",
        clock=lambda: NOW,
    )
    assert validator.validate(
        f"Bearer {issuer.mint(OID, roles=['Chargeback.Admin'], now=NOW)}"
    ).is_admin
    assert not validator.validate(
        f"Bearer {issuer.mint(OID, roles=['UsageAdmin'], now=NOW)}"
    ).is_admin


def test_second_configured_audience_is_accepted(
    issuer: LocalIssuer, validator: TokenValidator
) -> None:
    """Entra may put the client id rather than the app id URI in aud; both are accepted."""
    token = issuer.mint(OID, now=NOW, extra_claims={"aud": "11111111-2222-4333-8444-555555555555"})
    assert validator.validate(f"Bearer {token}").object_id == OID


def test_every_configured_issuer_is_accepted_and_no_other(issuer: LocalIssuer) -> None:
    """AUTH_ISSUER lists Entra ID v2 and v1 issuers of one tenant: tokens of either pass."""
    v1 = f"https://sts.windows.net/{TENANT}/"
    validator = TokenValidator(
        issuer=(ISSUER, v1), audience=AUDIENCE, jwks=FileJwksSource(issuer.jwks_path),
        clock=lambda: NOW,
    )  # fmt: skip
    for iss in (ISSUER, v1):
        token = issuer.mint(OID, now=NOW, extra_claims={"iss": iss})
        assert validator.validate(f"Bearer {token}").object_id == OID
    other = issuer.mint(OID, now=NOW, extra_claims={"iss": "https://sts.windows.net/other/"})
    assert assert_refused(validator, f"Bearer {other}").message == "token issuer is not accepted"
    with pytest.raises(ConfigurationError):
        TokenValidator(issuer=(), audience=AUDIENCE, jwks=FileJwksSource(issuer.jwks_path))


def test_leeway_tolerates_small_skew(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """A token expired 30 s ago, or valid from 30 s ahead, passes within the 60 s leeway."""
    expired_just = issuer.mint(OID, now=NOW - timedelta(hours=1, seconds=30))
    early = issuer.mint(OID, now=NOW + timedelta(seconds=30))
    assert validator.validate(f"Bearer {expired_just}").object_id == OID
    assert validator.validate(f"Bearer {early}").object_id == OID


# --- refused: algorithm and key ------------------------------------------------------------


def test_alg_none_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """An unsigned token (alg none) is refused, with an empty or a made-up signature."""
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT', 'kid': issuer.kid})}.{segment(claims())}"
    assert_refused(validator, f"Bearer {unsigned}.")
    assert assert_refused(validator, f"Bearer {unsigned}.c2lnbmF0dXJl").message == (
        "token algorithm is not accepted"
    )


def test_hs256_with_public_key_as_secret_refused(
    issuer: LocalIssuer, validator: TokenValidator
) -> None:
    """Key confusion: HS256 whose HMAC secret is our public key PEM is refused by its alg."""
    public_pem = (
        our_private_key(issuer)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': issuer.kid})}." + segment(
        claims()
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    error = assert_refused(validator, f"Bearer {signing_input}.{b64url(signature)}")
    assert error.message == "token algorithm is not accepted"


@pytest.mark.parametrize("algorithms", [("HS256",), ("RS256", "HS256"), ("none",), ()])
def test_validator_cannot_be_configured_with_symmetric_or_none(
    issuer: LocalIssuer, algorithms: tuple[str, ...]
) -> None:
    """HS*, none or an empty algorithm list is a configuration error at construction."""
    with pytest.raises(ConfigurationError):
        TokenValidator(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks=FileJwksSource(issuer.jwks_path),
            algorithms=algorithms,
        )


def test_unpinned_rsa_alg_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """RS512 is a fine algorithm but not pinned here, so it is refused before key lookup."""
    key = our_private_key(issuer)
    token = jwt.encode(claims(), key, algorithm="RS512", headers={"kid": issuer.kid})
    assert assert_refused(validator, f"Bearer {token}").message == (
        "token algorithm is not accepted"
    )


def test_wrong_key_same_kid_refused(
    issuer: LocalIssuer, validator: TokenValidator, other_key: rsa.RSAPrivateKey
) -> None:
    """A token signed by another RSA key but naming our kid fails the signature check."""
    token = jwt.encode(claims(), other_key, algorithm="RS256", headers={"kid": issuer.kid})
    assert assert_refused(validator, f"Bearer {token}").message == "token signature is invalid"


def test_tampered_payload_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """Swapping in an admin payload under a genuine signature fails the signature check."""
    header, _, signature = issuer.mint(OID, now=NOW).split(".")
    forged = f"{header}.{segment(claims(roles=['UsageAdmin']))}.{signature}"
    assert assert_refused(validator, f"Bearer {forged}").message == "token signature is invalid"


def test_unknown_kid_refused(validator: TokenValidator, other_key: rsa.RSAPrivateKey) -> None:
    """A kid absent from our JWKS is refused."""
    token = jwt.encode(claims(), other_key, algorithm="RS256", headers={"kid": "not-ours"})
    error = assert_refused(validator, f"Bearer {token}")
    assert error.message == "token signing key is not recognised"


@pytest.mark.parametrize("kid", [None, "", 42])
def test_missing_or_bad_kid_refused(
    issuer: LocalIssuer, validator: TokenValidator, kid: object
) -> None:
    """No kid, an empty kid or a non-string kid is refused."""
    key = our_private_key(issuer)
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    token = sign_rs256(header, claims(), key)
    assert_refused(validator, f"Bearer {token}")


def test_token_named_keys_are_never_fetched(
    validator: TokenValidator,
    other_key: rsa.RSAPrivateKey,
    issuer: LocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """jku/x5u/jwk headers are ignored: nothing is fetched and a foreign key stays refused."""
    fetched: list[object] = []
    monkeypatch.setattr(requests.Session, "request", lambda *args, **kwargs: fetched.append(args))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: fetched.append(args))
    public = jwt.algorithms.RSAAlgorithm.to_jwk(other_key.public_key(), as_dict=True)
    for kid in ("attacker-kid", issuer.kid):
        headers = {
            "kid": kid,
            "jku": "http://127.0.0.1:9/jwks.json",
            "x5u": "http://127.0.0.1:9/cert.pem",
            "jwk": {**public, "kid": kid},
        }
        token = jwt.encode(claims(), other_key, algorithm="RS256", headers=headers)
        assert_refused(validator, f"Bearer {token}")
    assert fetched == []


# --- refused: claims -------------------------------------------------------------------------


def test_expired_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """A token that expired beyond the leeway is refused."""
    token = issuer.mint(OID, now=NOW - timedelta(hours=2))
    assert assert_refused(validator, f"Bearer {token}").message == "token has expired"


def test_not_yet_valid_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """A token whose nbf is beyond the leeway in the future is refused."""
    token = issuer.mint(OID, now=NOW, extra_claims={"nbf": int(NOW.timestamp()) + 600})
    assert assert_refused(validator, f"Bearer {token}").message == "token is not yet valid"


def test_issued_in_future_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """A token minted ten minutes from now (iat and nbf ahead) is refused."""
    token = issuer.mint(OID, now=NOW + timedelta(minutes=10))
    assert_refused(validator, f"Bearer {token}")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1714564800", True, float("inf"), float("nan")])
def test_non_numeric_time_claims_refused(
    issuer: LocalIssuer, validator: TokenValidator, claim: str, value: object
) -> None:
    """Time claims that are strings, booleans or non-finite numbers are refused."""
    token = issuer.mint(OID, now=NOW, extra_claims={claim: value})
    assert_refused(validator, f"Bearer {token}")


def test_wrong_issuer_refused(issuer: LocalIssuer, validator: TokenValidator) -> None:
    """A token from another issuer, signed with a trusted key, is refused."""
    token = issuer.mint(OID, now=NOW, extra_claims={"iss": "https://login.example/other/v2.0"})
    assert assert_refused(validator, f"Bearer {token}").message == "token issuer is not accepted"


@pytest.mark.parametrize("aud", ["api://someone-else", ["api://someone-else"], 7])
def test_wrong_audience_refused(
    issuer: LocalIssuer, validator: TokenValidator, aud: object
) -> None:
    """A token meant for another API (or with a malformed aud) is refused."""
    token = issuer.mint(OID, now=NOW, extra_claims={"aud": aud})
    assert_refused(validator, f"Bearer {token}")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_required_claim_refused(
    issuer: LocalIssuer, validator: TokenValidator, claim: str
) -> None:
    """Each of exp, iat, nbf, iss, aud and oid is required."""
    token = issuer.mint(OID, now=NOW, extra_claims={claim: None})
    error = assert_refused(validator, f"Bearer {token}")
    assert claim in error.message


@pytest.mark.parametrize(
    "extra", [{"oid": 12}, {"oid": ""}, {"tid": 5}, {"roles": "UsageAdmin"}, {"roles": [1]}]
)
def test_malformed_identity_claims_refused(
    issuer: LocalIssuer, validator: TokenValidator, extra: dict[str, Any]
) -> None:
    """oid, tid and roles of the wrong type are refused rather than coerced."""
    token = issuer.mint(OID, now=NOW, extra_claims=extra)
    assert_refused(validator, f"Bearer {token}")


# --- refused: header shape and size ---------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Bearer",
        "Bearer ",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer not-a-jwt-at-all-but-long-enough",
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ4In0.c2ln extra",
        "Bearer eyJub3QganNvbg.eyJvaWQiOiJ4In0.c2lnbmF0dXJl",
        "Bearer !!!!.????.####",
        "\x00\x01garbage",
        "Token eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ4In0.c2lnbmF0dXJl",
    ],
)
def test_malformed_headers_refused(validator: TokenValidator, header: str | None) -> None:
    """Anything but 'Bearer <three base64url segments>' is refused."""
    assert_refused(validator, header)


def test_oversized_token_refused_without_parsing(
    issuer: LocalIssuer, validator: TokenValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token over 16 KiB is refused before any JWT parsing happens."""

    def must_not_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("oversized token was parsed")

    monkeypatch.setattr(jwt, "get_unverified_header", must_not_parse)
    monkeypatch.setattr(jwt, "decode", must_not_parse)
    padded = issuer.mint(OID, now=NOW, extra_claims={"pad": "x" * MAX_TOKEN_CHARS})
    assert len(padded) > MAX_TOKEN_CHARS
    error = assert_refused(validator, f"Bearer {padded}")
    assert error.message == "bearer token is too large"
    assert_refused(validator, "Bearer " + "A" * (10 * MAX_TOKEN_CHARS))


# --- key sources and the local issuer ---------------------------------------------------------


def test_missing_jwks_file_is_transient(tmp_path: Path, issuer: LocalIssuer) -> None:
    """A key set that cannot be read is a TransientError (503), not a 401."""
    validator = TokenValidator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=FileJwksSource(tmp_path / "absent.json"),
        clock=lambda: NOW,
    )
    with pytest.raises(TransientError):
        validator.validate(f"Bearer {issuer.mint(OID, now=NOW)}")


def test_jwks_keeps_only_rsa_signing_keys(
    tmp_path: Path, issuer: LocalIssuer, other_key: rsa.RSAPrivateKey
) -> None:
    """Keys with use 'enc', or of another kty, are ignored even if their kid matches."""
    public = jwt.algorithms.RSAAlgorithm.to_jwk(other_key.public_key(), as_dict=True)
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    {**public, "kid": "enc-key", "use": "enc"},
                    {"kty": "oct", "kid": "hmac-key", "k": b64url(b"secret")},
                    {**public, "kid": "sig-key"},
                ]
            }
        )
    )
    source = FileJwksSource(path)
    assert source.key_for("sig-key") is not None
    assert source.key_for("enc-key") is None
    assert source.key_for("hmac-key") is None


def test_file_jwks_reloaded_when_file_changes(
    tmp_path: Path, issuer: LocalIssuer, other_key: rsa.RSAPrivateKey
) -> None:
    """FileJwksSource picks up a rewritten JWKS file (new kid) on the next lookup."""
    path = tmp_path / "jwks.json"
    path.write_text(issuer.jwks_path.read_text())
    source = FileJwksSource(path)
    assert source.key_for(issuer.kid) is not None
    public = jwt.algorithms.RSAAlgorithm.to_jwk(other_key.public_key(), as_dict=True)
    path.write_text(json.dumps({"keys": [{**public, "kid": "rotated", "use": "sig"}]}))
    assert source.key_for("rotated") is not None
    assert source.key_for(issuer.kid) is None


def test_local_issuer_files_and_reuse(tmp_path: Path) -> None:
    """The key is private (0600), the kid is the key's thumbprint, and a second issuer reuses it."""
    first = LocalIssuer(tmp_path / "auth")
    token = first.mint(OID)
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    jwks = json.loads(first.jwks_path.read_text())
    assert [key["kid"] for key in jwks["keys"]] == [first.kid]
    assert jwks["keys"][0]["use"] == "sig"
    assert "d" not in jwks["keys"][0]
    second = LocalIssuer(tmp_path / "auth")
    assert second.kid == first.kid
    assert jwt.get_unverified_header(token)["kid"] == first.kid


def test_cli_prints_a_valid_token(issuer: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m devstack.tokens` prints one token the validator accepts."""
    object_id = str(uuid.uuid4())
    code = main(["--dir", str(issuer.directory), "--object-id", object_id, "--role", "UsageAdmin"])
    token = capsys.readouterr().out.strip()
    assert code == 0
    caller = TokenValidator(
        issuer=ISSUER, audience=AUDIENCE, jwks=FileJwksSource(issuer.jwks_path)
    ).validate(f"Bearer {token}")
    assert caller.object_id == object_id
    assert caller.is_admin


@pytest.mark.parametrize(
    "argv",
    [
        ["--object-id", "not-a-uuid"],
        [],
        ["--object-id", OID, "--tenant-id", "x"],
        ["--object-id", OID, "--lifetime-minutes", "0"],
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(
    issuer: LocalIssuer, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments give exit code 2 and a single line on stderr."""
    with pytest.raises(SystemExit) as exited:
        main(["--dir", str(issuer.directory), *argv])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
