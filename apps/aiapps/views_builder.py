"""The use-case builder: create/edit apps, preview, share, propose, import/export; catalogue review.

Edits go through ``get_ministry_app_for_actor(editable=True)`` inside the services (only the
owner; 404 for everyone else). Catalogue review needs ``platform_admin`` (checked in the
service, and the page refuses others with 403).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.documents.selectors import workspace_list_for_actor
from apps.registry.router import allowed_aliases
from apps.tenancy.permissions import require_membership

from . import services
from .definition import DEFINITION_KEYS, MAX_FIELDS, clean_definition, render_prompt
from .models import FieldKind, OutputFormat
from .selectors import get_app_for_actor, get_ministry_app_for_actor, proposals_pending

MAX_IMPORT_BYTES = 1024 * 1024  # an exported definition is a few kB
BLANK_ROWS_NEW = 3  # empty rows offered on a new app (more are added with 「項目を追加」)
BLANK_ROW = {"name": "", "label": "", "kind": "text", "options": [], "required": True}


def _row_key() -> str:
    return uuid.uuid4().hex[:12]


def definition_from_post(post: Any) -> dict[str, Any]:
    """The builder form's values as a definition dict (rows without a name are skipped).

    Each row carries a ``field_key``; its 必須 checkbox posts that key, so rows added or removed
    in the page (any order) keep their own checkbox. Without keys the row's position is used.
    """
    names, labels = post.getlist("field_name"), post.getlist("field_label")
    kinds, options = post.getlist("field_kind"), post.getlist("field_options")
    keys = post.getlist("field_key")
    if len(keys) != len(names):
        keys = [str(i) for i in range(len(names))]
    required = set(post.getlist("field_required"))
    fields = []
    for i, name in enumerate(names):
        if not name.strip():
            continue
        fields.append(
            {
                "name": name.strip(),
                "label": labels[i] if i < len(labels) else "",
                "kind": kinds[i] if i < len(kinds) else FieldKind.TEXT,
                "options": [
                    o.strip() for o in (options[i] if i < len(options) else "").split(",") if o.strip()
                ],
                "required": keys[i] in required,
            }
        )
    return {
        "name_ja": post.get("name_ja", ""),
        "name_en": post.get("name_en", ""),
        "description_ja": post.get("description_ja", ""),
        "description_en": post.get("description_en", ""),
        "system_prompt": post.get("system_prompt", ""),
        "prompt_template": post.get("prompt_template", ""),
        "fields": fields,
        "output_format": post.get("output_format", OutputFormat.MARKDOWN),
        "recommended_alias": post.get("recommended_alias", ""),
        "uses_workspace": bool(post.get("uses_workspace")),
    }


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "options_text": ", ".join(row.get("options") or []), "key": _row_key()}


def _form_context(request: HttpRequest, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rows = list(data.get("fields") or [])[:MAX_FIELDS]
    blanks = BLANK_ROWS_NEW if not rows else 1
    rows += [BLANK_ROW] * min(blanks, MAX_FIELDS - len(rows))
    return {
        "data": data,
        "rows": [_row(r) for r in rows],
        "max_fields": MAX_FIELDS,
        "kinds": FieldKind.choices,
        "formats": OutputFormat.choices,
        "aliases": allowed_aliases(level=1),
        "workspaces": workspace_list_for_actor(actor=request.user),
        **extra,
    }


@login_required
@require_membership
def app_new(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        empty = {"prompt_template": "", "fields": [], "output_format": "markdown"}
        return render(request, "aiapps/builder.html", _form_context(request, empty))
    data = definition_from_post(request.POST)
    try:
        app = services.app_create(actor=request.user, data=data, workspace_id=request.POST.get("workspace"))
    except ValidationError as exc:
        return render(
            request, "aiapps/builder.html", _form_context(request, data, errors=exc.messages), status=422
        )
    return HttpResponseRedirect(reverse("aiapps:app_edit", args=[app.pk]))


@login_required
@require_membership
def app_edit(request: HttpRequest, app_id: int) -> HttpResponse:
    app = get_ministry_app_for_actor(actor=request.user, app_id=app_id, editable=True)
    if request.method != "POST":
        data = {k: getattr(app, k) for k in DEFINITION_KEYS}
        return render(request, "aiapps/builder.html", _form_context(request, data, app=app))
    data = definition_from_post(request.POST)
    try:
        app = services.app_update(
            actor=request.user, app_id=app.pk, data=data, workspace_id=request.POST.get("workspace")
        )
    except ValidationError as exc:
        context = _form_context(request, data, app=app, errors=exc.messages)
        return render(request, "aiapps/builder.html", context, status=422)
    return render(request, "aiapps/builder.html", _form_context(request, data, app=app, saved=True))


@login_required
@require_membership
@require_GET
def field_row(request: HttpRequest) -> HttpResponse:
    """htmx: one more empty field row (「項目を追加」), up to ``MAX_FIELDS`` rows in the form.

    ``field_key`` values of the rows already in the form are sent along (hx-include), so the
    limit is checked here; at the limit the note under the rows says so and no row is added.
    """
    if len(request.GET.getlist("field_key")) >= MAX_FIELDS:
        response = render(request, "aiapps/_field_limit.html", {"max_fields": MAX_FIELDS})
        response["HX-Retarget"] = "#field-rows-note"
        response["HX-Reswap"] = "innerHTML"
        return response
    context = {"r": _row(BLANK_ROW), "kinds": FieldKind.choices}
    return render(request, "aiapps/_field_row.html", context)


@login_required
@require_membership
@require_GET
def field_row_remove(request: HttpRequest) -> HttpResponse:
    """htmx: removing a row (the button's ``hx-swap="delete"`` drops the row; nothing to send)."""
    return HttpResponse("")


@login_required
@require_membership
@require_POST
def preview(request: HttpRequest) -> HttpResponse:
    """The prompt rendered with sample inputs (``sample_<name>``); no model is called."""
    data = definition_from_post(request.POST)
    try:
        cleaned = clean_definition(data)
    except ValidationError as exc:
        return render(request, "aiapps/_preview.html", {"errors": exc.messages}, status=422)
    samples = {
        f["name"]: request.POST.get(f"sample_{f['name']}") or f"〈{f['label']}〉" for f in cleaned["fields"]
    }
    try:
        prompt = render_prompt(cleaned["prompt_template"], samples)  # bounded: see render_prompt
    except ValidationError as exc:
        return render(request, "aiapps/_preview.html", {"errors": exc.messages}, status=422)
    context = {"system_prompt": cleaned["system_prompt"], "prompt": prompt}
    return render(request, "aiapps/_preview.html", context)


@login_required
@require_membership
@require_POST
def app_visibility(request: HttpRequest, app_id: int) -> HttpResponse:
    try:
        services.app_set_visibility(
            actor=request.user, app_id=app_id, visibility=request.POST.get("visibility", "")
        )
    except ValidationError as exc:  # a value the form never offers: the page again, with the reason
        app = get_ministry_app_for_actor(actor=request.user, app_id=app_id, editable=True)
        data = {k: getattr(app, k) for k in DEFINITION_KEYS}
        context = _form_context(request, data, app=app, errors=exc.messages)
        return render(request, "aiapps/builder.html", context, status=400)
    return HttpResponseRedirect(reverse("aiapps:app_edit", args=[app_id]))


@login_required
@require_membership
@require_POST
def app_propose(request: HttpRequest, app_id: int) -> HttpResponse:
    try:
        services.app_propose(actor=request.user, app_id=app_id)
    except ValidationError:
        pass  # already proposed: the page shows the state
    return HttpResponseRedirect(reverse("aiapps:app_edit", args=[app_id]))


@login_required
@require_membership
@require_POST
def app_delete(request: HttpRequest, app_id: int) -> HttpResponse:
    services.app_delete(actor=request.user, app_id=app_id)
    return HttpResponseRedirect(reverse("aiapps:catalogue"))


@login_required
@require_membership
@require_GET
def app_export(request: HttpRequest, ref: str) -> HttpResponse:
    app = get_app_for_actor(actor=request.user, ref=ref)
    body = json.dumps(services.app_export(app=app), ensure_ascii=False, indent=2)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="gennai-app-{ref}.json"'
    return response


@login_required
@require_membership
def app_import(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "aiapps/import.html", {})
    upload = request.FILES.get("file")
    try:
        if upload is None or (upload.size or 0) > MAX_IMPORT_BYTES:
            raise ValidationError(_("アプリ定義ファイルは1MBまでです。"))
        app = services.app_import(actor=request.user, raw=upload.read())
    except ValidationError as exc:
        return render(request, "aiapps/import.html", {"errors": exc.messages}, status=422)
    return HttpResponseRedirect(reverse("aiapps:app_edit", args=[app.pk]))


@login_required
@require_membership
def proposals(request: HttpRequest) -> HttpResponse:
    """Platform admins: catalogue proposals waiting for a decision."""
    membership = request.membership  # type: ignore[attr-defined]
    if not membership.has_role("platform_admin"):
        raise PermissionDenied("platform_admin required")
    if request.method == "POST":
        try:
            services.proposal_decide(
                actor=request.user,
                platform_app_id=int(request.POST.get("platform_app", "0") or 0),
                approve=request.POST.get("decision") == "approve",
            )
        except (ValidationError, ValueError):
            pass  # decided already (another admin): the list shows what is left
        return HttpResponseRedirect(reverse("aiapps:proposals"))
    return render(request, "aiapps/proposals.html", {"proposals": proposals_pending()})
