"""The audit browser (監査ログ) and its JSON Lines export.

Ministry admins and ministry auditors read their own ministry's events; the
platform roles read any ministry's (or all), read-only, and every such read of
another ministry is written to the chain as ``audit.cross_ministry_read``
before the page is shown. The ministry boundary lives in
:mod:`apps.audit.selectors` (the audit log is one platform-wide chain, not a
tenant table), decided from the active membership only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.audit.models import AuditEvent
from apps.audit.selectors import (
    AuditFilter,
    AuditScope,
    audit_action_names,
    audit_event_export,
    audit_event_list,
    audit_jsonl_lines,
    audit_reads_outside_own_ministry,
)
from apps.audit.services import CROSS_MINISTRY_AUDIT_READ, audit_cross_ministry_read, audit_export_record
from apps.tenancy.connections import db_hop
from apps.tenancy.models import Ministry

from .forms_insight import AuditFilterForm
from .permissions_insight import audit_reader_required, request_audit_scope

PAGE_SIZE = 50
EXPORT_BATCH = 1000


def _form(request: HttpRequest, scope: AuditScope) -> AuditFilterForm:
    """The bound filter form (empty filters: this month). A platform reader starts on their own
    ministry: looking at another one, or at all, is a choice (and audited)."""
    choices = None
    data = request.GET.copy()
    if scope.platform:
        choices = [(m.pk, f"{m.name} ({m.code})") for m in Ministry.objects.order_by("id")]
        if "ministry" not in data:
            data["ministry"] = str(scope.own_ministry_id)
    return AuditFilterForm(data, ministry_choices=choices)


def _ministry_choice(form: AuditFilterForm, scope: AuditScope) -> int | None:
    """The ministry a platform reader chose (``None``: all); always the own one otherwise."""
    if not scope.platform:
        return scope.own_ministry_id
    return form.cleaned_data.get("ministry") if form.is_valid() else scope.own_ministry_id


def _record_cross_read(
    request: HttpRequest, scope: AuditScope, ministry_id: int | None, filters: AuditFilter
) -> None:
    if audit_reads_outside_own_ministry(scope=scope, ministry_id=ministry_id):
        audit_cross_ministry_read(
            actor=request.user,
            action=CROSS_MINISTRY_AUDIT_READ,
            own_ministry_id=scope.own_ministry_id,
            ministry_id=ministry_id,
            data=_read_data(request, filters),
        )


def _read_data(request: HttpRequest, filters: AuditFilter, **extra: Any) -> dict[str, Any]:
    """What a cross-ministry read of the trail records: the filters and the page shown."""
    return {
        **extra,
        "action_filter": filters.action,
        "actor_filter": filters.actor,
        "start": filters.start,
        "end": filters.end,
        "page": request.GET.get("page", "1")[:10],
    }


def _record_reads_of_all(request: HttpRequest, scope: AuditScope, filters: AuditFilter, events: Any) -> None:
    """Security: "every ministry" is recorded in the trail of each ministry whose events it showed.

    The read of all ministries is on the chain without a ministry (the platform's record);
    a ministry's admins read only their own ministry's trail, so each other ministry whose
    events are on this page gets its own ``audit.cross_ministry_read`` too — they see who
    looked, whichever way the reader chose to look.
    """
    shown = sorted({e.ministry_id for e in events if e.ministry_id not in (None, scope.own_ministry_id)})
    for ministry_id in shown:
        audit_cross_ministry_read(
            actor=request.user,
            action=CROSS_MINISTRY_AUDIT_READ,
            own_ministry_id=scope.own_ministry_id,
            ministry_id=ministry_id,
            data=_read_data(request, filters, view="all"),
        )


@require_GET
@audit_reader_required
def audit_list(request: HttpRequest) -> HttpResponse:
    """The events of the caller's scope, newest first; filters by action, actor and period."""
    scope = request_audit_scope(request)
    assert scope is not None  # the decorator refused everyone without one
    form = _form(request, scope)
    filters = form.audit_filter()
    ministry_id = _ministry_choice(form, scope)
    _record_cross_read(request, scope, ministry_id, filters)
    page = Paginator(
        audit_event_list(scope=scope, filters=filters, ministry_id=ministry_id), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    if scope.platform and ministry_id is None:
        _record_reads_of_all(request, scope, filters, page.object_list)
    query = request.GET.copy()
    query.pop("page", None)
    context: dict[str, Any] = {
        "section": "audit",
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "scope": scope,
        "action_names": audit_action_names(scope=scope),
        "export_ministry_id": ministry_id,
        # The period in force (this month when none was given), shown in the date fields.
        "start": filters.start,
        "end": filters.end,
    }
    if getattr(request, "htmx", False):
        return render(request, "console/insight/_audit_table.html", context)
    return render(request, "console/insight/audit_list.html", context)


def _batch(events: QuerySet[AuditEvent], after_id: int) -> list[AuditEvent]:
    """Keyset pagination by id: no long-lived server-side cursor (pgbouncer transaction mode)."""
    return list(events.filter(id__gt=after_id)[:EXPORT_BATCH])


def export_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    """The export's lines, one batch of events at a time (WSGI)."""
    last_id = 0
    while batch := _batch(events, last_id):
        yield from audit_jsonl_lines(batch)
        last_id = batch[-1].pk


async def export_lines_async(events: QuerySet[AuditEvent]) -> AsyncIterator[str]:
    """The same lines for ASGI, where Django would first read a synchronous iterator into a list.

    Each batch is one database hop (DESIGN invariant 10): a long export never holds a
    pooled connection while the client reads it, and memory stays one batch deep.
    """
    last_id = 0
    while batch := await db_hop(_batch, events, last_id):
        for line in audit_jsonl_lines(batch):
            yield line
        last_id = batch[-1].pk


@require_GET
@audit_reader_required
def audit_export(request: HttpRequest) -> HttpResponseBase:
    """One ministry's events of a period as JSON Lines (oldest first); the export is audited.

    Security: a ministry admin or auditor always exports their own ministry; a
    platform reader may name one ministry (exports are always per ministry).
    """
    scope = request_audit_scope(request)
    assert scope is not None
    form = _form(request, scope)
    if not form.is_valid():
        return HttpResponse(
            "\n".join(str(e) for errors in form.errors.values() for e in errors),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    ministry_id = _ministry_choice(form, scope) or scope.own_ministry_id
    filters = form.audit_filter()
    ministry = Ministry.objects.get(pk=ministry_id)
    audit_export_record(
        actor=request.user,
        ministry_id=ministry_id,
        start=filters.start,
        end=filters.end,
        via="console",
        filters={
            "action_filter": filters.action,
            "actor_filter": filters.actor,
            "reader_ministry_id": scope.own_ministry_id,
        },
    )
    events = audit_event_export(ministry_id=ministry_id, filters=filters)
    lines = export_lines_async(events) if isinstance(request, ASGIRequest) else export_lines(events)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    stamp = timezone.localdate().isoformat()
    response["Content-Disposition"] = (
        f'attachment; filename="audit-{ministry.code}-{filters.start}-{filters.end}-{stamp}.jsonl"'
    )
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
