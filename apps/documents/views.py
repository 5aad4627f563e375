"""Workspace and document pages (HTMX, progressive enhancement; thin: selectors and services do the work).

Every object comes through :mod:`apps.documents.selectors`, so a non-member and
another ministry's user get the same 404 as for a missing id on every URL:
pages, the progress fragment, the download and the delete actions.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.audit.events import DOCUMENT_DOWNLOAD, audit_document_access
from apps.registry.models import Clearance
from apps.tenancy.permissions import require_membership

from . import permissions, services
from .models import WorkspaceKind
from .selectors import (
    document_list,
    get_document_for_actor,
    get_workspace_for_actor,
    member_list,
    workspace_list_for_actor,
)
from .storage import documents_storage

PAGE_SIZE = 25
HTMX_STOP_POLLING = 286


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)  # type: ignore[attr-defined]


@login_required
@require_membership
def workspace_list(request: HttpRequest) -> HttpResponse:
    """GET: my workspaces (paginated). POST: create one."""
    errors: list[str] = []
    if request.method == "POST":
        try:
            level = int(request.POST.get("level", "1"))
        except ValueError:
            level = 0
        try:
            workspace = services.workspace_create(
                actor=request.user,
                name=request.POST.get("name", ""),
                kind=request.POST.get("kind", WorkspaceKind.PERSONAL),
                level=level,
            )
        except ValidationError:
            errors.append(str(_("名前、種類、機密性を正しく入力してください。")))
        else:
            return _redirect(request, workspace.get_absolute_url())
    page = Paginator(workspace_list_for_actor(actor=request.user), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "documents/workspace_list.html",
        {"page": page, "errors": errors, "kinds": WorkspaceKind.choices, "levels": Clearance.choices},
        status=422 if errors else 200,
    )


def _workspace_context(request: HttpRequest, workspace: Any, **extra: Any) -> dict[str, Any]:
    page = Paginator(document_list(workspace=workspace), PAGE_SIZE).get_page(request.GET.get("page"))
    role = permissions.role_of(workspace)
    return {
        "workspace": workspace,
        "page": page,
        "can_upload": permissions.can_upload(role),
        "can_manage": permissions.can_manage(role),
        "language": translation.get_language() or "ja",
        **extra,
    }


@login_required
@require_membership
@require_GET
def workspace_detail(request: HttpRequest, workspace_id: int) -> HttpResponse:
    workspace = get_workspace_for_actor(actor=request.user, workspace_id=workspace_id)
    return render(request, "documents/workspace.html", _workspace_context(request, workspace))


@login_required
@require_membership
@require_POST
def document_upload(request: HttpRequest, workspace_id: int) -> HttpResponse:
    """Several files at once; each gets its own result line (refusals with their reason)."""
    workspace = get_workspace_for_actor(actor=request.user, workspace_id=workspace_id)
    files = request.FILES.getlist("files")
    results = services.document_upload(actor=request.user, workspace=workspace, files=files)
    context = _workspace_context(request, workspace, results=results)
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "documents/_upload_results.html", context)
    return render(request, "documents/workspace.html", context)


@login_required
@require_membership
@require_GET
def document_status(request: HttpRequest, document_id: int) -> HttpResponse:
    """The progress fragment a row polls every 1.5 s until the document is ready or failed.

    A polling request (HTMX) for a document that is not visible (deleted meanwhile,
    or never the actor's: the same answer) gets 286, htmx's "stop polling", with an
    empty body, which removes the row; other requests get the usual 404.
    """
    try:
        document = get_document_for_actor(actor=request.user, document_id=document_id)
    except Http404:
        if request.htmx:  # type: ignore[attr-defined]
            return HttpResponse(status=HTMX_STOP_POLLING)
        raise
    return render(
        request,
        "documents/_document_row.html",
        {
            "document": document,
            "language": translation.get_language() or "ja",
            "can_upload": permissions.can_upload(permissions.role_of(document.workspace)),
        },
    )


@login_required
@require_membership  # type: ignore[arg-type]  # a FileResponse streams; the decorator only passes it on
@require_GET
def document_download(request: HttpRequest, document_id: int) -> HttpResponseBase:
    """The original file, as an attachment (never rendered inline: it is user content)."""
    document = get_document_for_actor(actor=request.user, document_id=document_id)
    handle = documents_storage().open(document.storage_name, "rb")
    audit_document_access(actor=request.user, document=document, action=DOCUMENT_DOWNLOAD)
    response = FileResponse(handle, as_attachment=True, filename=document.filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_membership
def document_delete(request: HttpRequest, document_id: int) -> HttpResponse:
    """GET: confirmation (without JavaScript). POST: delete."""
    document = get_document_for_actor(actor=request.user, document_id=document_id)
    if request.method != "POST":
        return render(request, "documents/confirm_delete.html", {"document": document})
    services.document_delete(actor=request.user, document=document)
    return _redirect(request, reverse("documents:workspace", args=[document.workspace_id]))


@login_required
@require_membership
def workspace_delete(request: HttpRequest, workspace_id: int) -> HttpResponse:
    workspace = get_workspace_for_actor(actor=request.user, workspace_id=workspace_id)
    if not permissions.can_manage(permissions.role_of(workspace)):
        raise PermissionDenied
    if request.method != "POST":
        return render(request, "documents/confirm_delete.html", {"workspace": workspace})
    services.workspace_delete(actor=request.user, workspace=workspace)
    return _redirect(request, reverse("documents:index"))


@login_required
@require_membership
def workspace_members(request: HttpRequest, workspace_id: int) -> HttpResponse:
    """Members of a shared workspace; the owner adds, changes and removes them."""
    workspace = get_workspace_for_actor(actor=request.user, workspace_id=workspace_id)
    if not permissions.can_have_members(workspace):
        raise PermissionDenied
    errors: list[str] = []
    if request.method == "POST":
        try:
            if request.POST.get("remove"):
                services.workspace_member_remove(
                    actor=request.user, workspace=workspace, member_id=int(request.POST["remove"])
                )
            else:
                services.workspace_member_set(
                    actor=request.user,
                    workspace=workspace,
                    username=request.POST.get("username", ""),
                    role=request.POST.get("role", ""),
                )
        except (ValidationError, ValueError):
            errors.append(str(_("この府省庁の利用者名と役割を指定してください。")))
        else:
            return _redirect(request, reverse("documents:members", args=[workspace.pk]))
    return render(
        request,
        "documents/members.html",
        {
            "workspace": workspace,
            "members": member_list(workspace=workspace),
            "can_manage": permissions.can_manage(permissions.role_of(workspace)),
            "errors": errors,
        },
        status=422 if errors else 200,
    )


def _(text: str) -> str:
    return translation.gettext(text)
