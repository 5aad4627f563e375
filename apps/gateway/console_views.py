"""Ministry-admin console page for API keys (``/gateway/keys/``)."""

from __future__ import annotations

from typing import Any

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

from .forms import ApiKeyCreateForm, ApiKeyWorkspacesForm
from .models import ApiKey
from .selectors import api_key_list, get_api_key_for_actor, key_workspace_choices, workspace_names
from .services import api_key_create, api_key_revoke, api_key_set_workspaces, max_lifetime


@login_required
@require_role(Role.MINISTRY_ADMIN)
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    """List the ministry's keys; POST creates one and shows its plaintext on this response only."""
    membership = request.membership  # type: ignore[attr-defined]
    alias_names = [a.name for a in allowed_aliases()]
    workspace_choices = key_workspace_choices(ministry_id=membership.ministry_id)

    def new_form(data: Any = None) -> ApiKeyCreateForm:
        return ApiKeyCreateForm(
            data, alias_names=alias_names, workspace_choices=workspace_choices, max_lifetime=max_lifetime()
        )

    created_key = plaintext = None
    status = 200
    if request.method == "POST":
        form = new_form(request.POST)
        if form.is_valid():
            try:
                created_key, plaintext = api_key_create(
                    actor=request.user,
                    ministry=membership.ministry,
                    name=form.cleaned_data["name"],
                    aliases=form.cleaned_data["aliases"],
                    max_level=form.cleaned_data["max_level"],
                    expires_at=form.cleaned_data["expires_at"],
                    workspace_ids=form.cleaned_data["workspaces"],
                )
                form = new_form()
            except ValidationError as exc:
                form.add_error(None, exc)
                status = 400
        else:
            status = 400
    else:
        form = new_form()
    response = render(
        request,
        "gateway/keys.html",
        {
            "keys": _with_workspace_labels(
                list(api_key_list(ministry_id=membership.ministry_id)), ministry_id=membership.ministry_id
            ),
            "form": form,
            "workspace_choices": workspace_choices,
            "created_key": created_key,
            "plaintext": plaintext,
        },
        status=status,
    )
    if plaintext:
        response["Cache-Control"] = "no-store"  # the key must not linger in any cache
    return response


def _with_workspace_labels(keys: list[ApiKey], *, ministry_id: int) -> list[ApiKey]:
    """Give each key ``workspace_labels``: the names of its /v1/search workspaces (a deleted one by id)."""
    ids = {i for key in keys for i in key.allowed_workspace_ids}
    names = workspace_names(ministry_id=ministry_id, workspace_ids=ids)
    for key in keys:
        key.workspace_labels = [  # type: ignore[attr-defined]
            names.get(i, _("#%(id)d（削除済み）") % {"id": i}) for i in key.allowed_workspace_ids
        ]
    return keys


@login_required
@require_role(Role.MINISTRY_ADMIN)
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_api_key_for_actor(actor=request.membership, key_id=key_id)  # type: ignore[attr-defined]
    api_key_revoke(actor=request.user, key=key)
    messages.success(request, _("APIキー「%(name)s」を失効させました。") % {"name": key.name})
    return redirect("gateway:key_list")


@login_required
@require_role(Role.MINISTRY_ADMIN)
@require_POST
def key_workspaces(request: HttpRequest, key_id: int) -> HttpResponse:
    """Change which shared workspaces a key may search (another ministry's key: 404)."""
    membership = request.membership  # type: ignore[attr-defined]
    key = get_api_key_for_actor(actor=membership, key_id=key_id)
    form = ApiKeyWorkspacesForm(
        request.POST, workspace_choices=key_workspace_choices(ministry_id=membership.ministry_id)
    )
    if not form.is_valid():
        messages.error(request, _("この府省庁の共有ワークスペースを選んでください。"))
        return redirect("gateway:key_list")
    try:
        api_key_set_workspaces(actor=request.user, key=key, workspace_ids=form.cleaned_data["workspaces"])
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _("APIキー「%(name)s」の検索対象を変更しました。") % {"name": key.name})
    return redirect("gateway:key_list")
