"""Staff chat pages (HTMX) and the SSE stream view.

Views stay thin: reads through :mod:`.selectors`, writes through :mod:`.services`.
Every conversation/message id goes through ``get_*_for_actor`` (404 for anyone
but the owner).
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.console.notifications import notification_list_unread, notification_mark_read
from apps.evaluation import arena
from apps.registry.models import Clearance
from apps.registry.router import allowed_aliases
from apps.registry.snapshot import get_snapshot
from apps.tenancy.connections import db_hop
from apps.tenancy.permissions import require_membership

from . import arena_views, quota, services
from .conf import default_confidentiality, max_message_chars
from .models import Conversation, Message
from .selectors import (
    conversation_list_for_actor,
    get_conversation_for_actor,
    get_message_for_actor,
    message_list,
)
from .streaming import SSE_HEADERS, relay, replay

PAGE_SIZE = 50


def _alias_label(alias_name: str, language: str | None = None) -> str:
    """The alias's display name in the UI language (from the registry snapshot, no query)."""
    alias = get_snapshot().aliases.get(alias_name)
    if alias is None:
        return alias_name
    english = (language or translation.get_language() or "ja").startswith("en")
    return alias.display_name_en if english else alias.display_name_ja


def _level(request: HttpRequest, raw: str | None) -> int:
    try:
        return services.validate_level(raw)
    except ValidationError:
        return default_confidentiality()


def _sidebar_context(request: HttpRequest, *, current: Conversation | None = None) -> dict[str, Any]:
    q = request.GET.get("q", "").strip()
    paginator = Paginator(conversation_list_for_actor(actor=request.user, q=q), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return {
        "conversations": page,
        "q": q,
        "current": current,
        **_budget_context(request),
    }


def _budget_context(request: HttpRequest) -> dict[str, Any]:
    """The remaining-budget meter and the unread notices (budget warnings) of the sidebar.

    Security: while the user has a blind comparison not voted on, no per-model (alias) line
    or notice is shown: its movement would tell which models answered
    (:func:`apps.evaluation.arena.arena_blinds_meter`). They come back after the vote.
    """
    membership = request.membership  # type: ignore[attr-defined]
    lines = quota.budget_meter(ministry_id=membership.ministry_id, user_id=request.user.pk or 0)
    notices = notification_list_unread(actor=request.user)
    per_model = any(line["alias"] for line in lines) or any((n.data or {}).get("alias") for n in notices)
    blinded = per_model and arena.arena_blinds_meter(actor=request.user)
    if blinded:
        lines = [line for line in lines if not line["alias"]]
        notices = [n for n in notices if not (n.data or {}).get("alias")]
    return {"budget_lines": lines, "notices": notices, "budget_models_hidden": blinded}


def _quota_refused(
    request: HttpRequest, exc: quota.QuotaRefused, template: str, context: dict[str, Any]
) -> HttpResponse:
    """429 with ``Retry-After``; HTMX gets the message in the composer's error slot, nothing saved."""
    if request.htmx:  # type: ignore[attr-defined]
        response = render(request, "chat/_composer_errors.html", {"errors": [exc.message]}, status=429)
        response["HX-Retarget"] = "#composer-errors"
        response["HX-Reswap"] = "innerHTML"
    else:
        response = render(request, template, {**context, "errors": [exc.message]}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


def _busy(request: HttpRequest, exc: ValidationError, context: dict[str, Any]) -> HttpResponse:
    """409: another answer of the conversation is pending; HTMX gets it in the composer's error slot."""
    if request.htmx:  # type: ignore[attr-defined]
        response = render(request, "chat/_composer_errors.html", {"errors": exc.messages}, status=409)
        response["HX-Retarget"] = "#composer-errors"
        response["HX-Reswap"] = "innerHTML"
        return response
    return render(request, "chat/conversation.html", {**context, "errors": exc.messages}, status=409)


def _new_form_context(
    request: HttpRequest, *, level: int | None = None, alias_name: str = ""
) -> dict[str, Any]:
    level = level or default_confidentiality()
    aliases = allowed_aliases(level=level)
    return {
        "levels": Clearance.choices,
        "level": level,
        "aliases": aliases,
        "alias_name": alias_name or (aliases[0].name if aliases else ""),
        "max_chars": max_message_chars(),
    }


def _message_context(conversation: Conversation, message: Message, *, is_last: bool = True) -> dict[str, Any]:
    return {
        "m": message,
        "conversation_id": conversation.pk,
        "alias_label": _alias_label(conversation.alias_name),
        "is_last": is_last,
        # Only a page showing a message nobody streams yet opens the EventSource.
        "connect": message.is_streaming and not message.is_claimed,
    }


# --- Pages --------------------------------------------------------------------


@login_required
@require_membership
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """Conversation list and the "new conversation" form."""
    if request.htmx and request.htmx.target == "conversation-list":  # type: ignore[attr-defined]
        return render(request, "chat/_conversation_list.html", _sidebar_context(request))
    context = {**_sidebar_context(request), **_new_form_context(request)}
    return render(request, "chat/index.html", context)


@login_required
@require_membership
@require_GET
def alias_options(request: HttpRequest) -> HttpResponse:
    """The model picker for a 機密性 level (only aliases allowed and cleared for it)."""
    context = _new_form_context(request, level=_level(request, request.GET.get("level")))
    return render(request, "chat/_alias_options.html", context)


@login_required
@require_membership
@require_POST
def conversation_create(request: HttpRequest) -> HttpResponse:
    """Start a conversation; with a first message, send it too and open the conversation."""
    alias_name = request.POST.get("alias", "")
    level_raw = request.POST.get("level")
    content = request.POST.get("content", "")
    errors: list[str] = []
    try:
        if content.strip():
            services.validate_content(content)
            quota.precheck(
                ministry_id=request.membership.ministry_id,  # type: ignore[attr-defined]
                user_id=request.user.pk or 0,
                alias_name=alias_name,
            )
        if request.POST.get("arena") and content.strip():  # the first message as a blind comparison
            conversation = arena.arena_conversation_start(
                actor=request.user, alias_name=alias_name, level=level_raw, content=content
            )
        else:
            conversation = services.conversation_create(
                actor=request.user, alias_name=alias_name, level=level_raw
            )
    except ValidationError as exc:
        errors = exc.messages
    except quota.QuotaRefused as exc:
        context = {
            **_sidebar_context(request),
            **_new_form_context(request, level=_level(request, level_raw), alias_name=alias_name),
            "content": content,
        }
        return _quota_refused(request, exc, "chat/index.html", context)
    else:
        if content.strip() and not request.POST.get("arena"):
            services.message_send(actor=request.user, conversation=conversation, content=content)
        url = conversation.get_absolute_url()
        return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)  # type: ignore[attr-defined]
    context = {
        **_sidebar_context(request),
        **_new_form_context(request, level=_level(request, level_raw), alias_name=alias_name),
        "errors": errors,
        "content": content,
        "arena_checked": bool(request.POST.get("arena")),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "chat/_new_form.html", context, status=422)
    return render(request, "chat/index.html", context, status=422)


@login_required
@require_membership
@require_GET
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    services.message_reap_stale(conversation=conversation)
    return render(request, "chat/conversation.html", _conversation_context(request, conversation))


def _conversation_context(request: HttpRequest, conversation: Conversation, **extra: Any) -> dict[str, Any]:
    messages = message_list(conversation=conversation)
    items = [
        _message_context(conversation, m, is_last=(i == len(messages) - 1)) for i, m in enumerate(messages)
    ]
    items = arena_views.with_arena_items(conversation, items)  # blind comparisons asked from here
    return {
        **_sidebar_context(request, current=conversation),
        "conversation": conversation,
        "items": items,
        "alias_label": _alias_label(conversation.alias_name),
        "max_chars": max_message_chars(),
        "generating": any(m.is_streaming for m in messages),
        **extra,
    }


@login_required
@require_membership
@require_POST
def conversation_rename(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    try:
        conversation = services.conversation_rename(
            actor=request.user, conversation=conversation, title=request.POST.get("title", "")
        )
    except ValidationError as exc:
        context = {"conversation": conversation, "rename_errors": exc.messages, "editing": True}
        if request.htmx:  # type: ignore[attr-defined]
            return render(request, "chat/_title.html", context, status=422)
        return render(
            request,
            "chat/conversation.html",
            _conversation_context(request, conversation, **context),
            status=422,
        )
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "chat/_title.html", {"conversation": conversation, "renamed": True})
    return HttpResponseRedirect(conversation.get_absolute_url())


@login_required
@require_membership
def conversation_delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """GET: confirmation page (used without JavaScript). POST: delete."""
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    if request.method != "POST":
        return render(request, "chat/confirm_delete.html", {"conversation": conversation})
    services.conversation_delete(actor=request.user, conversation=conversation)
    url = reverse("chat:index")
    return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)  # type: ignore[attr-defined]


# --- Messages -----------------------------------------------------------------


@login_required
@require_membership
@require_POST
def message_create(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Send a message. HTMX gets the two new message fragments; errors come back as 422."""
    if request.POST.get("arena"):  # 「2つのモデルで比較」 ticked: a blind comparison instead
        return arena_views.arena_turn_create(request, conversation_id)
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    content = request.POST.get("content", "")
    try:
        result = services.message_send(actor=request.user, conversation=conversation, content=content)
    except quota.QuotaRefused as exc:
        context = _conversation_context(request, conversation, content=content)
        return _quota_refused(request, exc, "chat/conversation.html", context)
    except services.ConversationBusy as exc:
        context = _conversation_context(request, conversation, content=content)
        return _busy(request, exc, context)
    except ValidationError as exc:
        if request.htmx:  # type: ignore[attr-defined]
            return render(request, "chat/_composer_errors.html", {"errors": exc.messages}, status=422)
        context = _conversation_context(request, conversation, errors=exc.messages, content=content)
        return render(request, "chat/conversation.html", context, status=422)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(conversation.get_absolute_url())
    conversation.refresh_from_db()
    items = [
        _message_context(conversation, result.user_message, is_last=False),
        _message_context(conversation, result.assistant_message),
    ]
    return render(
        request, "chat/_messages.html", {"items": items, "conversation": conversation, "sent": True}
    )


@login_required
@require_membership
@require_GET
def message_detail(request: HttpRequest, conversation_id: int, message_id: int) -> HttpResponse:
    """One message fragment (the page polls this while another tab streams the answer)."""
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    services.message_reap_stale(conversation=conversation)
    message = get_message_for_actor(actor=request.user, conversation=conversation, message_id=message_id)
    context = _message_context(conversation, message)
    context["connect"] = False  # polling never starts a stream
    return render(request, "chat/_message.html", context)


@login_required
@require_membership
@require_POST
def message_stop(request: HttpRequest, conversation_id: int, message_id: int) -> HttpResponse:
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    message = get_message_for_actor(actor=request.user, conversation=conversation, message_id=message_id)
    message = services.message_stop(actor=request.user, conversation=conversation, message=message)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(conversation.get_absolute_url())
    context = _message_context(conversation, message)
    context.update(connect=False, stopping=message.is_streaming)
    return render(request, "chat/_message.html", context)


@login_required
@require_membership
@require_POST
def message_regenerate(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    try:
        message = services.message_regenerate(actor=request.user, conversation=conversation)
    except quota.QuotaRefused as exc:
        return _quota_refused(
            request, exc, "chat/conversation.html", _conversation_context(request, conversation)
        )
    except services.ConversationBusy as exc:
        return _busy(request, exc, _conversation_context(request, conversation))
    except ValidationError as exc:
        if request.htmx:  # type: ignore[attr-defined]
            return render(request, "chat/_composer_errors.html", {"errors": exc.messages}, status=422)
        context = _conversation_context(request, conversation, errors=exc.messages)
        return render(request, "chat/conversation.html", context, status=422)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(conversation.get_absolute_url())
    return render(request, "chat/_message.html", _message_context(conversation, message))


@login_required
async def message_stream(request: HttpRequest, conversation_id: int, message_id: int) -> HttpResponseBase:
    """SSE stream of one answer (async: one event-loop task per stream, no thread held).

    Authorisation and the claim happen here, before the body starts. The body
    runs after the (sync) ministry-scope middleware has returned, so it only
    carries ids and the ministry id captured from the membership now.

    DESIGN invariant 10: every database call goes through ``db_hop``, which gives
    the connection back right after the call; the middleware already gave back the
    one its session and membership lookups used. An open stream holds none.
    """
    started = time.monotonic()
    membership = getattr(request, "membership", None)
    if membership is None:
        raise PermissionDenied("no ministry membership")
    language = translation.get_language()
    opened = await db_hop(
        services.stream_open,
        ministry_id=membership.ministry_id,
        actor=request.user,
        conversation_id=conversation_id,
        message_id=message_id,
    )
    if isinstance(opened, services.StreamJob):
        body = relay(opened, started=started, language=language)
    else:
        label = await db_hop(_alias_label, opened.alias_name, language)
        body = replay(opened.message, alias_label=label, language=language)
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    for header, value in SSE_HEADERS.items():
        response[header] = value
    return response


@login_required
@require_membership
@require_POST
def notice_dismiss(request: HttpRequest, notification_id: int) -> HttpResponse:
    """Mark one of the user's notices read (HTMX removes it from the sidebar)."""
    notification_mark_read(actor=request.user, notification_id=notification_id)
    if request.htmx:  # type: ignore[attr-defined]
        return HttpResponse("")
    return HttpResponseRedirect(reverse("chat:index"))
