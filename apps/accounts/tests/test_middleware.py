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
    assert cache.add(lock, recheck.CHECK_LOCK_VALUE, timeout=10)  # "another request" is checking

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
    assert cache.add(lock, recheck.CHECK_LOCK_VALUE, timeout=10)

    def other_request_ends_the_session() -> None:
        time.sleep(0.1)
        cache.delete(lock)

    thread = threading.Thread(target=other_request_ends_the_session)
    thread.start()
    response = ClaimsRecheckMiddleware(lambda r: HttpResponse("page"))(request)
    thread.join()
    assert response.status_code == 401 and response["HX-Redirect"] == "/accounts/login/"


def _lock_of(request: Any, user: Any) -> str:
    return claims_cache_key(user_id=user.pk, session_key=str(request.session.session_key)) + ":lock"


@override_settings(OIDC_TIMEOUT=5)
@pytest.mark.parametrize("planted", ["int", "moved"])
def test_a_forged_check_lock_does_not_let_requests_skip_the_check(
    staff_a: Any, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """Someone who can write to Redis plants the session's lock (an integer, or a signed lock value
    copied from another key) so that its requests wait and then go on unchecked, keeping a role the
    IdP removed: the request checks the session itself instead."""
    checked: list[str] = []
    monkeypatch.setattr(recheck, "_check_locked", lambda **kw: checked.append(kw["session_key"]) or False)
    request = oidc_request(RequestFactory(), staff_a.user, headers={"HX-Request": "true"})
    lock = _lock_of(request, staff_a.user)
    client = cache._cache.get_client(cache.make_key(lock), write=True)  # type: ignore[attr-defined]
    if planted == "int":
        client.set(cache.make_key(lock), b"1")
    else:
        cache.set("elsewhere:lock", recheck.CHECK_LOCK_VALUE, timeout=60)
        client.set(cache.make_key(lock), client.get(cache.make_key("elsewhere:lock")))
    response = ClaimsRecheckMiddleware(lambda r: HttpResponse("page"))(request)
    assert len(checked) == 1  # at once, not after waiting for a verdict that never comes
    assert response.status_code == 401  # the check's verdict (here: the IdP removed the session)
    cache.delete(lock)
    cache.delete("elsewhere:lock")


@override_settings(OIDC_TIMEOUT=0.3)
def test_a_lock_without_a_verdict_in_time_does_not_let_the_request_through_unchecked(
    staff_a: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[bool] = []
    monkeypatch.setattr(recheck, "_check_locked", lambda **kw: checked.append(True) or False)
    request = oidc_request(RequestFactory(), staff_a.user, headers={"HX-Request": "true"})
    lock = _lock_of(request, staff_a.user)
    assert cache.add(lock, recheck.CHECK_LOCK_VALUE, timeout=10)  # held, and nobody ever decides
    response = ClaimsRecheckMiddleware(lambda r: HttpResponse("page"))(request)
    assert checked == [True] and response.status_code == 401
    cache.delete(lock)


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
