"""AI app pages (HTMX): catalogue, run form, streamed run result, history, favourites.

Thin views: reads through :mod:`.selectors`, writes through :mod:`.services` and :mod:`.runs`.
Every app and run id goes through ``get_*_for_actor`` (404 for another ministry's app, a
colleague's private app and another user's run alike). The builder lives in :mod:`.views_builder`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.views.decorators.http import require_GET, require_POST

from apps.chat import quota as chat_quota
from apps.chat import services as chat_services
from apps.chat.conf import default_confidentiality
from apps.chat.streaming import SSE_HEADERS, relay, sse_event
from apps.documents.selectors import workspace_list_for_actor
from apps.registry.models import Clearance
from apps.registry.router import allowed_aliases
from apps.tenancy.connections import db_hop
from apps.tenancy.permissions import require_membership

from . import runs, services
from .models import AppRun, MinistryApp, PlatformApp
from .render import run_context
from .selectors import catalogue_for_actor, get_app_for_actor, get_run_for_actor, run_list_for_actor


@login_required
@require_membership
@require_GET
def catalogue(request: HttpRequest) -> HttpResponse:
    """Built-in, platform, shared-in-my-ministry and my apps; favourites first."""
    return render(request, "aiapps/catalogue.html", {"entries": catalogue_for_actor(actor=request.user)})


def _run_form_context(
    request: HttpRequest, app: PlatformApp | MinistryApp, *, level: int | None = None, **extra: Any
) -> dict[str, Any]:
    level = level or default_confidentiality()
    aliases = allowed_aliases(level=level)
    names = [a.name for a in aliases]
    preferred = app.recommended_alias if app.recommended_alias in names else (names[0] if names else "")
    return {
        "app": app,
        "ref": app.ref,
        "levels": Clearance.choices,
        "level": level,
        "aliases": aliases,
        "alias_name": extra.pop("alias_name", "") or preferred,
        "workspaces": workspace_list_for_actor(actor=request.user)
        if app.uses_workspace or app.kind == "grounded"
        else [],
        "form_fields": [{**f, "value": extra.get("values", {}).get(f["name"], "")} for f in app.fields],
        "is_owner": isinstance(app, MinistryApp) and app.owner_id == request.user.pk,
        **extra,
    }


@login_required
@require_membership
def app_run(request: HttpRequest, ref: str) -> HttpResponse:
    """GET: the app's form. POST: validate, start the run, go to its (streaming) page."""
    app = get_app_for_actor(actor=request.user, ref=ref)
    if request.method != "POST":
        return render(request, "aiapps/run_form.html", _run_form_context(request, app))
    alias_name = request.POST.get("alias", "")
    level_raw = request.POST.get("level")
    try:
        level = int(level_raw or 0) or None
    except ValueError:
        level = None
    values = {f["name"]: request.POST.get(f["name"], "") for f in app.fields if f["kind"] != "file"}
    try:
        inputs = runs.clean_inputs(app=app, data=request.POST, files=request.FILES)
        chat_quota.precheck(
            ministry_id=request.membership.ministry_id,  # type: ignore[attr-defined]
            user_id=request.user.pk or 0,
            alias_name=alias_name,
        )
        run = runs.run_start(
            actor=request.user,
            app=app,
            inputs=inputs,
            alias_name=alias_name,
            level=level_raw,
            workspace_id=request.POST.get("workspace"),
        )
    except ValidationError as exc:
        context = _run_form_context(
            request, app, level=level, alias_name=alias_name, values=values, errors=exc.messages
        )
        return render(request, "aiapps/run_form.html", context, status=422)
    except chat_quota.QuotaRefused as exc:
        context = _run_form_context(
            request, app, level=level, alias_name=alias_name, values=values, errors=[exc.message]
        )
        response = render(request, "aiapps/run_form.html", context, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    return HttpResponseRedirect(run.get_absolute_url())


@login_required
@require_membership
@require_GET
def alias_options(request: HttpRequest) -> HttpResponse:
    """The model picker for a 機密性 level (only aliases allowed and cleared for it)."""
    try:
        level = int(request.GET.get("level") or 0) or default_confidentiality()
    except ValueError:
        level = default_confidentiality()
    aliases = allowed_aliases(level=level)
    return render(
        request,
        "chat/_alias_options.html",
        {
            "aliases": aliases,
            "level": level,
            "alias_name": request.GET.get("alias") or (aliases[0].name if aliases else ""),
        },
    )


@login_required
@require_membership
@require_POST
def favourite(request: HttpRequest, ref: str) -> HttpResponse:
    starred = services.favourite_toggle(actor=request.user, ref=ref)
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "aiapps/_favourite.html", {"ref": ref, "favourite": starred})
    return HttpResponseRedirect(reverse("aiapps:catalogue"))


@login_required
@require_membership
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    return render(request, "aiapps/run_list.html", {"runs": run_list_for_actor(actor=request.user)[:100]})


@login_required
@require_membership
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_run_for_actor(actor=request.user, run_id=run_id)
    context = run_context(run)
    context["connect"] = run.message.is_streaming and not run.message.is_claimed
    return render(request, "aiapps/run_detail.html", context)


@login_required
@require_membership
@require_POST
def run_stop(request: HttpRequest, run_id: int) -> HttpResponse:
    """Stop a streaming run: chat's stop flag, which the relay checks several times a second."""
    run = get_run_for_actor(actor=request.user, run_id=run_id)
    chat_services.message_stop(actor=request.user, conversation=run.conversation, message=run.message)
    if request.htmx:  # type: ignore[attr-defined]
        return HttpResponse(status=204)  # the stream's final fragment shows the interrupted state
    return HttpResponseRedirect(run.get_absolute_url())


def _render_final(run: AppRun) -> str:
    return render_to_string("aiapps/_run_result.html", run_context(run))


async def _run_events(
    request: HttpRequest, run_id: int, ministry_id: int, opened: Any, language: str | None
) -> AsyncIterator[bytes]:
    """Chat's relay (tokens, partial saves, quota, usage record), with this app's final fragment."""
    if not isinstance(opened, runs.RunReplay):
        inner = relay(opened, started=time.monotonic(), language=language)
        try:
            async for event in inner:
                if not event.startswith(b"event: done"):
                    yield event
        finally:  # the browser went away: let the relay save what it has
            await inner.aclose()  # type: ignore[attr-defined]
    run = await db_hop(runs.run_for_render, ministry_id=ministry_id, actor=request.user, run_id=run_id)
    with translation.override(language):
        yield sse_event("done", await db_hop(_render_final, run))


@login_required
async def run_stream(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """SSE stream of one run; authorisation and the claim happen before the body starts.

    DESIGN invariant 10: every database call goes through ``db_hop``; an open stream holds
    no database connection while it waits on the model.
    """
    membership = getattr(request, "membership", None)
    if membership is None:
        raise PermissionDenied("no ministry membership")
    language = translation.get_language()
    opened = await db_hop(
        runs.run_stream_open, ministry_id=membership.ministry_id, actor=request.user, run_id=run_id
    )
    body = _run_events(request, run_id, membership.ministry_id, opened, language)
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    for header, value in SSE_HEADERS.items():
        response[header] = value
    return response
