"""Factories of the chat arena's rows for the tenancy sweep (tests/test_tenancy_sweep.py)."""

from __future__ import annotations

from typing import Any

from apps.evaluation.arena_models import ArenaStream


def sweep_arena_stream(ministry: Any) -> ArenaStream:
    """An unsaved stream row of ``ministry`` (its battle and conversation saved in that ministry's scope)."""
    from apps.chat.models import Conversation
    from apps.evaluation.tests.factories import sweep_arena_battle
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry.pk):
        battle = sweep_arena_battle(ministry)
        battle.save()
        conversation = Conversation.objects.create(
            ministry=ministry, owner=battle.user, alias_name="sweep-alias"
        )
    return ArenaStream(ministry=ministry, battle=battle, conversation=conversation)
