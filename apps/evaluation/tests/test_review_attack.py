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


# --- Two suites with one name created at once ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("owner", ["ministry", "platform"])
def test_two_suites_with_one_name_at_once_are_one_suite_and_one_form_error(
    officer: Any, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both creations passed "no suite with this name" (and ``full_clean``) before either
    inserted: the second hit the unique constraint, an IntegrityError and an HTTP 500."""
    from apps.evaluation import services
    from apps.evaluation.models import MinistrySuite, Suite
    from tests.support.races import race_through

    model = MinistrySuite if owner == "ministry" else Suite
    ministry_id = officer.ministry.pk

    def create() -> None:
        with ministry_scope(ministry_id=ministry_id):
            services.suite_create(actor=officer.user, name="同時に作る評価", owner=owner, level=1)

    results = race_through(monkeypatch, model, "full_clean", [create, create])
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "ValidationError"]
    refusal = next(r for r in results if r is not None)
    assert isinstance(refusal, ValidationError)
    assert refusal.messages[0].startswith("同じ名称のスイートが")
    with ministry_scope(ministry_id=ministry_id):
        assert model.objects.filter(name="同時に作る評価").count() == 1
