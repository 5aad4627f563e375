"""Who may use the insight pages of the console: the audit browser and the platform views.

The usage dashboard is a ministry page and uses :func:`apps.console.permissions.console_required`
(ministry admins; ministry auditors read). The two kinds of page here differ:

* **audit browser** — ministry admins and ministry auditors read their own
  ministry's trail; the platform roles ``auditor`` and ``platform_admin`` read
  every ministry's, read-only (:func:`apps.audit.selectors.audit_scope_for`);
* **platform pages** — ``platform_admin`` and ``auditor`` read; only
  ``platform_admin`` changes anything (the platform budget).

Only the roles of the request's *active* membership count. Platform roles are
realm roles copied into every membership of the user
(:mod:`apps.accounts.claims`), so they do not depend on which ministry is active.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.translation import gettext as _

from apps.audit.selectors import AuditScope, audit_scope_for
from apps.tenancy.models import Membership, Role

from .permissions import SAFE_METHODS

PLATFORM_READER_ROLES = (Role.PLATFORM_ADMIN.value, Role.AUDITOR.value)


def request_audit_scope(request: HttpRequest) -> AuditScope | None:
    return audit_scope_for(membership=getattr(request, "membership", None))


def audit_reader_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Security: anonymous → login; no audit scope (staff, procurement) → 403; GET only."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if request_audit_scope(request) is None:
            raise PermissionDenied(_("監査ログを閲覧する権限がありません。"))
        if request.method not in SAFE_METHODS:
            raise PermissionDenied(_("監査ログは閲覧のみです。"))
        return view(request, *args, **kwargs)

    return wrapper


def is_platform_reader(membership: Membership | None) -> bool:
    return membership is not None and any(membership.has_role(r) for r in PLATFORM_READER_ROLES)


def is_platform_admin(membership: Membership | None) -> bool:
    return membership is not None and membership.has_role(Role.PLATFORM_ADMIN)


def platform_required(
    *, edit: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Security: platform pages need ``platform_admin`` or ``auditor``; every unsafe method
    (and ``edit=True`` pages) needs ``platform_admin``. Ministry admins get 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = getattr(request, "membership", None)
            if not is_platform_reader(membership):
                raise PermissionDenied(_("プラットフォーム管理者または監査担当の権限が必要です。"))
            if (edit or request.method not in SAFE_METHODS) and not is_platform_admin(membership):
                raise PermissionDenied(_("この操作にはプラットフォーム管理者の権限が必要です。"))
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
