"""ID-token and logout-token validation with a locally generated key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation

from apps.accounts.oidc import BACKCHANNEL_EVENT, decode_provider_token, verify_logout_token

KID = "test-key"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(autouse=True)
def jwks(key: rsa.RSAPrivateKey) -> Iterator[None]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "RS256", "use": "sig"})
    cache_key = f"gennai:oidc:jwks:{settings.OIDC_OP_JWKS_ENDPOINT}"
    cache.set(cache_key, {"keys": [public]}, 60)
    yield
    cache.delete(cache_key)


def sign(key: Any, claims: dict[str, Any], *, kid: str = KID, alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def id_claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": settings.OIDC_ISSUER,
        "aud": settings.OIDC_RP_CLIENT_ID,
        "sub": "subject-1",
        "iat": now,
        "exp": now + 300,
        "nonce": "n",
    }
    claims.update(extra)
    return claims


REQUIRED = ["iss", "aud", "exp", "iat", "sub"]


def test_valid_token_accepted(key: Any) -> None:
    assert decode_provider_token(sign(key, id_claims()), require=REQUIRED)["sub"] == "subject-1"


def test_tampered_payload_rejected(key: Any) -> None:
    header, _payload, signature = sign(key, id_claims()).split(".")
    forged = jwt.utils.base64url_encode(json.dumps(id_claims(sub="admin")).encode()).decode()
    with pytest.raises(SuspiciousOperation):
        decode_provider_token(f"{header}.{forged}.{signature}", require=REQUIRED)


def test_other_key_rejected() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(SuspiciousOperation):
        decode_provider_token(sign(other, id_claims()), require=REQUIRED)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 3600},
        {"aud": "another-client"},
        {"iss": "https://evil.example/realms/gennai"},
        {"iat": None},
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "missing-iat"],
)
def test_bad_claims_rejected(key: Any, claims: dict[str, Any]) -> None:
    token_claims = {k: v for k, v in id_claims(**claims).items() if v is not None}
    with pytest.raises(SuspiciousOperation):
        decode_provider_token(sign(key, token_claims), require=REQUIRED)


def test_symmetric_or_unsigned_algorithms_rejected(key: Any) -> None:
    hs = jwt.encode(id_claims(), "secret", algorithm="HS256", headers={"kid": KID})
    none = jwt.encode(id_claims(), None, algorithm="none", headers={"kid": KID})  # type: ignore[arg-type]
    for token in (hs, none):
        with pytest.raises(SuspiciousOperation):
            decode_provider_token(token, require=REQUIRED)


def logout_claims(**extra: Any) -> dict[str, Any]:
    claims = {
        "iss": settings.OIDC_ISSUER,
        "aud": settings.OIDC_RP_CLIENT_ID,
        "iat": int(time.time()),
        "jti": "j1",
        "sub": "subject-1",
        "sid": "sid-1",
        "events": {BACKCHANNEL_EVENT: {}},
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def test_logout_token_accepted(key: Any) -> None:
    assert verify_logout_token(sign(key, logout_claims()))["sid"] == "sid-1"


@pytest.mark.parametrize(
    "claims",
    [{"events": None}, {"events": {"other": {}}}, {"sub": None, "sid": None}, {"nonce": "n"}, {"aud": "x"}],
    ids=["no-events", "wrong-event", "no-sub-or-sid", "has-nonce", "wrong-audience"],
)
def test_bad_logout_token_rejected(key: Any, claims: dict[str, Any]) -> None:
    with pytest.raises(SuspiciousOperation):
        verify_logout_token(sign(key, logout_claims(**claims)))


def test_backchannel_endpoint_rejects_garbage(client: Any, db: None) -> None:
    assert client.post("/accounts/backchannel-logout/", {"logout_token": "not.a.jwt"}).status_code == 400
    assert client.post("/accounts/backchannel-logout/", {}).status_code == 400
    assert client.get("/accounts/backchannel-logout/").status_code == 405
