"""Procurement screens of the model registry (調達担当).

Thin views: reads come from :mod:`.selectors`, every write goes through
:mod:`.services` (transactional, audited, snapshot invalidated after commit).
Access is checked by :func:`.permissions.registry_required` on every view.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import approvals, selectors, services
from .forms import (
    AliasForm,
    AliasGrantForm,
    AliasRollbackForm,
    AliasRoutesForm,
    DeploymentForm,
    ModelEntryForm,
    StyledModelForm,
    VendorForm,
)
from .models import Alias, ChangeRequest
from .permissions import registry_access, registry_required

PAGE_SIZE = 25


def _page(request: HttpRequest, queryset: QuerySet[Any], *, param: str = "page") -> Page[Any]:
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get(param))


def _post_data(request: HttpRequest) -> Any:
    """Bind forms on every POST, even an empty one (``request.POST or None`` would not)."""
    return request.POST if request.method == "POST" else None


def _htmx(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


def _ctx(request: HttpRequest, section: str, **extra: Any) -> dict[str, Any]:
    return {
        "section": section,
        "can_edit": registry_access(request).can_edit,
        "pending_change_count": selectors.change_request_pending_count(),
        **extra,
    }


# --- Dashboard ------------------------------------------------------------------------------


@require_GET
@registry_required()
def dashboard(request: HttpRequest) -> HttpResponse:
    """Health at a glance: aliases with their current weights, deployments with health and circuit."""
    aliases = [(alias, selectors.alias_current_routes(alias)) for alias in selectors.alias_list()]
    context = _ctx(
        request,
        "dashboard",
        aliases=aliases,
        health_rows=selectors.deployment_health_rows(selectors.deployment_list()),
    )
    if _htmx(request):  # the periodic refresh swaps just the health panel
        return render(request, "registry/_dashboard_health.html", context)
    return render(request, "registry/dashboard.html", context)


# --- Vendors, models, deployments: list / create / edit ----------------------------------------


def _edit_page(
    request: HttpRequest,
    *,
    section: str,
    form_class: type[StyledModelForm],
    instance: Any,
    save: Any,
    instance_kw: str,
    list_url: str,
    title: str,
) -> HttpResponse:
    form = form_class(_post_data(request), instance=instance)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            fields = form.changed_fields()
            if instance is not None and not fields:
                messages.info(request, _("変更はありません。"))
                return HttpResponseRedirect(list_url)
            try:
                obj = save(actor=request.user, **{instance_kw: instance}, **fields, **form.service_kwargs())
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                if instance is None:
                    messages.success(request, _("「%(name)s」を登録しました。") % {"name": obj})
                else:
                    messages.success(request, _("「%(name)s」を更新しました。") % {"name": obj})
                if "clearance" in fields and int(fields["clearance"]) != int(obj.clearance):
                    messages.info(
                        request,
                        _(
                            "機密性%(level)sへの引き上げは承認待ちです。別の調達担当または"
                            "プラットフォーム管理者が承認すると反映されます。"
                        )
                        % {"level": fields["clearance"]},
                    )
                return HttpResponseRedirect(list_url)
        status = 400
    context = _ctx(
        request,
        section,
        form=form,
        title=title,
        object=instance,
        cancel_url=list_url,
        pending_change=selectors.pending_change_for(instance),
    )
    return render(request, "registry/form.html", context, status=status)


@require_GET
@registry_required()
def vendor_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "registry/vendor_list.html",
        _ctx(request, "vendors", page=_page(request, selectors.vendor_list())),
    )


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def vendor_create(request: HttpRequest) -> HttpResponse:
    return _edit_page(
        request,
        section="vendors",
        form_class=VendorForm,
        instance=None,
        save=services.vendor_save,
        instance_kw="vendor",
        list_url=reverse("registry:vendor_list"),
        title=_("ベンダーの登録"),
    )


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def vendor_edit(request: HttpRequest, vendor_id: int) -> HttpResponse:
    vendor = selectors.get_vendor_for_actor(actor=request.user, vendor_id=vendor_id)
    return _edit_page(
        request,
        section="vendors",
        form_class=VendorForm,
        instance=vendor,
        save=services.vendor_save,
        instance_kw="vendor",
        list_url=reverse("registry:vendor_list"),
        title=_("ベンダーの編集"),
    )


@require_GET
@registry_required()
def model_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "registry/model_list.html",
        _ctx(
            request,
            "models",
            page=_page(request, selectors.model_list()),
            pending=selectors.pending_targets(),
        ),
    )


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def model_create(request: HttpRequest) -> HttpResponse:
    return _edit_page(
        request,
        section="models",
        form_class=ModelEntryForm,
        instance=None,
        save=services.model_save,
        instance_kw="model",
        list_url=reverse("registry:model_list"),
        title=_("モデルの登録"),
    )


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def model_edit(request: HttpRequest, model_id: int) -> HttpResponse:
    model = selectors.get_model_for_actor(actor=request.user, model_id=model_id)
    return _edit_page(
        request,
        section="models",
        form_class=ModelEntryForm,
        instance=model,
        save=services.model_save,
        instance_kw="model",
        list_url=reverse("registry:model_list"),
        title=_("モデルの編集"),
    )


@require_GET
@registry_required()
def deployment_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.deployment_list())
    context = _ctx(
        request,
        "deployments",
        page=page,
        health_rows=selectors.deployment_health_rows(list(page.object_list)),
        pending=selectors.pending_targets(),
    )
    return render(request, "registry/deployment_list.html", context)


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def deployment_create(request: HttpRequest) -> HttpResponse:
    return _edit_page(
        request,
        section="deployments",
        form_class=DeploymentForm,
        instance=None,
        save=services.deployment_save,
        instance_kw="deployment",
        list_url=reverse("registry:deployment_list"),
        title=_("デプロイメントの登録"),
    )


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def deployment_edit(request: HttpRequest, deployment_id: int) -> HttpResponse:
    deployment = selectors.get_deployment_for_actor(actor=request.user, deployment_id=deployment_id)
    return _edit_page(
        request,
        section="deployments",
        form_class=DeploymentForm,
        instance=deployment,
        save=services.deployment_save,
        instance_kw="deployment",
        list_url=reverse("registry:deployment_list"),
        title=_("デプロイメントの編集"),
    )


@require_POST
@registry_required(edit=True)
def deployment_check(request: HttpRequest, deployment_id: int) -> HttpResponse:
    """ "Check now": run the provider's ``health()`` and record the outcome (not audited)."""
    deployment = selectors.get_deployment_for_actor(actor=request.user, deployment_id=deployment_id)
    services.deployment_health_check(deployments=[deployment])
    if _htmx(request):
        row = selectors.deployment_health_rows([deployment])[0]
        context = _ctx(request, "deployments", row=row, next_url=reverse("registry:deployment_list"))
        return render(request, "registry/_deployment_health.html", context)
    messages.info(
        request,
        _("%(name)s の状態: %(state)s") % {"name": deployment.name, "state": deployment.get_health_display()},
    )
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("registry:deployment_list")
    return HttpResponseRedirect(next_url)


# --- Aliases ----------------------------------------------------------------------------------


@require_GET
@registry_required()
def alias_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.alias_list())
    rows = [(alias, selectors.alias_current_routes(alias)) for alias in page.object_list]
    context = _ctx(request, "aliases", page=page, rows=rows, pending=selectors.pending_targets())
    return render(request, "registry/alias_list.html", context)


@require_http_methods(["GET", "POST"])
@registry_required(edit=True)
def alias_create(request: HttpRequest) -> HttpResponse:
    form = AliasForm(_post_data(request))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                alias = services.alias_create(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request,
                    _("エイリアス「%(name)s」を作成しました。経路を設定してください。") % {"name": alias},
                )
                return HttpResponseRedirect(reverse("registry:alias_detail", args=[alias.pk]))
        status = 400
    context = _ctx(
        request,
        "aliases",
        form=form,
        title=_("エイリアスの作成"),
        object=None,
        cancel_url=reverse("registry:alias_list"),
    )
    return render(request, "registry/form.html", context, status=status)


def _alias_context(
    request: HttpRequest,
    alias: Alias,
    *,
    routes_form: AliasRoutesForm | None = None,
    rollback_form: AliasRollbackForm | None = None,
    notice: str = "",
    notice_level: str = "success",
) -> dict[str, Any]:
    current = selectors.alias_current_routes(alias)
    if routes_form is None:
        routes_form = AliasRoutesForm(deployments=selectors.alias_route_candidates(alias), current=current)
    revisions = list(selectors.alias_revisions(alias))
    return _ctx(
        request,
        "aliases",
        alias=alias,
        current_routes=current,
        routes_form=routes_form,
        rollback_form=rollback_form or AliasRollbackForm(),
        rollback_target=revisions[1] if alias.current_revision and len(revisions) > 1 else None,
        revisions=revisions,
        grant_rows=selectors.alias_grant_rows(alias),
        audit_page=_page(request, selectors.alias_audit_events(alias), param="audit_page"),
        pending_change=selectors.pending_change_for(alias),
        notice=notice,
        notice_level=notice_level,
    )


def _alias_response(
    request: HttpRequest, alias: Alias, *, ok_message: str = "", status: int = 200, **kwargs: Any
) -> HttpResponse:
    """After an alias action: htmx gets the re-rendered panel, plain forms a redirect (PRG)."""
    if _htmx(request):
        alias = selectors.get_alias_for_actor(actor=request.user, alias_id=alias.pk)
        if ok_message:
            kwargs.update(notice=ok_message, notice_level="success")
        context = _alias_context(request, alias, **kwargs)
        # htmx swaps only 2xx responses; validation errors are shown in the panel.
        return render(request, "registry/_alias_panel.html", context)
    if ok_message:
        messages.success(request, ok_message)
        return HttpResponseRedirect(reverse("registry:alias_detail", args=[alias.pk]))
    alias = selectors.get_alias_for_actor(actor=request.user, alias_id=alias.pk)
    return render(
        request, "registry/alias_detail.html", _alias_context(request, alias, **kwargs), status=status
    )


@require_GET
@registry_required()
def alias_detail(request: HttpRequest, alias_id: int) -> HttpResponse:
    alias = selectors.get_alias_for_actor(actor=request.user, alias_id=alias_id)
    template = "registry/_alias_panel.html" if _htmx(request) else "registry/alias_detail.html"
    return render(request, template, _alias_context(request, alias))


def _proposed_message(change: ChangeRequest) -> str:
    return _(
        "オンプレミス外のデプロイメント（%(names)s）への経路変更は、承認待ちの変更依頼 #%(id)d になりました。"
        "別の調達担当またはプラットフォーム管理者が承認すると公開されます。"
    ) % {"names": ", ".join(change.payload.get("offprem", [])), "id": change.pk}


@require_POST
@registry_required(edit=True)
def alias_routes(request: HttpRequest, alias_id: int) -> HttpResponse:
    """Publish new weights (canary 90/10, promote 0/100, …) as a new revision."""
    alias = selectors.get_alias_for_actor(actor=request.user, alias_id=alias_id)
    form = AliasRoutesForm(
        request.POST,
        deployments=selectors.alias_route_candidates(alias),
        current=selectors.alias_current_routes(alias),
    )
    if form.is_valid():
        try:
            revision = services.alias_set_routes(
                actor=request.user, alias=alias, routes=form.routes(), reason=form.cleaned_data["reason"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if isinstance(revision, ChangeRequest):
                return _alias_response(request, alias, ok_message=_proposed_message(revision))
            return _alias_response(
                request,
                alias,
                ok_message=_("リビジョン%(n)dを公開しました。数秒以内にすべての経路に反映されます。")
                % {"n": revision.number},
            )
    return _alias_response(request, alias, routes_form=form, status=400)


@require_POST
@registry_required(edit=True)
def alias_rollback(request: HttpRequest, alias_id: int) -> HttpResponse:
    """One-step rollback: republish the routes of the revision before the current one."""
    alias = selectors.get_alias_for_actor(actor=request.user, alias_id=alias_id)
    form = AliasRollbackForm(request.POST)
    if form.is_valid():
        try:
            revision = services.alias_rollback(
                actor=request.user, alias=alias, reason=form.cleaned_data["reason"]
            )
        except ValidationError as exc:
            return _alias_response(
                request, alias, notice=" ".join(exc.messages), notice_level="error", status=400
            )
        else:
            if isinstance(revision, ChangeRequest):
                return _alias_response(request, alias, ok_message=_proposed_message(revision))
            assert revision.rollback_of is not None
            return _alias_response(
                request,
                alias,
                ok_message=_("リビジョン%(old)dの経路に戻しました（リビジョン%(n)d）。")
                % {"old": revision.rollback_of.number, "n": revision.number},
            )
    return _alias_response(request, alias, rollback_form=form, status=400)


@require_POST
@registry_required(edit=True)
def alias_grants(request: HttpRequest, alias_id: int) -> HttpResponse:
    """Allow (or stop allowing) a ministry to use the alias."""
    alias = selectors.get_alias_for_actor(actor=request.user, alias_id=alias_id)
    form = AliasGrantForm(request.POST)
    if not form.is_valid():
        return _alias_response(
            request, alias, notice=_("府省庁を選択してください。"), notice_level="error", status=400
        )
    ministry = form.cleaned_data["ministry"]
    if form.cleaned_data["action"] == "grant":
        services.alias_grant(actor=request.user, ministry=ministry, alias=alias)
        message = _("%(ministry)sに利用を許可しました。") % {"ministry": ministry.name}
    else:
        services.alias_revoke(actor=request.user, ministry=ministry, alias=alias)
        message = _("%(ministry)sの利用許可を取り消しました。") % {"ministry": ministry.name}
    return _alias_response(request, alias, ok_message=message)


# --- Four-eyes change requests -------------------------------------------------------------


def change_list_page(request: HttpRequest, **extra: Any) -> HttpResponse:
    context = _ctx(
        request,
        "changes",
        pending_requests=list(selectors.change_requests_pending()),
        decided_requests=selectors.change_requests_decided(),
        **extra,
    )
    return render(request, "registry/change_list.html", context)


@require_GET
@registry_required()
def change_list(request: HttpRequest) -> HttpResponse:
    """The approvers' queue (pending, oldest first) and the recent decisions."""
    return change_list_page(request)


def _decide(request: HttpRequest, change_request_id: int, *, approve: bool) -> HttpResponse:
    change = selectors.get_change_request_for_actor(actor=request.user, change_request_id=change_request_id)
    note = request.POST.get("note", "")
    notice, level = "", "success"
    try:
        if approve:
            change = approvals.change_request_approve(actor=request.user, change_request=change, note=note)
            notice = _("変更依頼 #%(id)d を承認し、適用しました。") % {"id": change.pk}
        else:
            change = approvals.change_request_reject(actor=request.user, change_request=change, note=note)
            notice = _("変更依頼 #%(id)d を却下しました。") % {"id": change.pk}
    except ValidationError as exc:
        notice, level = " ".join(exc.messages), "error"
    if _htmx(request):
        # The whole registry area is re-rendered (hx-select): the request moves from "pending"
        # to "decided" and the nav's pending count follows. A refusal is a notice (htmx swaps 2xx).
        return change_list_page(request, notice=notice, notice_level=level)
    if level == "error":
        messages.error(request, notice)
    else:
        messages.success(request, notice)
    return HttpResponseRedirect(reverse("registry:change_list"))


@require_POST
@registry_required(edit=True)
def change_approve(request: HttpRequest, change_request_id: int) -> HttpResponse:
    """Approve and apply (four-eyes: refused for the proposer, 403)."""
    return _decide(request, change_request_id, approve=True)


@require_POST
@registry_required(edit=True)
def change_reject(request: HttpRequest, change_request_id: int) -> HttpResponse:
    """Reject (the proposer may withdraw their own request this way)."""
    return _decide(request, change_request_id, approve=False)
