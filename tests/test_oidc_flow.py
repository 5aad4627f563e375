"""OIDC code + PKCE login against the real dev IdP process (Keycloak-shaped)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import psycopg
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from apps.accounts.models import OIDCSession, Session, User
from apps.tenancy.models import Membership
from tests.support.idp import DevIdP
from tests.support.oidc import idp_authorize, login_with_test_client

pytestmark = pytest.mark.django_db


def test_discovery_is_keycloak_shaped(dev_idp: DevIdP) -> None:
    config = httpx.get(f"{dev_idp.issuer}/.well-known/openid-configuration").json()
    assert config["issuer"] == settings.OIDC_ISSUER
    assert config["authorization_endpoint"] == settings.OIDC_OP_AUTHORIZATION_ENDPOINT
    assert config["token_endpoint"] == settings.OIDC_OP_TOKEN_ENDPOINT
    assert config["jwks_uri"] == settings.OIDC_OP_JWKS_ENDPOINT


def test_login_request_uses_pkce_s256_and_nonce(client: Client) -> None:
    query = parse_qs(urlsplit(client.get("/accounts/login/")["Location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert query["nonce"] and query["state"] and query["response_type"] == ["code"]


def test_full_code_pkce_flow_creates_user_and_membership(dev_idp: DevIdP, ministries: Any) -> None:
    client = Client()
    response = login_with_test_client(client, "tanaka")
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get(username="tanaka")
    assert user.display_name == "田中 花子" and user.subject
    membership = Membership.objects.get(user=user)
    assert membership.ministry.code == "digital" and membership.roles == ["staff"]
    assert OIDCSession.objects.filter(user=user).exclude(sid="").exists()
    home = client.get("/").content.decode()
    assert "デジタル庁" in home and "田中 花子" in home


def test_token_exchange_without_verifier_fails(dev_idp: DevIdP, client: Client) -> None:
    """The IdP enforces PKCE: a stolen code is useless without the verifier."""
    callback = idp_authorize(
        client.get("/accounts/login/")["Location"], "tanaka", stop_prefix="http://testserver/"
    )
    code = parse_qs(urlsplit(callback).query)["code"][0]
    response = httpx.post(
        settings.OIDC_OP_TOKEN_ENDPOINT,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://testserver/accounts/callback/",
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "client_secret": settings.OIDC_RP_CLIENT_SECRET,
        },
    )
    assert response.status_code == 400


def test_tampered_state_is_refused(dev_idp: DevIdP, ministries: Any) -> None:
    client = Client()
    callback = idp_authorize(
        client.get("/accounts/login/")["Location"], "tanaka", stop_prefix="http://testserver/"
    )
    parts = urlsplit(callback)
    query = parse_qs(parts.query)
    response = client.get(parts.path, {"code": query["code"][0], "state": "forged"})
    assert response.status_code in (302, 400)
    assert "_auth_user_id" not in client.session
    assert not User.objects.filter(username="tanaka").exists()


def test_group_removal_revokes_membership_at_next_login(dev_idp: DevIdP, ministries: Any) -> None:
    login_with_test_client(Client(), "watanabe")
    user = User.objects.get(username="watanabe")
    assert sorted(Membership.objects.filter(user=user).values_list("ministry__code", flat=True)) == [
        "digital",
        "soumu",
    ]
    with psycopg.connect(dev_idp.env["GENNAI_IDP_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "UPDATE devidp_demoidentity SET groups = %s::jsonb WHERE user_id = "
            "(SELECT id FROM auth_user WHERE username = 'watanabe')",
            ['["/ministries/digital"]'],
        )
    try:
        login_with_test_client(Client(), "watanabe")
        assert list(Membership.objects.filter(user=user).values_list("ministry__code", flat=True)) == [
            "digital"
        ]
    finally:
        with psycopg.connect(dev_idp.env["GENNAI_IDP_DATABASE_URL"], autocommit=True) as conn:
            conn.execute(
                "UPDATE devidp_demoidentity SET groups = %s::jsonb WHERE user_id = "
                "(SELECT id FROM auth_user WHERE username = 'watanabe')",
                ['["/ministries/digital", "/ministries/soumu"]'],
            )


def test_real_id_token_tampered_is_rejected(dev_idp: DevIdP, ministries: Any) -> None:
    """Take a genuine ID token from the IdP, change one claim, and offer it back."""
    from django.core.exceptions import SuspiciousOperation

    from apps.accounts.oidc import decode_provider_token

    client = Client()
    login_with_test_client(client, "suzuki")
    token = client.session["oidc_id_token"]
    assert decode_provider_token(token, require=["iss", "aud", "exp", "iat", "sub"])["groups"] == [
        "/ministries/soumu"
    ]
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["groups"] = ["/ministries/digital"]
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    with pytest.raises(SuspiciousOperation):
        decode_provider_token(f"{header}.{forged}.{signature}", require=["iss", "aud", "exp", "iat", "sub"])


def test_logout_ends_session_and_redirects_to_keycloak(dev_idp: DevIdP, ministries: Any) -> None:
    client = Client()
    login_with_test_client(client, "tanaka")
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == settings.OIDC_OP_LOGOUT_ENDPOINT
    query = parse_qs(target.query)
    assert query["id_token_hint"] and query["post_logout_redirect_uri"] == ["http://testserver/"]
    assert "_auth_user_id" not in client.session
    assert client.get("/console/announcements/1/").status_code == 302  # back to login


@pytest.mark.django_db(transaction=True)
def test_backchannel_logout_kills_the_session(dev_idp: DevIdP, live_server: Any) -> None:
    """The IdP POSTs a signed logout token to our endpoint; the user's session dies."""
    from django.core.management import call_command

    call_command("seed_demo", verbosity=0)
    base = live_server.url
    dev_idp.register_app(base)
    with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as browser:
        start = browser.get("/accounts/login/")
        callback = idp_authorize(start.headers["location"], "sato", stop_prefix=base)
        assert browser.get(callback).status_code == 302
        assert "佐藤 健" in browser.get("/").text
        user = User.objects.get(username="sato")
        assert Session.objects.count() == 1

        deliveries = dev_idp.backchannel_logout("sato")
        assert any(d.get("status") == 200 or d.get("status_code") == 200 for d in deliveries), deliveries
        assert not OIDCSession.objects.filter(user=user).exists()
        assert Session.objects.count() == 0
        page = browser.get("/")
        assert "佐藤 健" not in page.text and 'data-testid="login"' in page.text


# --- the callback as an attacker would use it ------------------------------------------------

IDP_KEY_SQL = "SELECT id, key FROM oidc_provider_rsakey ORDER BY id LIMIT 1"
JWKS_REFETCH_KEY = f"gennai:oidc:jwks-refetch:token-endpoint:{settings.OIDC_OP_JWKS_ENDPOINT}"
JWKS_CACHE_KEY = f"gennai:oidc:jwks:{settings.OIDC_OP_JWKS_ENDPOINT}"


def _idp_signing_key(dev_idp: DevIdP) -> tuple[str, Any]:
    """``(kid, private key)`` the IdP signs with, read from its database (as its operator could)."""
    from hashlib import md5

    from cryptography.hazmat.primitives import serialization

    with psycopg.connect(dev_idp.env["GENNAI_IDP_DATABASE_URL"]) as conn:
        row = conn.execute(IDP_KEY_SQL).fetchone()
    assert row is not None
    pem = str(row[1])
    return md5(pem.encode()).hexdigest(), serialization.load_pem_private_key(pem.encode(), password=None)  # noqa: S324


@contextmanager
def rotated_idp_key(dev_idp: DevIdP) -> Iterator[None]:
    """The IdP starts signing with a new key (its JWKS changes with it); the old key comes back after."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    new_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    with psycopg.connect(dev_idp.env["GENNAI_IDP_DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute(IDP_KEY_SQL).fetchone()
        assert row is not None
        conn.execute("UPDATE oidc_provider_rsakey SET key = %s WHERE id = %s", [new_pem, row[0]])
        try:
            yield
        finally:
            conn.execute("UPDATE oidc_provider_rsakey SET key = %s WHERE id = %s", [row[1], row[0]])


def _callback(client: Client, url: str) -> Any:
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def _start(client: Client, username: str) -> tuple[str, str]:
    """Begin a login and pass the IdP: ``(state, callback URL)``; the callback is not yet visited."""
    start = client.get("/accounts/login/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    return state, idp_authorize(start["Location"], username, stop_prefix="http://testserver/")


def test_nonce_mismatch_is_refused(dev_idp: DevIdP, ministries: Any) -> None:
    """The ID token's nonce must be the one this browser's login started with."""
    client = Client()
    state, callback = _start(client, "tanaka")
    session = client.session
    session["oidc_states"][state]["nonce"] = "nonce-of-another-login"
    session.save()
    response = _callback(client, callback)
    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    assert not User.objects.filter(username="tanaka").exists()


def test_replayed_callback_and_code_are_refused(dev_idp: DevIdP, ministries: Any) -> None:
    client = Client()
    _state, callback = _start(client, "tanaka")
    stolen = dict(client.session["oidc_states"])  # state, nonce and PKCE verifier
    assert _callback(client, callback)["Location"] == "/"
    # Same browser again: the state was used up.
    assert _callback(client, callback).status_code == 400
    # Another browser without that login's state.
    other = Client()
    assert _callback(other, callback).status_code == 302
    assert "_auth_user_id" not in other.session
    # Even with state, nonce and verifier copied over, the code is single-use at the IdP.
    attacker = Client()
    session = attacker.session
    session["oidc_states"] = stolen
    session.save()
    response = _callback(attacker, callback)
    assert response.status_code == 302, "a refused code is a failed login, not a server error"
    assert "_auth_user_id" not in attacker.session


def test_rotated_key_is_fetched_once_then_unknown_kids_are_refused(
    dev_idp: DevIdP, ministries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    login_with_test_client(Client(), "tanaka")  # the app now holds the IdP's current JWKS
    cache.delete(JWKS_REFETCH_KEY)
    fetches: list[str] = []
    real_get = requests.get

    def spy(url: str, *args: Any, **kwargs: Any) -> Any:
        if url == settings.OIDC_OP_JWKS_ENDPOINT:
            fetches.append(url)
        return real_get(url, *args, **kwargs)

    monkeypatch.setattr("apps.accounts.oidc.requests.get", spy)
    try:
        with rotated_idp_key(dev_idp):
            client = Client()
            assert login_with_test_client(client, "suzuki")["Location"] == "/"
            assert fetches == [settings.OIDC_OP_JWKS_ENDPOINT], "one refetch finds the rotated key"
            with rotated_idp_key(dev_idp):
                refused = Client()
                assert login_with_test_client(refused, "suzuki").status_code == 400
                assert "_auth_user_id" not in refused.session
                assert len(fetches) == 1, "no second refetch within GENNAI_OIDC_JWKS_REFETCH_SECONDS"
    finally:
        cache.delete_many([JWKS_REFETCH_KEY, JWKS_CACHE_KEY])


@pytest.mark.parametrize(
    "change",
    [{"exp": None}, {"sub": None}, {"azp": "another-client"}, {"aud": ["gennai-web", "another-client"]}],
    ids=["missing-exp", "missing-sub", "wrong-azp", "two-audiences-no-azp"],
)
def test_id_token_with_bad_claims_is_refused_at_the_callback(
    dev_idp: DevIdP, ministries: Any, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any]
) -> None:
    """The IdP's real token, re-signed with the IdP's real key after changing one claim."""
    from apps.accounts.oidc import KeycloakOIDCBackend

    kid, private_key = _idp_signing_key(dev_idp)
    real_get_token = KeycloakOIDCBackend.get_token

    def tampered(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        tokens = dict(real_get_token(self, payload))
        claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
        if "aud" in change:
            claims.pop("azp", None)
        claims.update(change)
        claims = {k: v for k, v in claims.items() if v is not None}
        tokens["id_token"] = jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})
        return tokens

    monkeypatch.setattr(KeycloakOIDCBackend, "get_token", tampered)
    client = Client()
    assert login_with_test_client(client, "tanaka").status_code == 400
    assert "_auth_user_id" not in client.session
    assert not User.objects.filter(username="tanaka").exists()


def _logout_token(dev_idp: DevIdP, *, sid: str, subject: str, **change: Any) -> str:
    import time
    import uuid

    from apps.accounts.oidc import BACKCHANNEL_EVENT

    kid, private_key = _idp_signing_key(dev_idp)
    now = int(time.time())
    claims = {
        "iss": settings.OIDC_ISSUER,
        "aud": settings.OIDC_RP_CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        "sub": subject,
        "sid": sid,
        "typ": "Logout",
        "events": {BACKCHANNEL_EVENT: {}},
    }
    claims.update(change)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})


def test_logout_token_replay_is_refused(dev_idp: DevIdP, ministries: Any) -> None:
    client = Client()
    login_with_test_client(client, "tanaka")
    user = User.objects.get(username="tanaka")
    sid = OIDCSession.objects.get(user=user).sid
    token = _logout_token(dev_idp, sid=sid, subject=str(user.subject))
    endpoint = Client()
    assert endpoint.post("/accounts/backchannel-logout/", {"logout_token": token}).status_code == 200
    assert "_auth_user_id" not in client.session
    assert endpoint.post("/accounts/backchannel-logout/", {"logout_token": token}).status_code == 400


@pytest.mark.parametrize("missing", ["jti", "iat", "exp"])
def test_logout_token_without_jti_iat_or_exp_is_refused(
    dev_idp: DevIdP, ministries: Any, missing: str
) -> None:
    client = Client()
    login_with_test_client(client, "tanaka")
    user = User.objects.get(username="tanaka")
    sid = OIDCSession.objects.get(user=user).sid
    token = _logout_token(dev_idp, sid=sid, subject=str(user.subject), **{missing: None})
    assert Client().post("/accounts/backchannel-logout/", {"logout_token": token}).status_code == 400
    assert client.get("/").context["user"].is_authenticated, "the session lives on"


EVIL_NEXT = [
    "//evil.example",
    "https://evil.example/",
    "///evil.example/",
    "/\\evil.example",
    "http://testserver@evil.example/",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("next_url", EVIL_NEXT)
def test_evil_next_after_login_lands_on_the_home_page(
    dev_idp: DevIdP, ministries: Any, next_url: str
) -> None:
    client = Client()
    response = login_with_test_client(client, "tanaka", next_url=next_url)
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session["_auth_user_id"]


def test_local_next_after_login_is_kept(dev_idp: DevIdP, ministries: Any) -> None:
    response = login_with_test_client(Client(), "tanaka", next_url="/gateway/keys/?page=2")
    assert response["Location"] == "/gateway/keys/?page=2"


@pytest.mark.parametrize("next_url", EVIL_NEXT)
def test_evil_next_after_ministry_switch_lands_on_the_home_page(staff_a: Any, next_url: str) -> None:
    client = Client()
    client.force_login(staff_a.user)
    response = client.post("/ministry/switch/", {"ministry": "digital", "next": next_url})
    assert response.status_code == 302
    assert response["Location"] == "/"
