"""OIDC code + PKCE login against the real dev IdP process (Keycloak-shaped)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import psycopg
import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client

from apps.accounts.models import OIDCSession, User
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
    forged = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
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
