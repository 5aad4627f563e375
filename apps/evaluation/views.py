"""Procurement evaluation screens: suites, runs, the comparison report and promotions.

Thin views: reads from :mod:`.selectors`, writes through :mod:`.services` and
:mod:`.promotion`. Access as for the registry (:func:`registry_required`):
procurement officers and platform admins change, auditors read; the services
check the role again. The suite and run views serve both owners: the URL names
``m_*`` pass ``owner="ministry"`` and then read the active ministry's own suites
and runs (scoped manager and RLS; another ministry's id is a 404).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from apps.registry.permissions import registry_access, registry_required

from . import promotion as promotion_services
from . import selectors, services
from .forms import BenchForm, ImportForm, PromoteForm, ReasonForm, RunForm, SuiteForm
from .importers import ImportFailed
from .models import MetricKind, RunStatus
from .stores import PLATFORM, STORES, Store, store_for


def _ctx(request: HttpRequest, section: str, **extra: Any) -> dict[str, Any]:
    return {"section": section, "can_edit": registry_access(request).can_edit, **extra}


def _store(owner: str) -> Store:
    return STORES[owner]


def _url(obj: Any, name: str) -> str:
    return reverse(store_for(obj).url_prefix + name, args=[obj.pk])


def _error_text(exc: ValidationError) -> str:
    return " ".join(str(m) for m in exc.messages)


@registry_required()
@require_http_methods(["GET", "POST"])
def suite_list(request: HttpRequest) -> HttpResponse:
    form = SuiteForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            suite = services.suite_create(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            return HttpResponseRedirect(suite.get_absolute_url())
    context = _ctx(
        request,
        "suites",
        suites=selectors.suite_list(),
        ministry_suites=selectors.ministry_suite_list(actor=request.user),
        form=form,
        runs=selectors.recent_runs(actor=request.user),
    )
    return render(request, "evaluation/suite_list.html", context, status=400 if form.errors else 200)


def _suite_context(request: HttpRequest, suite: Any, **extra: Any) -> dict[str, Any]:
    return _ctx(
        request,
        "suites",
        suite=suite,
        ns=store_for(suite).url_prefix,
        tasks=suite.tasks.all()[:200],
        task_count=suite.tasks.count(),
        import_form=extra.pop("import_form", None) or ImportForm(),
        run_form=extra.pop("run_form", None) or RunForm(),
        runs=suite.runs.all()[:20],
        **extra,
    )


@registry_required()
def suite_detail(request: HttpRequest, suite_id: int, owner: str = PLATFORM) -> HttpResponse:
    suite = selectors.get_suite_for_actor(actor=request.user, suite_id=suite_id, store=_store(owner))
    return render(request, "evaluation/suite_detail.html", _suite_context(request, suite))


@require_POST
@registry_required(edit=True)
def suite_import(request: HttpRequest, suite_id: int, owner: str = PLATFORM) -> HttpResponse:
    suite = selectors.get_suite_for_actor(actor=request.user, suite_id=suite_id, store=_store(owner))
    form = ImportForm(request.POST, request.FILES)
    errors: list[str] = []
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            count = services.suite_import(
                actor=request.user, suite=suite, filename=upload.name, data=upload.read()
            )
        except ImportFailed as exc:
            errors = exc.errors
        else:
            messages.success(request, _("%(n)d件のタスクを取り込みました。") % {"n": count})
            return HttpResponseRedirect(_url(suite, "suite_detail"))
    context = _suite_context(request, suite, import_form=form, import_errors=errors)
    return render(request, "evaluation/suite_detail.html", context, status=400)


@require_POST
@registry_required(edit=True)
def run_create(request: HttpRequest, suite_id: int, owner: str = PLATFORM) -> HttpResponse:
    suite = selectors.get_suite_for_actor(actor=request.user, suite_id=suite_id, store=_store(owner))
    form = RunForm(request.POST)
    if form.is_valid():
        try:
            run = services.run_create(
                actor=request.user,
                suite=suite,
                deployments=list(form.cleaned_data["deployments"]),
                aliases=list(form.cleaned_data["aliases"]),
                judge=form.cleaned_data["judge"],
                max_tokens=form.cleaned_data["max_tokens"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return HttpResponseRedirect(_url(run, "run_detail"))
    return render(
        request, "evaluation/suite_detail.html", _suite_context(request, suite, run_form=form), status=400
    )


def _run_context(request: HttpRequest, run: Any, **extra: Any) -> dict[str, Any]:
    items = (
        store_for(run)
        .item.objects.filter(run=run)
        .select_related("task", "candidate")
        .order_by("task__position", "candidate__position")
    )
    return _ctx(
        request,
        "suites",
        run=run,
        ns=store_for(run).url_prefix,
        report=selectors.run_report(run),
        metrics=[(m, MetricKind(m).label) for m in MetricKind.values],
        items=items[:400],
        running=run.status != RunStatus.COMPLETE,
        bench_form=extra.pop("bench_form", None) or BenchForm(run=run),
        promote_form=extra.pop("promote_form", None) or PromoteForm(run=run),
        promotions=selectors.promotions_of_run(run),
        **extra,
    )


@registry_required()
def run_detail(request: HttpRequest, run_id: int, owner: str = PLATFORM) -> HttpResponse:
    """The comparison report; while the run is going, htmx re-fetches the progress panel."""
    run = selectors.get_run_for_actor(actor=request.user, run_id=run_id, store=_store(owner))
    context = _run_context(request, run)
    if getattr(request, "htmx", False):
        return render(request, "evaluation/_run_report.html", context)
    return render(request, "evaluation/run_detail.html", context)


@registry_required()
def run_export(request: HttpRequest, run_id: int, fmt: str, owner: str = PLATFORM) -> HttpResponse:
    """The report as CSV or JSON, to attach to a procurement decision."""
    run = selectors.get_run_for_actor(actor=request.user, run_id=run_id, store=_store(owner))
    if fmt == "csv":
        response = HttpResponse(selectors.run_report_csv(run), content_type="text/csv; charset=utf-8")
    elif fmt == "json":
        body = json.dumps(selectors.run_report_json(run), ensure_ascii=False, indent=2)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
    else:
        raise Http404
    response["Content-Disposition"] = f'attachment; filename="evaluation-run-{run.pk}.{fmt}"'
    return response


@require_POST
@registry_required(edit=True)
def run_bench(request: HttpRequest, run_id: int, owner: str = PLATFORM) -> HttpResponse:
    run = selectors.get_run_for_actor(actor=request.user, run_id=run_id, store=_store(owner))
    form = BenchForm(request.POST, request.FILES, run=run)
    if form.is_valid():
        try:
            services.run_attach_bench(
                actor=request.user,
                run=run,
                candidate=form.cleaned_data["candidate"],
                data=form.cleaned_data["file"].read(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("ベンチマーク結果を添付しました。"))
            return HttpResponseRedirect(_url(run, "run_detail"))
    return render(
        request, "evaluation/run_detail.html", _run_context(request, run, bench_form=form), status=400
    )


@require_POST
@registry_required(edit=True)
def promotion_start(request: HttpRequest, run_id: int, owner: str = PLATFORM) -> HttpResponse:
    """From the report: move an alias to a candidate as a canary (or propose it for approval)."""
    run = selectors.get_run_for_actor(actor=request.user, run_id=run_id, store=_store(owner))
    form = PromoteForm(request.POST, run=run)
    if form.is_valid():
        data = form.cleaned_data
        try:
            promotion = promotion_services.promotion_start(
                actor=request.user,
                alias=data["alias"],
                deployment=data["candidate"].deployment,
                percent=data["percent"],
                reason=data["reason"],
                run=run,
                max_error_rate=data["max_error_rate"] / 100,
                max_p95_latency_ms=data["max_p95_latency_ms"],
                window_minutes=data["window_minutes"],
                min_requests=data["min_requests"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(
                request,
                _("プロモーションを開始しました（状態: %(state)s）。")
                % {"state": promotion.get_state_display()},
            )
            return HttpResponseRedirect(reverse("evaluation:promotion_list"))
    return render(
        request, "evaluation/run_detail.html", _run_context(request, run, promote_form=form), status=400
    )


@registry_required()
def promotion_list(request: HttpRequest) -> HttpResponse:
    context = _ctx(
        request, "promotions", promotions=selectors.promotion_list()[:100], reason_form=ReasonForm()
    )
    return render(request, "evaluation/promotion_list.html", context)


def _promotion_action(request: HttpRequest, promotion_id: int, action: Any, done: str) -> HttpResponse:
    promotion = selectors.get_promotion_for_actor(actor=request.user, promotion_id=promotion_id)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("変更理由を入力してください。"))
    else:
        try:
            action(actor=request.user, promotion=promotion, reason=form.cleaned_data["reason"])
        except ValidationError as exc:
            messages.error(request, _error_text(exc))
        else:
            messages.success(request, done)
    return HttpResponseRedirect(reverse("evaluation:promotion_list"))


@require_POST
@registry_required(edit=True)
def promotion_full(request: HttpRequest, promotion_id: int) -> HttpResponse:
    return _promotion_action(
        request, promotion_id, promotion_services.promotion_full, _("全面切替しました。")
    )


@require_POST
@registry_required(edit=True)
def promotion_rollback(request: HttpRequest, promotion_id: int) -> HttpResponse:
    return _promotion_action(
        request, promotion_id, promotion_services.promotion_rollback, _("ロールバックしました。")
    )
