"""Platform pages of the console: ministries, the platform budget, cross-ministry usage,
one ministry's local-grant policy.

For ``platform_admin`` (reads and changes) and ``auditor`` (reads only); see
:mod:`.permissions_insight`. Everything here that shows data of more than the
caller's own ministry is first written to the audit chain
(``tenancy.cross_ministry_read``, ``usage.cross_ministry_read``).

Cross-ministry usage does not leave the tenant scope: it enters each
ministry's scope in turn (ORM filter and RLS) through the same selectors a
ministry admin's dashboard uses, with the caller's platform roles as the actor
in that ministry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from apps.accounts.local_roles import DEFAULT_MAX_DAYS, GrantPolicy, grant_policy
from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant, User
from apps.accounts.services import local_grant_policy_set
from apps.audit.services import CROSS_MINISTRY_USAGE_READ, audit_cross_ministry_read
from apps.quotas.limits import platform_limit_set, platform_limits
from apps.quotas.selectors import UsageRow, usage_totals
from apps.tenancy.models import Membership, Ministry, Role
from apps.tenancy.scope import ministry_scope

from .forms_insight import LocalGrantPolicyForm, PeriodForm, PlatformLimitForm
from .permissions_insight import (
    PLATFORM_READER_ROLES,
    is_platform_admin,
    is_platform_reader,
    platform_required,
)

CROSS_MINISTRY_LIST_READ = "tenancy.cross_ministry_read"


def _acting(request: HttpRequest) -> Membership:
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return membership


def _ctx(request: HttpRequest, section: str, **extra: Any) -> dict[str, Any]:
    return {"section": section, "can_edit_platform": is_platform_admin(_acting(request)), **extra}


@require_GET
@platform_required()
def ministry_list(request: HttpRequest) -> HttpResponse:
    """Every ministry with its member, admin and auditor counts (audited: it spans ministries)."""
    acting = _acting(request)
    ministries = Ministry.objects.annotate(
        members=Count("memberships", distinct=True),
        admins=Count(
            "memberships", filter=Q(memberships__roles__contains=[Role.MINISTRY_ADMIN]), distinct=True
        ),
        auditors=Count(
            "memberships", filter=Q(memberships__roles__contains=[Role.MINISTRY_AUDITOR]), distinct=True
        ),
    ).order_by("id")
    audit_cross_ministry_read(
        actor=request.user,
        action=CROSS_MINISTRY_LIST_READ,
        own_ministry_id=acting.ministry_id,
        ministry_id=None,
        data={"page": "ministries"},
    )
    return render(
        request, "console/insight/platform_ministries.html", _ctx(request, "platform", ministries=ministries)
    )


def usage_as_platform_reader(*, acting: Membership, ministry: Ministry, start: date, end: date) -> UsageRow:
    """One ministry's totals, read inside that ministry's scope with the caller's platform roles.

    Security: the actor is an unsaved membership holding only the caller's
    platform-wide roles (never a ministry role) in ``ministry``; the selector
    checks those roles and enters ``ministry``'s scope itself.
    """
    roles = [r for r in acting.roles if r in PLATFORM_READER_ROLES]
    if not roles:
        raise PermissionDenied
    reader = Membership(user_id=acting.user_id, ministry=ministry, roles=roles)
    rows = usage_totals(actor=reader, start=start, end=end)
    return rows[0] if rows else UsageRow(day=None, key=None, label="")


@require_GET
@platform_required()
def usage_overview(request: HttpRequest) -> HttpResponse:
    """Usage totals per ministry over a period (audited as one cross-ministry read)."""
    acting = _acting(request)
    form = PeriodForm(request.GET or None)
    start, end = form.period()
    audit_cross_ministry_read(
        actor=request.user,
        action=CROSS_MINISTRY_USAGE_READ,
        own_ministry_id=acting.ministry_id,
        ministry_id=None,
        data={"start": start, "end": end},
    )
    lines = []
    total = UsageRow(day=None, key=None, label="")
    for ministry in Ministry.objects.filter(active=True).order_by("id"):
        row = usage_as_platform_reader(acting=acting, ministry=ministry, start=start, end=end)
        total.add(row)
        lines.append((ministry, row))
    lines.sort(key=lambda line: (-line[1].cost_yen, -line[1].total_tokens, line[0].pk))
    return render(
        request,
        "console/insight/platform_usage.html",
        _ctx(request, "platform", form=form, start=start, end=end, lines=lines, total=total),
    )


@require_http_methods(["GET", "POST"])
@platform_required()
def platform_budget(request: HttpRequest) -> HttpResponse:
    """The platform budget and limits; POST (platform admins only) sets one row."""
    form = PlatformLimitForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                row = platform_limit_set(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, exc)
                status = 400
            else:
                label = row.alias_name or _("すべてのモデル")
                messages.success(
                    request, _("プラットフォームの上限（%(alias)s）を保存しました。") % {"alias": label}
                )
                return redirect("console:platform_budget")
        else:
            status = 400
    return render(
        request,
        "console/insight/platform_budget.html",
        _ctx(request, "platform", form=form, limits=platform_limits()),
        status=status,
    )


@dataclass(frozen=True)
class LocalGrantState:
    """What the local-grant page shows of one ministry."""

    platform_default: GrantPolicy
    override: LocalGrantPolicy | None
    in_force: GrantPolicy
    #: Unexpired grants per role (role value → count), and their total.
    unexpired_by_role: dict[str, int]
    unexpired: int

    def role_labels(self) -> list[str]:
        """Labels of the roles a ministry admin may grant now (empty: none)."""
        return [str(Role(role).label) for role in self.in_force.grantable_roles()]

    def unexpired_rows(self) -> list[tuple[str, int]]:
        return [(str(Role(role).label), n) for role, n in sorted(self.unexpired_by_role.items())]


def platform_grant_policy() -> GrantPolicy:
    """``GENNAI_LOCAL_ROLE_GRANTS``: what applies to every ministry without an override."""
    platform = dict(getattr(settings, "GENNAI_LOCAL_ROLE_GRANTS", {}) or {})
    return GrantPolicy(
        bool(platform.get("enabled", False)),
        bool(platform.get("allow_ministry_admin", False)),
        int(platform.get("max_days", DEFAULT_MAX_DAYS)),
    )


def local_grant_state_as_platform_reader(*, acting: Membership, ministry: Ministry) -> LocalGrantState:
    """The local-grant policy of ``ministry`` and its number of unexpired grants, for a platform reader.

    Security: the ministry comes from the URL, so the caller's platform roles
    are checked here again (not only by the view's decorator) before that
    ministry's scope is entered (ORM filter and RLS), and only counts and the
    policy row are read. The view audits the read when ``ministry`` is not the
    caller's own.
    """
    if not is_platform_reader(acting):
        raise PermissionDenied
    with ministry_scope(ministry_id=ministry.pk):
        override = LocalGrantPolicy.objects.filter(ministry=ministry).first()
        in_force = grant_policy(ministry_id=ministry.pk)
        by_role = dict(
            LocalRoleGrant.objects.filter(expires_at__gt=timezone.now())
            .order_by()
            .values_list("role")
            .annotate(n=Count("id"))
            .values_list("role", "n")
        )
    return LocalGrantState(
        platform_default=platform_grant_policy(),
        override=override,
        in_force=in_force,
        unexpired_by_role=by_role,
        unexpired=sum(by_role.values()),
    )


def _local_grant_initial(state: LocalGrantState) -> dict[str, Any]:
    if state.override is None:
        return {"mode": "platform_default", "allow_ministry_admin": False}
    return {
        "mode": "enable" if state.override.enabled else "disable",
        "allow_ministry_admin": state.override.allow_ministry_admin,
    }


@require_http_methods(["GET", "POST"])
@platform_required()
def platform_local_grants(request: HttpRequest, ministry_id: int) -> HttpResponse:
    """One ministry's local-grant policy; POST (platform admins only) sets or removes its override.

    The same change as ``manage.py local_grant_policy``, audited with the
    platform admin as the actor; grants the new policy no longer allows are
    revoked at once and their number is in the success message. Showing
    another ministry's policy is an audited cross-ministry read.
    """
    acting = _acting(request)
    ministry = get_object_or_404(Ministry, pk=ministry_id)
    status = 200
    form: LocalGrantPolicyForm | None = None
    if request.method == "POST":
        form = LocalGrantPolicyForm(request.POST)
        if form.is_valid():
            admin: User = request.user  # type: ignore[assignment]  # authenticated (platform_required)
            change = local_grant_policy_set(actor=admin, ministry=ministry, **form.policy_kwargs())
            messages.success(
                request,
                _(
                    "%(ministry)sのローカル付与ポリシーを保存しました。"
                    "新しいポリシーで認められなくなったため取り消した付与: %(count)d件"
                )
                % {"ministry": ministry.name, "count": change.revoked},
            )
            return redirect("console:platform_local_grants", ministry_id=ministry.pk)
        status = 400
    if ministry.pk != acting.ministry_id:
        audit_cross_ministry_read(
            actor=request.user,
            action=CROSS_MINISTRY_LIST_READ,
            own_ministry_id=acting.ministry_id,
            ministry_id=ministry.pk,
            data={"page": "local_grants"},
        )
    state = local_grant_state_as_platform_reader(acting=acting, ministry=ministry)
    if form is None:
        form = LocalGrantPolicyForm(initial=_local_grant_initial(state))
    return render(
        request,
        "console/insight/platform_local_grants.html",
        _ctx(request, "platform", ministry=ministry, state=state, form=form),
        status=status,
    )
