"""The blind arena: isolation between ministries, votes, and Bradley–Terry leaderboards."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404
from django.test import Client
from django.urls import reverse

from apps.evaluation.arena import arena_battle_create, arena_candidates, arena_vote, get_battle_for_actor
from apps.evaluation.models import ArenaBattle, ArenaVote
from apps.evaluation.ratings import Vote, bradley_terry
from apps.evaluation.selectors import ministry_leaderboard, overall_leaderboard
from apps.quotas.models import UsageRecord
from apps.registry.services import alias_revoke
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user
from tests.support.registry import Registered, Upstream, register_alias


def _seeded(seed: int) -> random.Random:
    """Reproducible draws (not security: the arena itself uses SystemRandom)."""
    return random.Random(seed)  # noqa: S311


@pytest.fixture
def aliases(ministries: tuple[Any, Any]) -> Iterator[dict[str, Registered]]:
    a, b = ministries
    with FakeUpstream(tokens=3, word="はい") as up1, FakeUpstream(tokens=3, word="いいえ") as up2:
        registered = {
            "shared-one": register_alias(upstreams=[Upstream(up1.url)], ministries=[a, b], name="shared-one"),
            "shared-two": register_alias(upstreams=[Upstream(up2.url)], ministries=[a, b], name="shared-two"),
            # Granted to ministry A only: B must never see or rate it.
            "a-only": register_alias(upstreams=[Upstream(up1.url)], ministries=[a], name="a-only"),
            # Cleared for 機密性1 only: never drawn for a 機密性2 prompt.
            "level-one": register_alias(
                upstreams=[Upstream(up2.url, clearance=1)], ministries=[a, b], name="level-one"
            ),
        }
        reset_for_tests()
        yield registered


def test_candidates_follow_allowlist_and_level(aliases: Any, ministries: Any) -> None:
    a, b = ministries
    with ministry_scope(ministry_id=a.pk):
        assert arena_candidates(level=1) == ["a-only", "level-one", "shared-one", "shared-two"]
        assert arena_candidates(level=2) == ["a-only", "shared-one", "shared-two"]
    with ministry_scope(ministry_id=b.pk):
        assert arena_candidates(level=1) == ["level-one", "shared-one", "shared-two"]


def test_b_never_gets_the_a_only_candidate(aliases: Any, staff_b: Any, staff_a: Any) -> None:
    rng = _seeded(7)
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        seen = set()
        for _ in range(12):
            battle = arena_battle_create(actor=staff_b.user, prompt="比較して", level=1, rng=rng)
            seen.update({battle.alias_a.name, battle.alias_b.name})
            assert battle.answer_a and battle.answer_b and battle.alias_a_id != battle.alias_b_id
        assert "a-only" not in seen and seen == {"level-one", "shared-one", "shared-two"}
        assert UsageRecord.objects.filter(feature="eval", user=staff_b.user).count() == 24
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        names = set()
        for _ in range(12):
            battle = arena_battle_create(actor=staff_a.user, prompt="比較して", level=2, rng=rng)
            names.update({battle.alias_a.name, battle.alias_b.name})
        assert names == {"a-only", "shared-one", "shared-two"}  # level 2: level-one never drawn


def test_votes_are_own_and_once(aliases: Any, staff_a: Any, staff_b: Any, ministries: Any) -> None:
    a = ministries[0]
    colleague = make_user("colleague", a, ["staff"])
    with ministry_scope(ministry_id=a.pk):
        battle = arena_battle_create(actor=staff_a.user, prompt="質問", level=1, rng=_seeded(1))
        with pytest.raises(Http404):
            get_battle_for_actor(actor=colleague, battle_id=battle.pk)
        with pytest.raises(Http404):
            arena_vote(actor=colleague, battle=battle, outcome="a")
        arena_vote(actor=staff_a.user, battle=battle, outcome="tie")
        with pytest.raises(ValidationError):
            arena_vote(actor=staff_a.user, battle=battle, outcome="a")
    # Another ministry cannot even find the battle (RLS + tenant manager): 404 through the page.
    client = Client()
    client.force_login(staff_b.user)
    assert client.get(reverse("evaluation:arena_battle", args=[battle.pk])).status_code == 404
    assert (
        client.post(reverse("evaluation:arena_battle", args=[battle.pk]), {"outcome": "b"}).status_code == 404
    )


def test_vote_refused_after_grant_revoked(aliases: Any, staff_a: Any) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        battle = arena_battle_create(actor=staff_a.user, prompt="質問", level=2, rng=_seeded(3))
    alias_revoke(actor=None, ministry=staff_a.ministry, alias=battle.alias_a)
    reset_for_tests()
    with ministry_scope(ministry_id=staff_a.ministry.pk), pytest.raises(ValidationError):
        arena_vote(actor=staff_a.user, battle=battle, outcome="a")


def _battle(ministry: Any, user: Any, a: Any, b: Any, outcome: str) -> None:
    battle = ArenaBattle.objects.create(ministry=ministry, user=user, prompt="p", alias_a=a, alias_b=b)
    ArenaVote.objects.create(ministry=ministry, battle=battle, user=user, outcome=outcome)


def test_leaderboards_match_bradley_terry_by_hand(aliases: Any, staff_a: Any, staff_b: Any) -> None:
    one, two, only = (aliases[n].alias for n in ("shared-one", "shared-two", "a-only"))
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        # one beats two 3 times, two beats one once (as "b" in a battle listed the other way round).
        _battle(staff_a.ministry, staff_a.user, one, two, "a")
        _battle(staff_a.ministry, staff_a.user, two, one, "b")
        _battle(staff_a.ministry, staff_a.user, one, two, "a")
        _battle(staff_a.ministry, staff_a.user, two, one, "a")
        board = ministry_leaderboard()
    # By hand: with the 0.5 virtual-tie prior, wins one→two 3.25, two→one 1.25, so
    # p_one/p_two = 2.6, normalised to geometric mean 1: ratings 1000 ± 200·log10(2.6).
    expected = 200 * math.log10(2.6)
    assert [r.candidate for r in board] == ["shared-one", "shared-two"]
    assert board[0].rating == pytest.approx(1000 + expected, abs=1e-6)
    assert board[1].rating == pytest.approx(1000 - expected, abs=1e-6)
    assert board[0].low < board[0].rating < board[0].high

    with ministry_scope(ministry_id=staff_b.ministry.pk):
        assert ministry_leaderboard() == []  # A's votes are not B's
        _battle(staff_b.ministry, staff_b.user, one, two, "both_bad")
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        _battle(staff_a.ministry, staff_a.user, only, one, "a")
    votes = [
        Vote("shared-one", "shared-two", "a"), Vote("shared-two", "shared-one", "b"),
        Vote("shared-one", "shared-two", "a"), Vote("shared-two", "shared-one", "a"),
        Vote("shared-one", "shared-two", "tie"), Vote("a-only", "shared-one", "a"),
    ]  # fmt: skip
    overall = overall_leaderboard(visible=None)
    assert overall == bradley_terry(votes)
    # Staff of B: the overall board never names an alias B may not use.
    visible_to_b = {"shared-one", "shared-two", "level-one"}
    assert {r.candidate for r in overall_leaderboard(visible=visible_to_b)} == {"shared-one", "shared-two"}
    client = Client()
    client.force_login(staff_b.user)
    page = client.get(reverse("evaluation:arena")).content.decode()
    assert "shared-one" in page and "a-only" not in page


def test_vote_through_the_pages(aliases: Any, staff_a: Any) -> None:
    client = Client()
    client.force_login(staff_a.user)
    assert client.post(reverse("evaluation:arena_ask"), {"prompt": "", "level": "2"}).status_code == 400
    response = client.post(reverse("evaluation:arena_ask"), {"prompt": "首都は？", "level": "2"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "はい" in page or "いいえ" in page
    assert 'data-testid="name-a"' not in page  # names hidden until the vote
    assert client.post(response["Location"], {"outcome": "a"}).status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="name-a"' in page and 'data-testid="vote-recorded"' in page
