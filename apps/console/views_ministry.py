"""Ministry console pages (府省庁管理者): overview, members, teams, model allowlist, retention.

Thin views: reads come from :mod:`.selectors`, every write goes through
:mod:`.services` (transactional, audited). Every view is wrapped in
:func:`.permissions.console_required`: the active membership must be
``ministry_admin`` (or ``ministry_auditor`` for read pages), and objects are
looked up by id only through ``get_*_for_actor`` selectors (another ministry's
id is the same 404 as a missing one). Budgets and limits: :mod:`.views_limits`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.tenancy.models import Membership

from . import selectors, services
from .forms import LocalRoleGrantForm, RetentionForm, TeamCreateForm, TeamMemberAddForm, TeamRenameForm
from .permissions import console_access, console_required

PAGE_SIZE = 50


def page_of(request: HttpRequest, queryset: QuerySet[Any]) -> Page[Any]:
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def acting(request: HttpRequest) -> Membership:
    """The request's active membership (the console decorator guarantees one)."""
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return membership


def ctx(request: HttpRequest, section: str, **extra: Any) -> dict[str, Any]:
    return {"section": section, "can_edit": console_access(request).can_edit, **extra}


def post_data(request: HttpRequest) -> Any:
    """Bind forms on every POST, even an empty one (``request.POST or None`` would not)."""
    return request.POST if request.method == "POST" else None


def is_htmx(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


# --- Overview ----------------------------------------------------------------------------------


@require_GET
@console_required()
def home(request: HttpRequest) -> HttpResponse:
    counts = selectors.console_overview(actor=acting(request))
    return render(request, "console/ministry/home.html", ctx(request, "home", counts=counts))


# --- Members -----------------------------------------------------------------------------------


@require_GET
@console_required()
def member_list(request: HttpRequest) -> HttpResponse:
    """Members of the ministry; roles come from the IdP and are shown read-only. HTMX: table only."""
    query = request.GET.get("q", "")[:100]
    page = page_of(request, selectors.member_list(actor=acting(request), query=query))
    context = ctx(request, "members", page=page, query=query)
    if is_htmx(request):  # the search box swaps just the table
        return render(request, "console/ministry/_member_table.html", context)
    return render(request, "console/ministry/member_list.html", context)


@require_GET
@console_required()
def member_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    member = selectors.get_member_for_actor(actor=acting(request), user_id=user_id)
    return member_detail_response(request, member)


def member_detail_response(
    request: HttpRequest, member: Membership, *, grant_form: Any = None, status: int = 200
) -> HttpResponse:
    """The member page: SSO roles (read-only), local grants (where the policy allows), teams, usage."""
    actor = acting(request)
    policy = selectors.member_grant_policy(actor=actor)
    can_grant = (
        console_access(request).can_edit
        and bool(policy.grantable_roles())
        and member.user_id != actor.user_id
    )
    if grant_form is None and can_grant:
        grant_form = LocalRoleGrantForm(roles=policy.grantable_roles())
    context = ctx(
        request,
        "members",
        member=member,
        local_grants=selectors.member_local_grants(member=member),
        grant_policy=policy,
        grant_form=grant_form if can_grant else None,
        team_memberships=selectors.member_team_memberships(user=member.user),
        usage=selectors.member_usage_summary(user=member.user),
        limits=selectors.member_limits(actor=request.user, user=member.user),  # type: ignore[arg-type]
    )
    return render(request, "console/ministry/member_detail.html", context, status=status)


# --- Teams -------------------------------------------------------------------------------------


@require_GET
@console_required()
def team_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:100]
    page = page_of(request, selectors.team_list(query=query))
    return render(request, "console/ministry/team_list.html", ctx(request, "teams", page=page, query=query))


@require_http_methods(["GET", "POST"])
@console_required(edit=True)
def team_create(request: HttpRequest) -> HttpResponse:
    form = TeamCreateForm(post_data(request))
    if form.is_valid():
        try:
            team = services.team_create(
                actor=request.user,  # type: ignore[arg-type]
                ministry=acting(request).ministry,
                code=form.cleaned_data["code"],
                name=form.cleaned_data["name"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("チーム「%(name)s」を作成しました。") % {"name": team.name})
            return redirect("console:team_detail", team_id=team.pk)
    status = 400 if form.is_bound else 200
    return render(
        request,
        "console/ministry/form.html",
        ctx(request, "teams", form=form, title=_("チームを作成"), cancel_url="console:team_list"),
        status=status,
    )


def _team_page(request: HttpRequest, team: Any, **forms: Any) -> dict[str, Any]:
    actor = acting(request)
    in_team = team.memberships.values("user_id")
    candidates = selectors.ministry_users(actor=actor).exclude(pk__in=in_team)
    return ctx(
        request,
        "teams",
        team=team,
        rows=selectors.team_memberships(team=team),
        add_form=forms.get("add_form") or TeamMemberAddForm(users=candidates),
        rename_form=forms.get("rename_form") or TeamRenameForm(initial={"name": team.name}),
    )


@require_GET
@console_required()
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    team = selectors.get_team_for_actor(actor=acting(request), team_id=team_id)
    return render(request, "console/ministry/team_detail.html", _team_page(request, team))


@require_POST
@console_required(edit=True)
def team_rename(request: HttpRequest, team_id: int) -> HttpResponse:
    team = selectors.get_team_for_actor(actor=acting(request), team_id=team_id)
    form = TeamRenameForm(request.POST)
    if form.is_valid():
        services.team_rename(
            actor=request.user,  # type: ignore[arg-type]
            ministry=acting(request).ministry,
            team=team,
            name=form.cleaned_data["name"],
        )
        messages.success(request, _("チーム名を変更しました。"))
        return redirect("console:team_detail", team_id=team.pk)
    return render(
        request, "console/ministry/team_detail.html", _team_page(request, team, rename_form=form), status=400
    )


@require_http_methods(["GET", "POST"])
@console_required(edit=True)
def team_delete(request: HttpRequest, team_id: int) -> HttpResponse:
    """GET: confirmation page; POST: delete (local teams only; SSO teams are refused by the service)."""
    team = selectors.get_team_for_actor(actor=acting(request), team_id=team_id)
    error = ""
    if request.method == "POST":
        try:
            services.team_delete(actor=request.user, ministry=acting(request).ministry, team=team)  # type: ignore[arg-type]
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            messages.success(request, _("チーム「%(name)s」を削除しました。") % {"name": team.name})
            return redirect("console:team_list")
    return render(
        request,
        "console/ministry/team_delete.html",
        ctx(request, "teams", team=team, error=error),
        status=400 if error else 200,
    )


@require_POST
@console_required(edit=True)
def team_member_add(request: HttpRequest, team_id: int) -> HttpResponse:
    actor = acting(request)
    team = selectors.get_team_for_actor(actor=actor, team_id=team_id)
    candidates = selectors.ministry_users(actor=actor).exclude(pk__in=team.memberships.values("user_id"))
    form = TeamMemberAddForm(request.POST, users=candidates)
    if form.is_valid():
        try:
            services.team_member_add(
                actor=request.user,  # type: ignore[arg-type]
                ministry=actor.ministry,
                team=team,
                user=form.cleaned_data["user"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("チームにメンバーを追加しました。"))
            return redirect("console:team_detail", team_id=team.pk)
    return render(
        request, "console/ministry/team_detail.html", _team_page(request, team, add_form=form), status=400
    )


@require_POST
@console_required(edit=True)
def team_member_remove(request: HttpRequest, team_id: int, team_membership_id: int) -> HttpResponse:
    actor = acting(request)
    team = selectors.get_team_for_actor(actor=actor, team_id=team_id)
    row = selectors.get_team_membership_for_actor(
        actor=actor, team=team, team_membership_id=team_membership_id
    )
    try:
        services.team_member_remove(actor=request.user, ministry=actor.ministry, team_membership=row)  # type: ignore[arg-type]
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _("チームからメンバーを外しました。"))
    return redirect("console:team_detail", team_id=team.pk)


# --- Model allowlist ---------------------------------------------------------------------------


@require_GET
@console_required()
def model_list(request: HttpRequest) -> HttpResponse:
    rows = selectors.alias_allowlist(actor=acting(request))
    return render(request, "console/ministry/model_list.html", ctx(request, "models", rows=rows))


def _model_toggle(request: HttpRequest, alias_id: int, *, allow: bool) -> HttpResponse:
    actor = acting(request)
    alias = selectors.get_alias_for_console(alias_id=alias_id)
    if allow:
        services.ministry_alias_allow(actor=request.user, ministry=actor.ministry, alias=alias)  # type: ignore[arg-type]
        done = _("「%(alias)s」の利用を許可しました。")
    else:
        services.ministry_alias_disallow(actor=request.user, ministry=actor.ministry, alias=alias)  # type: ignore[arg-type]
        done = _("「%(alias)s」の利用許可を取り消しました。")
    if is_htmx(request):  # swap just the row
        row = next(r for r in selectors.alias_allowlist(actor=actor) if r.alias.pk == alias.pk)
        return render(request, "console/ministry/_model_row.html", ctx(request, "models", row=row))
    messages.success(request, done % {"alias": alias.name})
    return redirect("console:model_list")


@require_POST
@console_required(edit=True)
def model_allow(request: HttpRequest, alias_id: int) -> HttpResponse:
    return _model_toggle(request, alias_id, allow=True)


@require_POST
@console_required(edit=True)
def model_disallow(request: HttpRequest, alias_id: int) -> HttpResponse:
    return _model_toggle(request, alias_id, allow=False)


# --- Retention ---------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@console_required()
def retention(request: HttpRequest) -> HttpResponse:
    """View the document retention; admins change it (POST needs ministry_admin: the decorator)."""
    current = selectors.document_retention()
    form = RetentionForm(post_data(request), initial={"days": current.days if current else None})
    if request.method == "POST" and form.is_valid():
        services.document_retention_set(
            actor=request.user,  # type: ignore[arg-type]
            ministry=acting(request).ministry,
            days=form.cleaned_data["days"],
        )
        messages.success(request, _("文書の保存期間を更新しました。"))
        return redirect("console:retention")
    return render(
        request,
        "console/ministry/retention.html",
        ctx(request, "retention", form=form, current=current),
        status=400 if form.is_bound else 200,
    )
