"""ClaimsRecheckMiddleware plumbing: async views, the shared check, who gets which answer.

The IdP round trips themselves are tested against the real dev IdP in
``tests/test_roles_per_ministry.py``; these tests need no network.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.test import AsyncRequestFactory, RequestFactory, override_settings

from apps.accounts import recheck
from apps.accounts.middleware import ClaimsRecheckMiddleware
from apps.accounts.recheck import claims_cache_key, claims_mark_fresh
from apps.accounts.session_store import SessionStore

pytestmark = pytest.mark.django_db


def oidc_request(factory: Any, user: Any, headers: dict[str, str] | None = None) -> HttpRequest:
    """A request of a session that came through the OIDC callback."""
    request: HttpRequest = factory.get("/chat/", headers=headers or {})
    session = SessionStore()
    session["oidc_id_token"] = "header.payload.signature"
    session["_auth_user_id"] = str(user.pk)
    session.save()
    request.session = session
    request.user = user

    async def auser() -> Any:
        return user

    request.auser = auser  # type: ignore[attr-defined]
    return request


def test_async_view_with_fresh_claims_passes_through_without_a_check(
    staff_a: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recheck, "_check_locked", lambda **kw: pytest.fail("no check while fresh"))
    seen: list[str] = []

    async def view(request: HttpRequest) -> HttpResponse:
        seen.append(request.path)
        return HttpResponse("stream")

    middleware = ClaimsRecheckMiddleware(view)
    request = oidc_request(AsyncRequestFactory(), staff_a.user)
    claims_mark_fresh(user_id=staff_a.user.pk, session_key=str(request.session.session_key))
    response = async_to_sync(middleware)(request)
    assert response.status_code == 200 and seen == ["/chat/"]


def test_async_sse_request_of_an_ended_session_gets_401(staff_a: Any) -> None:
    """No stored tokens for an OIDC session: it cannot be re-checked, so it ends (fail closed)."""

    async def view(request: HttpRequest) -> HttpResponse:
        pytest.fail("the view must not run")

    middleware = ClaimsRecheckMiddleware(view)
    request = oidc_request(AsyncRequestFactory(), staff_a.user, headers={"Accept": "text/event-stream"})
    session_key = str(request.session.session_key)
    response = async_to_sync(middleware)(request)
    assert response.status_code == 401
    assert not SessionStore().exists(session_key)


def test_anonymous_async_request_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.contrib.auth.models import AnonymousUser

    monkeypatch.setattr(recheck, "session_recheck", lambda request: pytest.fail("not for anonymous"))

    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    request = AsyncRequestFactory().get("/v1/models")

    async def auser() -> Any:
        return AnonymousUser()

    request.auser = auser  # type: ignore[attr-defined]
    assert async_to_sync(ClaimsRecheckMiddleware(view))(request).status_code == 200


@override_settings(OIDC_TIMEOUT=5)
def test_concurrent_request_waits_for_the_running_check(
    staff_a: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a rotating refresh token, a second request must not refresh too: it waits for the first."""
    monkeypatch.setattr(recheck, "_check_locked", lambda **kw: pytest.fail("only one check at a time"))
    request = oidc_request(RequestFactory(), staff_a.user)
    session_key = str(request.session.session_key)
    lock = claims_cache_key(user_id=staff_a.user.pk, session_key=session_key) + ":lock"
    assert cache.add(lock, 1, timeout=10)  # "another request" is checking

    def other_request_finishes() -> None:
        time.sleep(0.2)
        claims_mark_fresh(user_id=staff_a.user.pk, session_key=session_key)
        cache.delete(lock)

    thread = threading.Thread(target=other_request_finishes)
    thread.start()
    started = time.monotonic()
    response = ClaimsRecheckMiddleware(lambda r: HttpResponse("page"))(request)
    thread.join()
    assert response.status_code == 200
    assert 0.15 < time.monotonic() - started < 2


@override_settings(OIDC_TIMEOUT=5)
def test_waiting_request_follows_a_check_that_ended_the_session(
    staff_a: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recheck, "_check_locked", lambda **kw: pytest.fail("only one check at a time"))
    request = oidc_request(RequestFactory(), staff_a.user, headers={"HX-Request": "true"})
    session_key = str(request.session.session_key)  # no OIDCSession: the other check ended it
    lock = claims_cache_key(user_id=staff_a.user.pk, session_key=session_key) + ":lock"
    assert cache.add(lock, 1, timeout=10)

    def other_request_ends_the_session() -> None:
        time.sleep(0.1)
        cache.delete(lock)

    thread = threading.Thread(target=other_request_ends_the_session)
    thread.start()
    response = ClaimsRecheckMiddleware(lambda r: HttpResponse("page"))(request)
    thread.join()
    assert response.status_code == 401 and response["HX-Redirect"] == "/accounts/login/"


def test_claims_entry_never_outlives_the_ttl(staff_a: Any) -> None:
    """Even if the cache kept the entry longer, its own deadline decides."""
    with override_settings(GENNAI_OIDC_CLAIMS_TTL_SECONDS=0.2):
        claims_mark_fresh(user_id=1, session_key="k", seconds=3600)
        assert recheck.claims_are_fresh(user_id=1, session_key="k")
        time.sleep(0.25)
        assert cache.get(claims_cache_key(user_id=1, session_key="k")) is not None, "still in the cache"
        assert not recheck.claims_are_fresh(user_id=1, session_key="k")


def test_refresh_answer_for_a_session_ended_meanwhile_changes_nothing(staff_a: Any) -> None:
    """A back-channel logout can delete the session while its re-check waits on the IdP."""
    from apps.accounts.services import oidc_session_record, oidc_session_refresh
    from apps.tenancy.models import Membership

    record = oidc_session_record(user=staff_a.user, sid="s", session_key="k" * 32, refresh_token="old")
    record.delete()
    claims = {"sub": staff_a.user.subject, "groups": ["/ministries/digital", "/ministries/digital/admins"]}
    assert oidc_session_refresh(record=record, claims=claims, refresh_token="new", access_token="a") is None
    assert Membership.objects.get(user=staff_a.user).roles == ["staff"], "no grant from an ended session"
