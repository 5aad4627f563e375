"""The blind arena for staff: ask once, read two anonymous answers, vote, then see the names.

Every view needs a signed-in member acting in a ministry (the middleware set
the scope from the membership); battles are read only through
:func:`apps.evaluation.arena.get_battle_for_actor` (someone else's is a 404).
"""

from __future__ import annotations

import asyncio

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from apps.registry.permissions import registry_access
from apps.registry.router import allowed_aliases
from apps.tenancy.connections import db_hop, scoped_db_hop
from apps.tenancy.permissions import require_membership

from . import arena as arena_services
from .forms import ArenaForm, VoteForm
from .models import ArenaVote
from .selectors import ministry_leaderboard, overall_leaderboard


def _arena_page(request: HttpRequest, form: ArenaForm, *, status: int = 200) -> HttpResponse:
    # Security: staff see overall ratings only for aliases their own ministry may use.
    visible = None if registry_access(request).can_view else {a.name for a in allowed_aliases()}
    context = {
        "form": form,
        "ministry_board": ministry_leaderboard(),
        "overall_board": overall_leaderboard(visible=visible),
    }
    return render(request, "evaluation/arena.html", context, status=status)


@login_required
@require_membership
@require_http_methods(["GET"])
def arena(request: HttpRequest) -> HttpResponse:
    return _arena_page(request, ArenaForm())


@login_required
@require_POST
async def arena_ask(request: HttpRequest) -> HttpResponse:
    """Ask two anonymous candidates (async: no database connection is held while they answer).

    DESIGN invariant 10: the draw and the save are separate database hops in the
    ministry captured from the membership now; the two model calls run between
    them on the event loop.
    """
    membership = getattr(request, "membership", None)
    if membership is None:
        raise PermissionDenied("no ministry membership")
    ministry_id = membership.ministry_id
    form = ArenaForm(request.POST)
    if form.is_valid():
        try:
            draw = await scoped_db_hop(arena_services.arena_draw, ministry_id=ministry_id)(
                actor=request.user, prompt=form.cleaned_data["prompt"], level=form.cleaned_data["level"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            try:
                results = await arena_services.arena_answer(draw)
                saved = await scoped_db_hop(arena_services.arena_battle_save, ministry_id=ministry_id)(
                    actor=request.user, draw=draw, results=results
                )
            finally:
                # Settled to what was produced on save; to nothing if the ask failed or was cancelled.
                await asyncio.shield(db_hop(arena_services.arena_release, draw))
            return HttpResponseRedirect(reverse("evaluation:arena_battle", args=[saved.pk]))
    return await scoped_db_hop(_arena_page, ministry_id=ministry_id)(request, form, status=400)


@login_required
@require_membership
@require_http_methods(["GET", "POST"])
def battle(request: HttpRequest, battle_id: int) -> HttpResponse:
    found = arena_services.get_battle_for_actor(actor=request.user, battle_id=battle_id)
    vote = ArenaVote.objects.filter(battle=found).first()
    form = VoteForm(request.POST if request.method == "POST" and vote is None else None)
    if request.method == "POST" and vote is None and form.is_valid():
        try:
            vote = arena_services.arena_vote(
                actor=request.user, battle=found, outcome=form.cleaned_data["outcome"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return HttpResponseRedirect(reverse("evaluation:arena_battle", args=[found.pk]))
    context = {"battle": found, "vote": vote, "form": form}
    return render(request, "evaluation/arena_battle.html", context, status=400 if form.errors else 200)
