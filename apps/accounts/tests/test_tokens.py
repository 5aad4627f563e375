"""ID-token and logout-token validation with a locally generated key."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation

from apps.accounts.oidc import (
    BACKCHANNEL_EVENT,
    FROM_BACKCHANNEL,
    FROM_TOKEN_ENDPOINT,
    decode_provider_token,
    jwks_refetch_budget_key,
    verify_logout_token,
)

KID = "test-key"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return public


@pytest.fixture(autouse=True)
def jwks(key: rsa.RSAPrivateKey) -> Iterator[None]:
    cache_key = f"gennai:oidc:jwks:{settings.OIDC_OP_JWKS_ENDPOINT}"
    cache.set(cache_key, {"keys": [jwk_of(key, KID)]}, 60)
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
    now = int(time.time())
    claims = {
        "iss": settings.OIDC_ISSUER,
        "aud": settings.OIDC_RP_CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
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
    [
        {"events": None},
        {"events": {"other": {}}},
        {"sub": None, "sid": None},
        {"nonce": "n"},
        {"aud": "x"},
        {"jti": None},
        {"jti": ""},
        {"iat": None},
        {"exp": None},
        {"exp": int(time.time()) - 3600},
        {"iat": int(time.time()) - 3600, "exp": int(time.time()) + 3600},
    ],
    ids=[
        "no-events",
        "wrong-event",
        "no-sub-or-sid",
        "has-nonce",
        "wrong-audience",
        "no-jti",
        "empty-jti",
        "no-iat",
        "no-exp",
        "expired",
        "too-old",
    ],
)
def test_bad_logout_token_rejected(key: Any, claims: dict[str, Any]) -> None:
    with pytest.raises(SuspiciousOperation):
        verify_logout_token(sign(key, logout_claims(**claims)))


def test_logout_token_replay_rejected(key: Any) -> None:
    token = sign(key, logout_claims())
    verify_logout_token(token)
    with pytest.raises(SuspiciousOperation, match="replayed"):
        verify_logout_token(token)
    # The same jti in a freshly signed token is the same logout: refused too.
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with pytest.raises(SuspiciousOperation, match="replayed"):
        verify_logout_token(sign(key, logout_claims(jti=jti, sid="sid-2")))


def test_backchannel_endpoint_rejects_garbage(client: Any, db: None) -> None:
    assert client.post("/accounts/backchannel-logout/", {"logout_token": "not.a.jwt"}).status_code == 400
    assert client.post("/accounts/backchannel-logout/", {}).status_code == 400
    assert client.get("/accounts/backchannel-logout/").status_code == 405


@pytest.mark.parametrize(
    "claims",
    [{"azp": "another-client"}, {"aud": [settings.OIDC_RP_CLIENT_ID, "another-client"]}],
    ids=["wrong-azp", "several-audiences-without-azp"],
)
def test_authorized_party_checked(key: Any, claims: dict[str, Any]) -> None:
    with pytest.raises(SuspiciousOperation, match="azp"):
        decode_provider_token(sign(key, id_claims(**claims)), require=REQUIRED)
    ok = id_claims(aud=[settings.OIDC_RP_CLIENT_ID, "another-client"], azp=settings.OIDC_RP_CLIENT_ID)
    assert decode_provider_token(sign(key, ok), require=REQUIRED)["sub"] == "subject-1"


def test_unknown_kid_refetches_jwks_once_then_refuses(key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotated key is found with one refetch; more unknown kids soon after are refused unfetched."""
    refetch_key = jwks_refetch_budget_key(FROM_TOKEN_ENDPOINT)
    cache.delete(refetch_key)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    served = [jwk_of(key, KID), jwk_of(rotated, "rotated")]
    fetches: list[str] = []

    class Response:
        def raise_for_status(self) -> None:
            return None

        def json(self) -> dict[str, Any]:
            return {"keys": served}

    def fake_get(url: str, **kwargs: Any) -> Response:
        fetches.append(url)
        return Response()

    monkeypatch.setattr("apps.accounts.oidc.requests.get", fake_get)
    try:
        token = sign(rotated, id_claims(), kid="rotated")
        assert decode_provider_token(token, require=REQUIRED)["sub"] == "subject-1"
        assert fetches == [settings.OIDC_OP_JWKS_ENDPOINT]
        assert decode_provider_token(token, require=REQUIRED)  # now cached: no fetch
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for kid in ("unknown-1", "unknown-2", "unknown-3"):
            with pytest.raises(SuspiciousOperation, match="no matching signing key"):
                decode_provider_token(sign(stranger, id_claims(), kid=kid), require=REQUIRED)
        assert len(fetches) == 1, "at most one refetch per interval"
    finally:
        cache.delete(refetch_key)


def test_backchannel_junk_cannot_spend_the_logins_refetch(key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invented kids at the (unauthenticated) back channel use their own budget, not the login's."""
    budgets = [jwks_refetch_budget_key(FROM_BACKCHANNEL), jwks_refetch_budget_key(FROM_TOKEN_ENDPOINT)]
    cache.delete_many(budgets)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fetches: list[str] = []
    served = [jwk_of(key, KID)]

    class Response:
        def raise_for_status(self) -> None:
            return None

        def json(self) -> dict[str, Any]:
            return {"keys": list(served)}

    def fake_get(url: str, **kwargs: Any) -> Response:
        fetches.append(url)
        return Response()

    monkeypatch.setattr("apps.accounts.oidc.requests.get", fake_get)
    try:
        for kid in ("junk-1", "junk-2"):
            with pytest.raises(SuspiciousOperation):
                verify_logout_token(sign(key, logout_claims(), kid=kid))
        assert len(fetches) == 1
        served.append(jwk_of(rotated, "rotated"))  # the IdP rotates its key
        token = sign(rotated, id_claims(), kid="rotated")
        assert decode_provider_token(token, require=REQUIRED)["sub"] == "subject-1"
        assert len(fetches) == 2, "the login's own refetch was still there"
    finally:
        cache.delete_many(budgets)
