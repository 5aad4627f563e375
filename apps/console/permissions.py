"""Who may use the ministry console (``/console/``).

The console shows and changes one ministry's data: the *active* ministry of the
request (:class:`apps.tenancy.middleware.MinistryScopeMiddleware`). Access is
decided by the roles of that one membership only (DESIGN invariant 9: being
admin in A never makes anyone admin in B, and never lets them act on A while B
is active):

* ``ministry_admin`` may view and change;
* ``ministry_auditor`` may view the read pages, and change nothing;
* everyone else (staff, procurement officers, platform roles without a
  ministry role) gets 403.

Helper modules of the console (``views_usage``, ``views_audit``, …) use the same
decorator so every console page answers the same way.
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

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ConsoleAccess:
    """What the request's active membership may do in the console."""

    can_view: bool
    can_edit: bool


NO_ACCESS = ConsoleAccess(can_view=False, can_edit=False)


def access_for_membership(membership: Membership | None) -> ConsoleAccess:
    """Security: only the roles of the *active* membership count, never another ministry's."""
    if membership is None:
        return NO_ACCESS
    can_edit = membership.has_role(Role.MINISTRY_ADMIN)
    can_view = can_edit or membership.has_role(Role.MINISTRY_AUDITOR)
    return ConsoleAccess(can_view=can_view, can_edit=can_edit)


def console_access(request: HttpRequest) -> ConsoleAccess:
    return access_for_membership(getattr(request, "membership", None))


def console_required(
    *, edit: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a console view: anonymous → login; no console role → 403.

    Security: ``edit=True`` pages (forms that only make sense for changing
    something) need ``ministry_admin``; independently of ``edit``, every unsafe
    method (POST, …) needs ``ministry_admin`` too, so an auditor can never change
    anything even through a view meant to be read-only. The check runs before
    any object is looked up, so a refused user learns nothing about which ids
    exist; an admin asking for another ministry's object then gets the same 404
    as for a missing one (the ``get_*_for_actor`` selectors).
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            access = console_access(request)
            if not access.can_view:
                raise PermissionDenied(_("管理コンソールを利用する権限がありません（府省庁管理者のみ）。"))
            if (edit or request.method not in SAFE_METHODS) and not access.can_edit:
                raise PermissionDenied(_("この操作には府省庁管理者の権限が必要です（閲覧のみの権限です）。"))
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
