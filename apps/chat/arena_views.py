"""The blind arena inside chat: one question, two anonymous answers streamed side by side, a vote.

On a conversation page the staff member ticks 「2つのモデルで比較」 and sends:
:func:`arena_turn_create` draws two aliases the ministry may use at the
conversation's 機密性 level (:func:`apps.evaluation.arena.arena_battle_start`)
and returns the turn; each side then opens its own SSE stream
(:func:`arena_side_stream`: chat's admission, router and ledger, one metered
call per side). When both sides have ended, the vote buttons appear; the vote
(:func:`arena_turn_vote`) records to the arena's battles and votes and reveals
the names. Every battle id goes through ``get_stream_for_actor`` (404 for
anyone but the battle's own user in their own ministry).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import translation
from django.views.decorators.http import require_GET, require_POST

from apps.evaluation import arena
from apps.evaluation.arena_models import ArenaStream, SideStatus
from apps.evaluation.arena_stream import arena_relay
from apps.evaluation.models import ArenaOutcome, ArenaVote
from apps.tenancy.connections import db_hop
from apps.tenancy.permissions import require_membership
from apps.tenancy.scope import ministry_scope

from . import quota, services
from .models import Conversation
from .selectors import get_conversation_for_actor
from .streaming import SSE_HEADERS, sse_event


def _vote_of(stream: ArenaStream) -> ArenaVote | None:
    return ArenaVote.objects.filter(battle_id=stream.battle_id).first()


def side_context(stream: ArenaStream, side: str, *, connect: bool = False) -> dict[str, Any]:
    """One side as the page shows it: anonymous unless the battle has a vote."""
    battle = stream.battle
    status = stream.status(side)
    vote = _vote_of(stream)
    alias = battle.alias_a if side == "a" else battle.alias_b
    return {
        "battle": battle,
        "side": side,
        "status": status,
        "streaming": status == SideStatus.STREAMING,
        "connect": connect,
        "answer": battle.answer_a if side == "a" else battle.answer_b,
        "error": battle.error_a if side == "a" else battle.error_b,
        # Security: the names reach the page only once the vote is recorded.
        "name": f"{alias.display_name}（{alias.name}）" if vote is not None else "",
    }


def turn_context(stream: ArenaStream) -> dict[str, Any]:
    """The whole turn: question, both sides (connecting the ones nobody streams yet) and the vote area."""
    sides = [
        side_context(
            stream, side, connect=stream.status(side) == SideStatus.STREAMING and not stream.started(side)
        )
        for side in ("a", "b")
    ]
    return {"stream": stream, "battle": stream.battle, "sides": sides, **vote_context(stream)}


def vote_context(stream: ArenaStream) -> dict[str, Any]:
    """The vote area: buttons once both sides ended, each with an answer (see ``arena_vote``)."""
    battle = stream.battle
    return {
        "battle": battle,
        "vote": _vote_of(stream),
        "finished": stream.finished,
        "votable": stream.finished and bool(battle.answer_a and battle.answer_b),
        "outcomes": ArenaOutcome.choices,
    }


def arena_items(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation's arena turns, for the page to place among its messages by time."""
    return [
        {"arena": turn_context(stream), "created_at": stream.created_at}
        for stream in arena.arena_streams_for(conversation=conversation)
    ]


def with_arena_items(conversation: Conversation, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` (message contexts) with the arena turns merged in by creation time."""
    turns = arena_items(conversation)
    if not turns:
        return items
    merged = [{**item, "created_at": item["m"].created_at} for item in items] + turns
    return sorted(merged, key=lambda item: item["created_at"])


def _side_fragment(request: HttpRequest | None, stream: ArenaStream, side: str) -> str:
    """The side as it is now, plus (out of band) the vote area: the buttons once both sides ended."""
    side_html = render_to_string("chat/_arena_side.html", side_context(stream, side), request=request)
    vote_html = render_to_string(
        "chat/_arena_vote.html", {**vote_context(stream), "oob": True}, request=request
    )
    return side_html + vote_html


def _render_side_now(*, ministry_id: int, request: HttpRequest, battle_id: int, side: str) -> str:
    with ministry_scope(ministry_id=ministry_id):
        stream = arena.get_stream_for_actor(actor=request.user, battle_id=battle_id)
        return _side_fragment(request, stream, side)


@login_required
@require_membership
@require_POST
def arena_turn_create(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Ask two anonymous candidates from the conversation; HTMX gets the turn, errors come back as 422."""
    conversation = get_conversation_for_actor(actor=request.user, conversation_id=conversation_id)
    content = request.POST.get("content", "")
    try:
        services.validate_content(content)
        quota.precheck(
            ministry_id=request.membership.ministry_id,  # type: ignore[attr-defined]
            user_id=request.user.pk or 0,
            alias_name="",
        )
        battle = arena.arena_battle_start(actor=request.user, conversation=conversation, prompt=content)
    except quota.QuotaRefused as exc:
        response = render(request, "chat/_composer_errors.html", {"errors": [exc.message]}, status=429)
        response["Retry-After"] = str(exc.retry_after)
        if request.htmx:  # type: ignore[attr-defined]
            response["HX-Retarget"] = "#composer-errors"
            response["HX-Reswap"] = "innerHTML"
        return response
    except ValidationError as exc:
        status = 422
        if request.htmx:  # type: ignore[attr-defined]
            response = render(request, "chat/_composer_errors.html", {"errors": exc.messages}, status=status)
            response["HX-Retarget"] = "#composer-errors"
            response["HX-Reswap"] = "innerHTML"
            return response
        return render(request, "chat/_composer_errors.html", {"errors": exc.messages}, status=status)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(conversation.get_absolute_url())
    stream = arena.get_stream_for_actor(actor=request.user, battle_id=battle.pk)
    return render(request, "chat/_arena_created.html", turn_context(stream))


@login_required
@require_membership
@require_GET
def arena_side(request: HttpRequest, battle_id: int, side: str) -> HttpResponse:
    """One side as saved now (the page polls this while another tab streams it)."""
    if side not in ("a", "b"):
        raise Http404
    stream = arena.get_stream_for_actor(actor=request.user, battle_id=battle_id)
    return HttpResponse(_side_fragment(request, stream, side))


@login_required
@require_membership
@require_POST
def arena_turn_vote(request: HttpRequest, battle_id: int) -> HttpResponse:
    """Record the vote (once, both sides ended, grants re-checked), then show the names."""
    stream = arena.get_stream_for_actor(actor=request.user, battle_id=battle_id)
    errors: list[str] = []
    try:
        arena.arena_vote(actor=request.user, battle=stream.battle, outcome=request.POST.get("outcome", ""))
    except ValidationError as exc:
        errors = exc.messages
    stream = arena.get_stream_for_actor(actor=request.user, battle_id=battle_id)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(stream.conversation.get_absolute_url() + f"#arena-{battle_id}")
    return render(
        request,
        "chat/_arena_turn.html",
        {**turn_context(stream), "vote_errors": errors},
        status=422 if errors else 200,
    )


async def _side_events(
    request: HttpRequest, *, ministry_id: int, battle_id: int, side: str, opened: Any, language: str | None
) -> AsyncIterator[bytes]:
    if not isinstance(opened, arena.SideReplay):
        inner = arena_relay(opened, battle_id=battle_id, side=side, started=time.monotonic())
        try:
            async for event in inner:
                yield event
        finally:  # the browser went away: let the relay save what it has
            await inner.aclose()  # type: ignore[attr-defined]
    with translation.override(language):
        html = await db_hop(
            _render_side_now, ministry_id=ministry_id, request=request, battle_id=battle_id, side=side
        )
        yield sse_event("done", html)


@login_required
async def arena_side_stream(request: HttpRequest, battle_id: int, side: str) -> HttpResponseBase:
    """SSE stream of one side (async: no thread or database connection held while the model answers).

    Authorisation and the claim happen before the body starts (DESIGN invariant 10:
    every database call goes through ``db_hop``).
    """
    membership = getattr(request, "membership", None)
    if membership is None:
        raise PermissionDenied("no ministry membership")
    language = translation.get_language()
    opened = await db_hop(
        arena.arena_side_open,
        ministry_id=membership.ministry_id,
        actor=request.user,
        battle_id=battle_id,
        side=side,
    )
    body = _side_events(
        request,
        ministry_id=membership.ministry_id,
        battle_id=battle_id,
        side=side,
        opened=opened,
        language=language,
    )
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    for header, value in SSE_HEADERS.items():
        response[header] = value
    return response
