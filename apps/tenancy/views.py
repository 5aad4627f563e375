"""Home page, ministry switcher and health endpoints."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from apps.console.selectors import announcement_list

from . import health
from .middleware import SESSION_KEY
from .selectors import membership_for_user


def home(request: HttpRequest) -> HttpResponse:
    context: dict[str, object] = {"announcements": []}
    if getattr(request, "membership", None) is not None:
        context["announcements"] = list(announcement_list(limit=10))
    elif request.user.is_authenticated:
        messages.warning(request, _("所属する府省庁がありません。管理者に連絡してください。"))
    return render(request, "home.html", context)


@login_required
@require_POST
def switch_ministry(request: HttpRequest) -> HttpResponse:
    """Make another of the user's own memberships the active one.

    Security: the code is accepted only if the user is a member of it; the
    middleware re-checks the membership on every request.
    """
    code = request.POST.get("ministry", "")
    membership = membership_for_user(user=request.user, ministry_code=code)  # type: ignore[arg-type]
    if membership is None or membership.ministry.code != code:
        messages.error(request, _("この府省庁への所属がありません。"))
    else:
        request.session[SESSION_KEY] = code
        messages.success(request, _("府省庁を切り替えました。"))
    next_url = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = "/"
    return HttpResponseRedirect(next_url)


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. No dependencies checked."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: the critical dependencies answer (503 if not); others may mark it "degraded".

    Security: the endpoint is unauthenticated (probes), so with
    ``GENNAI_READYZ_DETAILS`` off (production's default) each check shows only
    ``ok``: no versions, backends, deployment counts, exception class names or
    timings for anyone on the network.
    """
    checks = health.run_checks()
    ready = all(c["ok"] for name, c in checks.items() if name in health.CRITICAL)
    degraded = not all(c["ok"] for c in checks.values())
    status = "unavailable" if not ready else ("degraded" if degraded else "ok")
    if not settings.GENNAI_READYZ_DETAILS:
        checks = {name: {"ok": check["ok"]} for name, check in checks.items()}
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)
