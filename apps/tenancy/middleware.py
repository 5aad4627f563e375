"""Enters the ministry scope of the authenticated user's membership."""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from .connections import release_connections
from .models import Membership
from .scope import ministry_scope
from .selectors import membership_for_user

SESSION_KEY = "gennai_ministry"


def _is_async_view(request: HttpRequest) -> bool:
    try:
        match = resolve(request.path_info, urlconf=getattr(request, "urlconf", None))
    except Resolver404:
        return False
    return iscoroutinefunction(match.func)


class MinistryScopeMiddleware:
    """Run each authenticated request inside its ministry's scope.

    Security: the ministry comes only from the user's memberships (which come
    only from identity-provider claims). The session may remember *which* of the
    user's own memberships is active; a stale or foreign code there is ignored.
    Requests of anonymous users and users without a membership run unscoped, so
    any TenantModel query they reach raises instead of returning data.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.membership = None  # type: ignore[attr-defined]
        request.ministry = None  # type: ignore[attr-defined]
        membership = self._membership(request)
        if membership is not None:
            request.membership = membership  # type: ignore[attr-defined]
            request.ministry = membership.ministry  # type: ignore[attr-defined]
        if _is_async_view(request):
            # Async views (SSE streams, /v1) wait on model servers for seconds: a
            # transaction held open here would pin a pooled connection for all
            # that time. They enter ministry_scope around each database call
            # instead (apps.tenancy.connections.scoped_db_hop); any query they
            # forget to scope raises ScopeError. The session, user and
            # membership lookups above opened this thread's connection: give it
            # back before the view starts waiting (DESIGN invariant 10).
            release_connections()
            return self.get_response(request)
        if membership is None:
            return self.get_response(request)
        with ministry_scope(ministry_id=membership.ministry_id):
            response = self.get_response(request)
            if response.status_code >= 500:
                # The view failed (Django already turned the exception into a
                # response): nothing it wrote may be committed.
                transaction.set_rollback(True)
            return response

    @staticmethod
    def _membership(request: HttpRequest) -> Membership | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return membership_for_user(user=user, ministry_code=request.session.get(SESSION_KEY))
