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


# --- The chat sidebar's budget meter must not name an unvoted comparison's models -----------------


def test_the_budget_meter_names_no_model_until_the_comparison_is_voted(
    staff_a: Any, quota_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A meter with a line per model budget (the reviewer's case) showed, after a reload or on any
    other chat page, which models' lines had moved while the vote was still open; so did a notice
    about a model's budget.

    Today ``admission.budget_status`` (apps/quotas) gives the sidebar only the all-models lines,
    and budget notices are computed for all models together: the stub below gives the meter the
    per-model lines too, read from the same counters, as a meter showing them would.
    """
    import re

    from apps.chat.tests.factories import run_stream
    from apps.quotas import admission, alerts
    from apps.quotas.tests.admission_support import admin_of, set_limit
    from apps.registry.snapshot import reset_for_tests
    from tests.support.fake_upstream import FakeUpstream
    from tests.support.registry import Upstream, register_alias

    from .test_arena_chat import _ask, _client, _conversation

    a = staff_a.ministry
    admin = admin_of(a, "arena-meter-admin")
    names = ("meter-one", "meter-two", "meter-three")
    real_status = admission.budget_status

    def with_model_lines(*, ministry_id: int, user_id: int, alias_name: str = "") -> list[Any]:
        lines = list(real_status(ministry_id=ministry_id, user_id=user_id))
        for name in names:
            per_model = real_status(ministry_id=ministry_id, user_id=user_id, alias_name=name)
            lines += [line for line in per_model if line.alias_name]
        return lines

    monkeypatch.setattr(admission, "budget_status", with_model_lines)
    with FakeUpstream(tokens=3, word="はい") as up1, FakeUpstream(tokens=3, word="いいえ") as up2:
        for name, upstream in zip(names, (up1, up2, up1), strict=True):
            register_alias(upstreams=[Upstream(upstream.url)], ministries=[a], name=name)
            set_limit(a, admin, level="user", user=staff_a.user, alias_name=name, monthly_tokens=100_000)
        set_limit(a, admin, level="user", user=staff_a.user, monthly_tokens=100_000)
        reset_for_tests()
        battle_id, urls, _html = _ask(staff_a, _conversation(staff_a, alias_name="meter-one"))
        for url in urls.values():
            assert run_stream(staff_a.user, url).done is not None
    with ministry_scope(ministry_id=a.pk):
        alerts.budget_alerts_send(
            user_id=staff_a.user.pk,
            lines=[alerts.BudgetUse("user", staff_a.user.pk, "", "meter-two", "tokens", 85, 100)],  # type: ignore[arg-type]
        )
    client = _client(staff_a)
    model_line = re.compile(r"（meter-(one|two|three)）:")
    notice = re.compile(r'data-testid="notice" data-kind="budget_warning"')

    before = client.get("/chat/").content.decode()
    assert not model_line.findall(before), "per-model lines show which models answered"
    assert not notice.findall(before), "a per-model notice names a model"
    assert 'data-testid="budget-models-hidden"' in before
    assert 'data-testid="budget-line" data-level="user"' in before  # the all-models line stays
    english = client.get("/chat/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "until you vote" in english

    vote = client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "a"}, HTTP_HX_REQUEST="true")
    assert vote.status_code == 200
    after = client.get("/chat/").content.decode()
    assert sorted(model_line.findall(after)) == ["one", "three", "two"]
    assert len(notice.findall(after)) == 1 and 'data-testid="budget-models-hidden"' not in after
