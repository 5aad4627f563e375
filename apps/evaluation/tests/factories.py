"""Unsaved rows of evaluation's tenant models for the shared tenancy sweep (tests/test_tenancy_sweep.py)."""

from __future__ import annotations

from typing import Any

from apps.evaluation.models import ArenaBattle, ArenaVote
from apps.registry.models import Alias


def _sweep_user() -> Any:
    from apps.accounts.models import User

    user, _created = User.objects.get_or_create(
        username="sweep-arena", defaults={"subject": "sub-sweep-arena", "display_name": "sweep"}
    )
    return user


def _sweep_alias(name: str) -> Alias:
    alias, _created = Alias.objects.get_or_create(
        name=name, defaults={"display_name_ja": "検証", "display_name_en": "Sweep"}
    )
    return alias


def sweep_arena_battle(ministry: Any) -> ArenaBattle:
    """An unsaved battle of ``ministry`` (its prompt is that ministry's content)."""
    return ArenaBattle(
        ministry=ministry,
        user=_sweep_user(),
        prompt="A only",
        alias_a=_sweep_alias("sweep-arena-a"),
        alias_b=_sweep_alias("sweep-arena-b"),
    )


def sweep_arena_vote(ministry: Any) -> ArenaVote:
    """An unsaved vote of ``ministry`` (its battle is saved in that ministry's scope)."""
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry.pk):
        battle = sweep_arena_battle(ministry)
        battle.save()
    return ArenaVote(ministry=ministry, battle=battle, user=battle.user, outcome="a")
