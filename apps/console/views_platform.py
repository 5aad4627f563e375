"""Platform pages of the console: ministries, the platform budget, cross-ministry usage.

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

from datetime import date
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from apps.audit.services import CROSS_MINISTRY_USAGE_READ, audit_cross_ministry_read
from apps.quotas.limits import platform_limit_set, platform_limits
from apps.quotas.selectors import UsageRow, usage_totals
from apps.tenancy.models import Membership, Ministry, Role

from .forms_insight import PeriodForm, PlatformLimitForm
from .permissions_insight import PLATFORM_READER_ROLES, is_platform_admin, platform_required

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
