"""Ends sessions the IdP no longer vouches for; applies role changes on the next request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import resolve_url

from apps.tenancy.connections import db_hop

from .recheck import claims_forget, session_recheck
from .services import oidc_session_forget

#: Paths whose clients are programs or streams, not pages: they get a 401, not a redirect.
API_PATH_PREFIXES = ("/api/", "/gateway/api/", "/v1/")


def _wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return (
        request.path.startswith(API_PATH_PREFIXES)
        or "application/json" in accept
        or "text/event-stream" in accept
    )


def session_ended_response(request: HttpRequest) -> HttpResponse:
    """Where a request goes when its session has just been ended.

    HTMX requests get ``HX-Redirect`` to the login page (htmx follows it before
    looking at the status); JSON and SSE clients a 401; pages a redirect to
    login that comes back to a GET page afterwards.
    """
    login_url = resolve_url(settings.LOGIN_URL)
    if request.headers.get("HX-Request") == "true":
        response = HttpResponse(status=401)
        response["HX-Redirect"] = login_url
        return response
    if _wants_json(request):
        return JsonResponse(
            {"error": "session_ended", "detail": "サインインし直してください。 / Please sign in again."},
            status=401,
        )
    if request.method == "GET":
        return redirect_to_login(request.get_full_path())
    return redirect_to_login("/")


class ClaimsRecheckMiddleware:
    """Re-check the OIDC session's claims when its short-lived cache entry expires.

    Goes right after ``AuthenticationMiddleware`` (and before the ministry scope
    middleware, which then reads the re-mapped memberships). Security: a
    demotion, a removed group or a disabled user at the IdP takes effect on the
    first request after ``GENNAI_OIDC_CLAIMS_TTL_SECONDS``; see
    :mod:`apps.accounts.recheck`. Sync and async capable: for async views only
    authenticated requests hop to a thread, and while the cache entry is fresh
    that hop does one cache read and no IdP call.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _end_session(self, request: HttpRequest) -> HttpResponse:
        session_key = request.session.session_key
        user_id = getattr(request.user, "pk", None)
        auth.logout(request)
        if session_key:
            oidc_session_forget(session_key=session_key)
            if user_id is not None:
                claims_forget(user_id=user_id, session_key=session_key)
        return session_ended_response(request)

    def _check(self, request: HttpRequest) -> HttpResponse | None:
        if session_recheck(request):
            return None
        return self._end_session(request)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response = self._check(request)
        return response if response is not None else self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        user = await request.auser()
        if user.is_authenticated:
            # One hop to the request's thread; its connection goes back to the pool after.
            response = await db_hop(self._check, request)
            if response is not None:
                return response
        result: Awaitable[HttpResponse] = self.get_response(request)
        return await result
