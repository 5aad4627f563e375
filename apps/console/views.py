from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.tenancy.permissions import require_membership

from .selectors import get_announcement_for_actor


@require_GET
@login_required
@require_membership
def announcement_detail(request: HttpRequest, announcement_id: int) -> HttpResponse:
    announcement = get_announcement_for_actor(actor=request.user, announcement_id=announcement_id)  # type: ignore[arg-type]
    return render(request, "console/announcement_detail.html", {"announcement": announcement})
