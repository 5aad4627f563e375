"""Ministry-admin console page for API keys (``/gateway/keys/``)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from apps.registry.router import allowed_aliases
from apps.tenancy.models import Role
from apps.tenancy.permissions import require_role

from .forms import ApiKeyCreateForm
from .selectors import api_key_list, get_api_key_for_actor
from .services import api_key_create, api_key_revoke, max_lifetime


@login_required
@require_role(Role.MINISTRY_ADMIN)
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    """List the ministry's keys; POST creates one and shows its plaintext on this response only."""
    membership = request.membership  # type: ignore[attr-defined]
    alias_names = [a.name for a in allowed_aliases()]
    created_key = plaintext = None
    status = 200
    if request.method == "POST":
        form = ApiKeyCreateForm(request.POST, alias_names=alias_names, max_lifetime=max_lifetime())
        if form.is_valid():
            try:
                created_key, plaintext = api_key_create(
                    actor=request.user,
                    ministry=membership.ministry,
                    name=form.cleaned_data["name"],
                    aliases=form.cleaned_data["aliases"],
                    max_level=form.cleaned_data["max_level"],
                    expires_at=form.cleaned_data["expires_at"],
                )
                form = ApiKeyCreateForm(alias_names=alias_names, max_lifetime=max_lifetime())
            except ValidationError as exc:
                form.add_error(None, exc)
                status = 400
        else:
            status = 400
    else:
        form = ApiKeyCreateForm(alias_names=alias_names, max_lifetime=max_lifetime())
    response = render(
        request,
        "gateway/keys.html",
        {
            "keys": api_key_list(ministry_id=membership.ministry_id),
            "form": form,
            "created_key": created_key,
            "plaintext": plaintext,
        },
        status=status,
    )
    if plaintext:
        response["Cache-Control"] = "no-store"  # the key must not linger in any cache
    return response


@login_required
@require_role(Role.MINISTRY_ADMIN)
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_api_key_for_actor(actor=request.membership, key_id=key_id)  # type: ignore[attr-defined]
    api_key_revoke(actor=request.user, key=key)
    messages.success(request, _("APIキー「%(name)s」を失効させました。") % {"name": key.name})
    return redirect("gateway:key_list")
