"""Roles are per ministry, and IdP changes apply on the next request (real dev IdP process).

The demo user ``yamada`` is in ``/ministries/digital``, ``/ministries/digital/admins``
and ``/ministries/soumu``: admin of デジタル庁, only staff of 総務省. Group changes
and disabling are made in the IdP's own database, as an IdP admin would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import requests
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone
from psycopg.types.json import Jsonb

from apps.accounts.models import OIDCSession, Session, User
from apps.accounts.recheck import claims_are_fresh, claims_forget
from apps.devidp.demo_users import demo_groups, get_demo_user
from apps.gateway.models import ApiKey
from apps.tenancy.models import Membership
from tests.support.idp import DevIdP
from tests.support.oidc import login_with_test_client

pytestmark = pytest.mark.django_db

KEYS_PAGE = "/gateway/keys/"
KEYS_API = "/gateway/api/keys/"


def _idp_execute(dev_idp: DevIdP, sql: str, params: list[Any]) -> None:
    with psycopg.connect(dev_idp.env["GENNAI_IDP_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(sql, params)


@contextmanager
def idp_groups(dev_idp: DevIdP, username: str, groups: list[str]) -> Iterator[None]:
    """Set a user's Keycloak groups at the IdP; restore the demo groups afterwards."""
    sql = (
        "UPDATE devidp_demoidentity SET groups = %s::jsonb "
        "WHERE user_id = (SELECT id FROM auth_user WHERE username = %s)"
    )
    entry = get_demo_user(username)
    assert entry is not None
    _idp_execute(dev_idp, sql, [Jsonb(groups), username])
    try:
        yield
    finally:
        _idp_execute(dev_idp, sql, [Jsonb(demo_groups(dict(entry["roles"]))), username])


@contextmanager
def idp_disabled(dev_idp: DevIdP, username: str) -> Iterator[None]:
    """Disable a user at the IdP (``is_active=False``); enable again afterwards."""
    sql = "UPDATE auth_user SET is_active = %s WHERE username = %s"
    _idp_execute(dev_idp, sql, [False, username])
    try:
        yield
    finally:
        _idp_execute(dev_idp, sql, [True, username])


@pytest.fixture
def refresh_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every refresh-token grant sent to the IdP (the calls still go to the real IdP)."""
    calls: list[dict[str, Any]] = []
    real_post: Callable[..., Any] = requests.post

    def spy(url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data") or {}
        if isinstance(data, dict) and data.get("grant_type") == "refresh_token":
            calls.append(data)
        return real_post(url, *args, **kwargs)

    monkeypatch.setattr("apps.accounts.recheck.requests.post", spy)
    return calls


def expire_claims(client: Client, user: User) -> None:
    """Drop the session's claims-cache entry: what expiry, eviction or a Redis flush do."""
    claims_forget(user_id=user.pk, session_key=str(client.session.session_key))


def signed_in(username: str) -> Client:
    client = Client()
    response = login_with_test_client(client, username)
    assert response.status_code == 302 and response["Location"] == "/", response
    return client


def act_in(client: Client, code: str) -> None:
    client.post("/ministry/switch/", {"ministry": code, "next": "/"})
    assert client.session["gennai_ministry"] == code


def roles_by_ministry(username: str) -> dict[str, list[str]]:
    user = User.objects.get(username=username)
    return dict(Membership.objects.filter(user=user).values_list("ministry__code", "roles"))


def test_admin_in_a_is_only_staff_in_b(dev_idp: DevIdP, ministries: Any) -> None:
    client = signed_in("yamada")
    assert roles_by_ministry("yamada") == {"digital": ["ministry_admin", "staff"], "soumu": ["staff"]}

    act_in(client, "digital")
    assert client.get(KEYS_PAGE).status_code == 200
    assert client.get(KEYS_API).status_code == 200

    act_in(client, "soumu")
    expires = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    form = {"name": "soumu-system", "max_level": "1", "expires_at": expires}
    assert client.get(KEYS_PAGE).status_code == 403
    assert client.post(KEYS_PAGE, form).status_code == 403
    assert client.get(KEYS_API).status_code == 403
    minted = client.post(
        KEYS_API,
        {"name": "soumu-system", "allowed_aliases": [], "max_level": 1, "expires_at": expires},
        content_type="application/json",
    )
    assert minted.status_code == 403
    assert client.post(f"{KEYS_API}1/revoke/").status_code == 403
    assert client.post(f"{KEYS_PAGE}1/revoke/").status_code == 403
    assert not ApiKey.objects.filter(ministry__code="soumu").exists()
    # Admin of a ministry is no platform role: the registry stays closed in both.
    assert client.get("/registry/").status_code == 403
    act_in(client, "digital")
    assert client.get("/registry/").status_code == 403


def test_procurement_subgroup_opens_the_platform_registry(dev_idp: DevIdP, ministries: Any) -> None:
    """takahashi is in /ministries/digital/procurement: a procurement officer with a home ministry."""
    client = signed_in("takahashi")
    assert roles_by_ministry("takahashi") == {"digital": ["procurement_officer", "staff"]}
    assert client.get("/registry/").status_code == 200
    assert client.get(KEYS_PAGE).status_code == 403


@override_settings(GENNAI_OIDC_CLAIMS_TTL_SECONDS=1.0)
def test_demotion_at_the_idp_applies_on_the_next_request_after_the_ttl(
    dev_idp: DevIdP, ministries: Any, refresh_calls: list[dict[str, Any]]
) -> None:
    import time

    client = signed_in("yamada")
    act_in(client, "digital")
    assert client.get(KEYS_PAGE).status_code == 200
    with idp_groups(dev_idp, "yamada", ["/ministries/digital", "/ministries/soumu"]):
        # Within the TTL nothing asks the IdP, so the old grant still holds ...
        assert client.get(KEYS_PAGE).status_code == 200
        assert refresh_calls == []
        # ... and on the first request after it, the demotion is in force: no re-login.
        time.sleep(1.05)
        assert client.get(KEYS_PAGE).status_code == 403
        assert len(refresh_calls) == 1
        assert roles_by_ministry("yamada") == {"digital": ["staff"], "soumu": ["staff"]}
        assert client.get("/").status_code == 200, "still signed in"


def test_cache_hit_asks_nothing_and_a_miss_refreshes(
    dev_idp: DevIdP, ministries: Any, refresh_calls: list[dict[str, Any]]
) -> None:
    client = signed_in("tanaka")
    user = User.objects.get(username="tanaka")
    record = OIDCSession.objects.get(user=user)
    assert record.refresh_token and record.access_token, "tokens are kept server-side"
    assert "refresh_token" not in str(dict(client.session.items()))
    for _ in range(5):
        assert client.get("/").status_code == 200
    assert refresh_calls == []

    expire_claims(client, user)  # eviction, flush, expiry
    assert client.get("/").status_code == 200
    assert len(refresh_calls) == 1
    assert refresh_calls[0]["refresh_token"] == record.refresh_token
    record.refresh_from_db()
    assert record.refresh_token != refresh_calls[0]["refresh_token"], (
        "the IdP rotated it; we kept the new one"
    )
    assert claims_are_fresh(user_id=user.pk, session_key=str(client.session.session_key))
    assert client.get("/").status_code == 200
    assert len(refresh_calls) == 1


def test_group_removal_at_the_idp_drops_the_ministry_without_relogin(
    dev_idp: DevIdP, ministries: Any
) -> None:
    client = signed_in("watanabe")
    user = User.objects.get(username="watanabe")
    act_in(client, "soumu")
    with idp_groups(dev_idp, "watanabe", ["/ministries/digital"]):
        expire_claims(client, user)
        page = client.get("/").content.decode()
    assert roles_by_ministry("watanabe") == {"digital": ["staff"]}
    assert "デジタル庁" in page, "acts in the remaining ministry"


@pytest.mark.parametrize(
    ("headers", "expected_status"),
    [({}, 302), ({"HTTP_HX_REQUEST": "true"}, 401), ({"HTTP_ACCEPT": "application/json"}, 401)],
    ids=["page", "htmx", "json"],
)
def test_disabled_user_at_the_idp_loses_the_session(
    dev_idp: DevIdP, ministries: Any, headers: dict[str, str], expected_status: int
) -> None:
    client = signed_in("suzuki")
    user = User.objects.get(username="suzuki")
    session_key = client.session.session_key
    with idp_disabled(dev_idp, "suzuki"):
        expire_claims(client, user)
        response = client.get("/", **headers)  # type: ignore[arg-type]
    assert response.status_code == expected_status
    if expected_status == 302:
        assert response["Location"].startswith("/accounts/login/")
    elif "HTTP_HX_REQUEST" in headers:
        assert response["HX-Redirect"] == "/accounts/login/"
    else:
        assert response.json()["error"] == "session_ended"
    assert not Session.objects.filter(session_key=session_key).exists()
    assert not OIDCSession.objects.filter(session_key=session_key).exists()
    assert "_auth_user_id" not in client.session


def test_logout_at_the_idp_ends_the_session_on_refresh(dev_idp: DevIdP, ministries: Any) -> None:
    """Even without the back channel, an IdP session that ended refuses the refresh."""
    client = signed_in("tanaka")
    user = User.objects.get(username="tanaka")
    sid = OIDCSession.objects.get(user=user).sid
    _idp_execute(dev_idp, "UPDATE devidp_idpsession SET ended_at = now() WHERE sid = %s", [sid])
    expire_claims(client, user)
    assert client.get("/").status_code == 302
    assert "_auth_user_id" not in client.session


def test_unreachable_idp_keeps_claims_for_the_stale_bound_only(dev_idp: DevIdP, ministries: Any) -> None:
    client = signed_in("tanaka")
    user = User.objects.get(username="tanaka")
    closed = "http://127.0.0.1:9/realms/gennai/protocol/openid-connect/token"
    with override_settings(OIDC_OP_TOKEN_ENDPOINT=closed, OIDC_TIMEOUT=2):
        expire_claims(client, user)
        assert client.get("/").status_code == 200, "within GENNAI_OIDC_CLAIMS_MAX_STALE_SECONDS"
        with override_settings(GENNAI_OIDC_CLAIMS_MAX_STALE_SECONDS=0):
            expire_claims(client, user)
            assert client.get("/").status_code == 302, "past the bound the session ends"
    assert "_auth_user_id" not in client.session


def test_oidc_session_without_stored_tokens_is_ended(dev_idp: DevIdP, ministries: Any) -> None:
    """A session signed in before tokens were kept cannot be re-checked: fail closed."""
    client = signed_in("tanaka")
    user = User.objects.get(username="tanaka")
    OIDCSession.objects.filter(user=user).update(refresh_token="", access_token="")
    expire_claims(client, user)
    assert client.get("/").status_code == 302
    assert "_auth_user_id" not in client.session


def test_sessions_not_from_the_idp_are_not_rechecked(
    staff_a: Any, refresh_calls: list[dict[str, Any]]
) -> None:
    client = Client()
    client.force_login(staff_a.user)
    assert client.get("/").status_code == 200
    assert refresh_calls == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_at_expiry_refresh_once(
    dev_idp: DevIdP, live_server: Any, refresh_calls: list[dict[str, Any]]
) -> None:
    """Keycloak's refresh tokens are single-use: parallel requests must not race each other out."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from django.core.management import call_command

    from tests.support.oidc import idp_authorize

    call_command("seed_demo", verbosity=0)
    base = live_server.url
    dev_idp.register_app(base)
    with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as browser:
        callback = idp_authorize(
            browser.get("/accounts/login/").headers["location"], "tanaka", stop_prefix=base
        )
        assert browser.get(callback).status_code == 302
        cookies = dict(browser.cookies)
    user = User.objects.get(username="tanaka")
    # The browser's cookie is the session key (OIDCSession holds only its digest).
    claims_forget(user_id=user.pk, session_key=cookies[settings.SESSION_COOKIE_NAME])

    def page(_: int) -> str:
        return httpx.get(f"{base}/", cookies=cookies, timeout=30).text

    with ThreadPoolExecutor(max_workers=6) as pool:
        pages = list(pool.map(page, range(6)))
    assert all("田中 花子" in text for text in pages), "every request still signed in"
    assert len(refresh_calls) == 1
