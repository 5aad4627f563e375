"""Attacks on the arena's votes: two votes on one battle sent at the same moment."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from apps.evaluation import arena
from apps.evaluation.models import ArenaVote
from apps.tenancy.scope import ministry_scope

from .test_arena import aliases  # noqa: F401


@pytest.mark.django_db(transaction=True)
def test_two_votes_at_once_record_one_and_explain_the_other(
    aliases: Any,  # noqa: F811
    staff_a: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ministry_id = staff_a.ministry.pk
    with ministry_scope(ministry_id=ministry_id):
        battle = arena.arena_battle_create(
            actor=staff_a.user,
            prompt="質問",
            level=1,
            rng=random.Random(3),  # noqa: S311 - a reproducible draw, not security
        )
    manager = ArenaVote.objects
    real_create = manager.create

    def slow_create(**kwargs: Any) -> Any:
        time.sleep(0.3)  # widen the gap between "no vote yet" and the insert
        return real_create(**kwargs)

    monkeypatch.setattr(manager, "create", slow_create)
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def vote(outcome: str) -> None:
        try:
            start.wait()
            with ministry_scope(ministry_id=ministry_id):
                arena.arena_vote(actor=staff_a.user, battle=battle, outcome=outcome)
            outcomes.append("recorded")
        except ValidationError as exc:
            outcomes.append("refused: " + exc.messages[0])
        except Exception as exc:  # noqa: BLE001 - the defect: a database error (HTTP 500)
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=vote, args=(o,)) for o in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["recorded", "refused: この比較にはすでに投票しています。"]
    with ministry_scope(ministry_id=ministry_id):
        assert ArenaVote.objects.filter(battle_id=battle.pk).count() == 1
