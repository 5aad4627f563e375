"""Local role grants on the member page (府省庁管理者): grant a role for a period, revoke it.

Thin views: :mod:`apps.accounts.services` does the checks (policy, no self-grant,
SSO admins only, mandatory expiry) and the audit. The member is looked up only
through :func:`.selectors.get_member_for_actor` (another ministry's user is 404),
a grant only through :func:`.selectors.get_local_grant_for_actor`.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from apps.accounts.services import local_role_grant, local_role_revoke

from . import selectors
from .forms import LocalRoleGrantForm
from .permissions import console_required
from .views_ministry import acting, member_detail_response


@require_POST
@console_required(edit=True)
def member_grant_create(request: HttpRequest, user_id: int) -> HttpResponse:
    actor = acting(request)
    member = selectors.get_member_for_actor(actor=actor, user_id=user_id)
    policy = selectors.member_grant_policy(actor=actor)
    form = LocalRoleGrantForm(request.POST, roles=policy.grantable_roles())
    if form.is_valid():
        try:
            local_role_grant(
                actor=request.user,  # type: ignore[arg-type]
                ministry=actor.ministry,
                user=member.user,
                role=form.cleaned_data["role"],
                expires_at=form.expires_at(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("役割を期限付きで付与しました。"))
            return redirect("console:member_detail", user_id=member.user_id)
    return member_detail_response(request, member, grant_form=form, status=400)


@require_POST
@console_required(edit=True)
def member_grant_revoke(request: HttpRequest, user_id: int, grant_id: int) -> HttpResponse:
    grant = selectors.get_local_grant_for_actor(actor=acting(request), user_id=user_id, grant_id=grant_id)
    local_role_revoke(actor=request.user, grant=grant)  # type: ignore[arg-type]
    messages.success(request, _("ローカルで付与した役割を取り消しました。"))
    return redirect("console:member_detail", user_id=user_id)
