"""Ministry console: budgets and limits (予算・制限) per ministry, team, user and API key.

Reads and writes go through :mod:`apps.quotas.limits` (owned by the quotas app):
``limit_set`` / ``limit_delete`` check the actor's role in the active ministry,
validate the subject against it, audit the change and bump the limits cache
version, so admission on every process sees the change within a second.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from apps.quotas.budget_models import LimitLevel
from apps.quotas.limits import get_limit_for_actor, limit_delete, limit_set, limits_for_ministry
from apps.tenancy.models import Team

from . import selectors
from .forms import LimitCreateForm, LimitValuesForm
from .permissions import console_required
from .views_ministry import acting, ctx, page_of, post_data


def _create_form(request: HttpRequest) -> LimitCreateForm:
    actor = acting(request)
    initial = {k: request.GET.get(k) for k in ("level", "team", "user", "api_key") if request.GET.get(k)}
    return LimitCreateForm(
        post_data(request),
        initial=initial,
        levels=list(LimitLevel.choices),
        teams=Team.objects.order_by("code"),  # scoped manager: the active ministry's teams only
        users=selectors.ministry_users(actor=actor),
        api_keys=selectors.ministry_api_keys(actor=actor).filter(revoked_at__isnull=True),
        alias_names=selectors.granted_alias_names(actor=actor),
    )


@require_GET
@console_required()
def limit_list(request: HttpRequest) -> HttpResponse:
    level = request.GET.get("level", "")
    rows = limits_for_ministry(actor=request.user)
    if level in LimitLevel.values:
        rows = rows.filter(level=level)
    else:
        level = ""
    context = ctx(request, "limits", page=page_of(request, rows), level=level, levels=LimitLevel.choices)
    return render(request, "console/ministry/limit_list.html", context)


@require_http_methods(["GET", "POST"])
@console_required(edit=True)
def limit_create(request: HttpRequest) -> HttpResponse:
    form = _create_form(request)
    if form.is_valid():
        data = form.cleaned_data
        try:
            limit_set(
                actor=request.user,
                level=data["level"],
                team=data["team"],
                user=data["user"],
                api_key=data["api_key"],
                alias_name=data["alias_name"] or "",
                **form.values(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("予算・制限を保存しました。"))
            return redirect("console:limit_list")
    return render(
        request,
        "console/ministry/form.html",
        ctx(
            request,
            "limits",
            form=form,
            title=_("予算・制限を追加"),
            intro=_("同じ対象とモデルの制限が既にある場合は、その値を置き換えます。空欄の項目は無制限です。"),
            cancel_url="console:limit_list",
        ),
        status=400 if form.is_bound else 200,
    )


@require_http_methods(["GET", "POST"])
@console_required(edit=True)
def limit_edit(request: HttpRequest, limit_id: int) -> HttpResponse:
    """Change the values of one limit row; its subject and alias stay (delete and add to move it)."""
    row = get_limit_for_actor(actor=request.user, limit_id=limit_id)
    initial = {name: getattr(row, name) for name in LimitValuesForm.VALUE_FIELDS}
    has_subject = (row.team_id or row.user_id or row.api_key_id) is not None
    form = LimitValuesForm(post_data(request), initial=initial, exemption_allowed=has_subject)
    if form.is_valid():
        try:
            limit_set(
                actor=request.user,
                level=row.level,
                team=row.team,
                user=row.user,
                api_key=row.api_key,
                alias_name=row.alias_name,
                **form.values(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("予算・制限を保存しました。"))
            return redirect("console:limit_list")
    return render(
        request,
        "console/ministry/limit_edit.html",
        ctx(request, "limits", form=form, limit=row),
        status=400 if form.is_bound else 200,
    )


@require_http_methods(["GET", "POST"])
@console_required(edit=True)
def limit_delete_view(request: HttpRequest, limit_id: int) -> HttpResponse:
    row = get_limit_for_actor(actor=request.user, limit_id=limit_id)
    if request.method == "POST":
        limit_delete(actor=request.user, limit_id=row.pk)
        messages.success(request, _("予算・制限を削除しました。"))
        return redirect("console:limit_list")
    return render(request, "console/ministry/limit_delete.html", ctx(request, "limits", limit=row))
