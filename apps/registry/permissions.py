"""Who may see and change the model registry.

The registry (vendors, models, deployments, aliases) is platform-wide data, not
ministry content, so access is decided by a user's roles across *all* their
memberships rather than by the active ministry:

* ``procurement_officer`` and ``platform_admin`` may view and change it;
* ``auditor`` may view it, read-only;
* everyone else gets 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from apps.tenancy.models import Membership, Role

EDIT_ROLES = frozenset({Role.PROCUREMENT_OFFICER.value, Role.PLATFORM_ADMIN.value})
VIEW_ROLES = EDIT_ROLES | {Role.AUDITOR.value}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_REQUEST_CACHE = "_gennai_registry_access"


@dataclass(frozen=True)
class RegistryAccess:
    can_view: bool
    can_edit: bool


NO_ACCESS = RegistryAccess(can_view=False, can_edit=False)


def registry_roles(user: Any) -> frozenset[str]:
    """Every role ``user`` holds in any membership of an active ministry."""
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    roles: set[str] = set()
    for role_list in Membership.objects.filter(user=user, ministry__active=True).values_list(
        "roles", flat=True
    ):
        roles.update(role_list)
    return frozenset(roles)


def access_for_user(user: Any) -> RegistryAccess:
    roles = registry_roles(user)
    return RegistryAccess(can_view=bool(roles & VIEW_ROLES), can_edit=bool(roles & EDIT_ROLES))


def registry_access(request: HttpRequest) -> RegistryAccess:
    """The request user's registry access (computed once per request)."""
    cached = getattr(request, _REQUEST_CACHE, None)
    if isinstance(cached, RegistryAccess):
        return cached
    access = access_for_user(getattr(request, "user", None))
    setattr(request, _REQUEST_CACHE, access)
    return access


def registry_required(
    *, edit: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a registry view: anonymous → login; without a registry role → 403.

    Security: roles come only from memberships, and memberships only from the
    identity provider's claims at login, so nothing in the request can grant
    access. Because the registry holds no ministry content, a qualifying role in
    *any* of the user's active-ministry memberships counts, whichever ministry
    is active. ``edit=True`` requires procurement_officer or platform_admin;
    independently of ``edit``, every unsafe method (POST, PUT, …) requires them
    too, so an auditor can never change anything even through a view that was
    meant to be read-only. Refusals raise ``PermissionDenied`` (the 403 page).
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            access = registry_access(request)
            if not access.can_view:
                raise PermissionDenied(_("モデルレジストリを閲覧する権限がありません。"))
            if (edit or request.method not in SAFE_METHODS) and not access.can_edit:
                raise PermissionDenied(
                    _(
                        "モデルレジストリを変更する権限がありません（調達担当またはプラットフォーム管理者のみ）。"
                    )
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
