"""Attacks on sign-in found in the security review (apps/accounts)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.accounts import oidc
from apps.accounts.models import OIDCSession
from apps.accounts.recheck import ID_TOKEN_SESSION_KEY
from apps.accounts.services import sessions_end_for_logout_token
from apps.accounts.session_store import SessionStore
from tests.support.fixtures import make_user

pytestmark = pytest.mark.django_db


def _sign_in(
    client: Client, monkeypatch: pytest.MonkeyPatch, *, subject: str, sid: str, id_token: str
) -> None:
    """Finish a code flow at our callback for ``subject`` (token endpoint and signature stubbed)."""
    monkeypatch.setattr(
        OIDCAuthenticationBackend,
        "get_token",
        lambda self, payload: {"id_token": id_token, "access_token": "a", "refresh_token": "r-" + sid},
    )
    claims = {"sub": subject, "nonce": "n-" + sid, "sid": sid, "groups": ["/ministries/digital"]}
    monkeypatch.setattr(oidc, "decode_provider_token", lambda token, **kw: dict(claims))
    session = client.session
    session["oidc_states"] = {"st-" + sid: {"nonce": "n-" + sid, "code_verifier": "v", "added_on": 0}}
    session.save()
    response = client.get("/accounts/callback/", {"code": "c-" + sid, "state": "st-" + sid})
    assert response.status_code == 302 and client.session.get("_auth_user_id")


def test_signing_in_as_another_user_keeps_the_new_sessions_idp_link(
    monkeypatch: pytest.MonkeyPatch, ministries: tuple[Any, Any]
) -> None:
    """Signing in as B in a browser still signed in as A: Django empties the session
    (``auth.login`` flushes another user's session), which used to drop the ID token and the
    IdP session id the backend had just stored. B's session then had no ID token, so the
    claims re-check skipped it for good (a demotion or removal at the IdP never applied),
    and Keycloak's back-channel logout (by ``sid``) could not find it."""
    a, _ = ministries
    first = make_user("review-first", a, ["staff"])
    second = make_user("review-second", a, ["ministry_admin"])
    client = Client()
    _sign_in(client, monkeypatch, subject=str(first.subject), sid="sid-first", id_token="tok.first")
    _sign_in(client, monkeypatch, subject=str(second.subject), sid="sid-second", id_token="tok.second")

    session = client.session
    assert session["_auth_user_id"] == str(second.pk)
    assert session.get(ID_TOKEN_SESSION_KEY) == "tok.second", "the claims re-check must cover B's session"
    record = OIDCSession.objects.get(session_key=session.session_key)
    assert (record.user_id, record.sid, record.refresh_token) == (second.pk, "sid-second", "r-sid-second")
    assert not OIDCSession.objects.filter(user=first).exists(), "A's session and its refresh token ended"

    assert sessions_end_for_logout_token(subject=str(second.subject), sid="sid-second") == 1
    key = str(session.session_key)
    assert not SessionStore(session_key=key).exists(key)


def test_signing_in_again_as_the_same_user_keeps_the_idp_link(
    monkeypatch: pytest.MonkeyPatch, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    user = make_user("review-same", a, ["staff"])
    client = Client()
    _sign_in(client, monkeypatch, subject=str(user.subject), sid="sid-one", id_token="tok.one")
    _sign_in(client, monkeypatch, subject=str(user.subject), sid="sid-two", id_token="tok.two")
    session = client.session
    assert session.get(ID_TOKEN_SESSION_KEY) == "tok.two"
    assert OIDCSession.objects.get(session_key=session.session_key).sid == "sid-two"


@pytest.mark.parametrize(
    "url", ["http://sso.example.go.jp", "http://keycloak.keycloak.svc:8080/", "http://10.0.0.5/auth"]
)
def test_sync_keycloak_never_sends_admin_credentials_over_plain_http(
    url: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The command authenticates with the realm-management service account's secret (or a
    master-realm admin's password): over plain HTTP anyone on the path reads it and can then
    rewrite the realm (redirect URIs, group memberships: admin of any ministry)."""
    from django.core.management import CommandError, call_command

    settings.KEYCLOAK_URL = url
    settings.KEYCLOAK_ADMIN_CLIENT_SECRET = "the-secret"

    def no_admin() -> Any:
        raise AssertionError("no Keycloak client may be built for a plain-HTTP URL")

    monkeypatch.setattr(
        "apps.accounts.management.commands.sync_keycloak.keycloak_admin_from_settings", no_admin
    )
    with pytest.raises(CommandError) as info:
        call_command("sync_keycloak")
    assert "https://" in str(info.value) and "the-secret" not in str(info.value)


def test_a_callback_session_without_its_id_token_is_still_rechecked(
    monkeypatch: pytest.MonkeyPatch, ministries: tuple[Any, Any]
) -> None:
    """Defence in depth for the flush above: a session that came through our callback (it has
    an ``OIDCSession`` row) is re-checked even if its ID token went missing from the session;
    only sessions that never met the IdP (tests' ``force_login``) are left alone."""
    from django.contrib.auth import SESSION_KEY
    from django.test import RequestFactory

    from apps.accounts import recheck
    from apps.accounts.middleware import ClaimsRecheckMiddleware
    from apps.accounts.services import oidc_session_record

    a, _ = ministries
    user = make_user("review-no-id-token", a, ["ministry_admin"])
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session.save()
    key = str(session.session_key)
    oidc_session_record(user=user, sid="sid-x", session_key=key, refresh_token="r", access_token="a")
    asked: list[str] = []

    def refused(*, refresh_token: str, subject: str | None) -> Any:
        asked.append(refresh_token)
        raise recheck.IdpRefused("user disabled at the IdP")

    monkeypatch.setattr(recheck, "idp_refresh", refused)
    request = RequestFactory().get("/")
    request.session = session
    request.user = user
    response = ClaimsRecheckMiddleware(lambda r: pytest.fail("the view must not run"))(request)
    assert asked == ["r"]
    assert response.status_code == 302 and not OIDCSession.objects.filter(session_key=key).exists()
