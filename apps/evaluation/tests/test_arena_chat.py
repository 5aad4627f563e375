"""The blind arena from chat: two anonymous answers streamed side by side, then the vote.

Through the real views (the composer's 「比較」 toggle, the two SSE streams through
Django's ASGI path, the vote), with deterministic fake upstreams.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import Client

from apps.chat.models import Conversation, Message, Role
from apps.chat.tests.factories import make_conversation, run_stream
from apps.evaluation.arena import arena_battle_start
from apps.evaluation.arena_models import ArenaStream
from apps.evaluation.models import ArenaBattle, ArenaVote
from apps.quotas.models import UsageRecord
from apps.quotas.tests.admission_support import admin_of, set_limit
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor, make_user
from tests.support.registry import Upstream, register_alias

STREAM_URL = re.compile(r'sse-connect="(/chat/arena/(\d+)/([ab])/stream)"')
QUESTION = "首都はどこですか"
NAMES = ("shared-one", "shared-two", "a-only", "level-one")


@pytest.fixture
def upstreams(ministries: tuple[Any, Any]) -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    a, b = ministries
    with FakeUpstream(tokens=3, word="はい") as up1, FakeUpstream(tokens=3, word="いいえ") as up2:
        register_alias(upstreams=[Upstream(up1.url)], ministries=[a, b], name="shared-one")
        register_alias(upstreams=[Upstream(up2.url)], ministries=[a, b], name="shared-two")
        # Granted to ministry A only: B must never be shown it, nor rate it.
        register_alias(upstreams=[Upstream(up1.url)], ministries=[a], name="a-only")
        # Cleared for 機密性1 only: never drawn for a 機密性2 conversation.
        register_alias(upstreams=[Upstream(up2.url, clearance=1)], ministries=[a, b], name="level-one")
        reset_for_tests()
        yield up1, up2
        reset_for_tests()


def _conversation(actor: Actor, *, level: int = 2, alias_name: str = "shared-one") -> Conversation:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return make_conversation(actor.user, actor.ministry, alias_name=alias_name, level=level)


def _client(actor: Actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def _ask(
    actor: Actor, conversation: Conversation, content: str = QUESTION
) -> tuple[int, dict[str, str], str]:
    """Send with the toggle ticked, as the composer does; the battle id, its two stream URLs, the HTML."""
    response = _client(actor).post(
        f"/chat/{conversation.pk}/messages", {"content": content, "arena": "1"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200, response.content.decode()
    html = response.content.decode()
    found = STREAM_URL.findall(html)
    assert len(found) == 2, html
    return int(found[0][1]), {side: url for url, _id, side in found}, html


def _battle(actor: Actor, battle_id: int) -> ArenaBattle:
    with ministry_scope(ministry_id=actor.ministry.pk):
        battle: ArenaBattle = ArenaBattle.objects.select_related("alias_a", "alias_b").get(pk=battle_id)
        return battle


def test_pair_is_drawn_only_from_the_ministrys_models_at_the_conversations_level(
    upstreams: Any, staff_a: Actor, staff_b: Actor
) -> None:
    rng = random.Random(11)  # noqa: S311 - reproducible draws; the arena itself uses SystemRandom
    seen_b: set[str] = set()
    conversation_b = _conversation(staff_b, level=1)
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        for _ in range(15):
            battle = arena_battle_start(
                actor=staff_b.user, conversation=conversation_b, prompt="比較", rng=rng
            )
            assert battle.alias_a_id != battle.alias_b_id and battle.level == 1
            seen_b |= {battle.alias_a.name, battle.alias_b.name}
    assert seen_b == {"shared-one", "shared-two", "level-one"}  # never A's own model
    seen_a: set[str] = set()
    conversation_a = _conversation(staff_a, level=2)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        for _ in range(15):
            battle = arena_battle_start(
                actor=staff_a.user, conversation=conversation_a, prompt="比較", rng=rng
            )
            seen_a |= {battle.alias_a.name, battle.alias_b.name}
    assert seen_a == {"shared-one", "shared-two", "a-only"}  # 機密性2: level-one never drawn


def test_both_sides_stream_anonymously_each_metered_then_the_vote_reveals(
    upstreams: tuple[FakeUpstream, FakeUpstream], staff_a: Actor
) -> None:
    conversation = _conversation(staff_a)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        Message.objects.create(conversation=conversation, role=Role.USER, content="前の質問")
        Message.objects.create(conversation=conversation, role=Role.ASSISTANT, content="前の回答")
    battle_id, urls, html = _ask(staff_a, conversation)
    assert not any(name in html for name in NAMES)  # anonymous
    assert 'data-testid="arena-vote-waiting"' in html and "arena-vote-form" not in html
    # Voting before both answers are in is refused.
    client = _client(staff_a)
    early = client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "a"}, HTTP_HX_REQUEST="true")
    assert early.status_code == 422

    first = run_stream(staff_a.user, urls["a"])
    assert first.status_code == 200 and first.tokens and first.done is not None
    assert not any(name in first.done.data for name in NAMES)
    assert "arena-vote-form" not in first.done.data  # the other side is still to come
    second = run_stream(staff_a.user, urls["b"])
    assert second.done is not None and "arena-vote-form" in second.done.data  # both in: the buttons
    assert not any(name in second.done.data for name in NAMES)
    # The conversation's history went with the question; the arena turn is not a chat message.
    sent = [upstream.last_body["messages"] for upstream in upstreams if upstream.requests]
    assert sent and all(m[-1]["content"] == QUESTION and m[0]["content"] == "前の質問" for m in sent)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert Message.objects.filter(conversation=conversation).count() == 2

    battle = _battle(staff_a, battle_id)
    assert battle.answer_a and battle.answer_b
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        records = UsageRecord.objects.filter(user=staff_a.user, feature="eval", endpoint="arena")
        assert sorted(r.alias_name for r in records) == sorted([battle.alias_a.name, battle.alias_b.name])
        assert all(r.status == "ok" and r.completion_tokens > 0 for r in records)
    calls = sum(u.requests for u in upstreams)
    assert calls == 2
    again = run_stream(staff_a.user, urls["a"])  # a reload replays, never calls the model again
    assert again.done is not None and not again.tokens and sum(u.requests for u in upstreams) == calls

    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert f'id="arena-{battle_id}"' in page and 'data-testid="arena-name-a"' not in page
    voted = client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "b"}, HTTP_HX_REQUEST="true")
    assert voted.status_code == 200
    revealed = voted.content.decode()
    assert battle.alias_a.name in revealed and battle.alias_b.name in revealed
    assert 'data-testid="arena-vote-recorded"' in revealed
    twice = client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "a"}, HTTP_HX_REQUEST="true")
    assert twice.status_code == 422
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert [v.outcome for v in ArenaVote.objects.filter(battle_id=battle_id)] == ["b"]
    assert 'data-testid="arena-name-a"' in client.get(f"/chat/{conversation.pk}/").content.decode()


def test_another_ministry_and_a_colleague_get_404(upstreams: Any, staff_a: Actor, staff_b: Actor) -> None:
    conversation = _conversation(staff_a)
    battle_id, urls, _html = _ask(staff_a, conversation)
    colleague = Actor(user=make_user("colleague", staff_a.ministry, ["staff"]), ministry=staff_a.ministry)
    for other in (staff_b, colleague):
        client = _client(other)
        assert client.get(f"/chat/arena/{battle_id}/a").status_code == 404
        assert client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "a"}).status_code == 404
        assert run_stream(other.user, urls["a"]).status_code == 404
        # Nor can anyone ask from someone else's conversation.
        assert (
            client.post(f"/chat/{conversation.pk}/messages", {"content": "x", "arena": "1"}).status_code
            == 404
        )
    assert sum(u.requests for u in upstreams) == 0
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert ArenaStream.objects.get(battle_id=battle_id).status_a == "streaming"  # never claimed


def test_a_side_over_budget_is_refused_before_any_model_call(
    upstreams: tuple[FakeUpstream, FakeUpstream], staff_a: Actor, quota_redis: redis.Redis
) -> None:
    a = staff_a.ministry
    set_limit(a, admin_of(a, "arena-chat-admin"), level="user", user=staff_a.user, monthly_tokens=1)
    battle_id, urls, _html = _ask(staff_a, _conversation(staff_a))
    result = run_stream(staff_a.user, urls["a"])
    assert result.done is not None and 'data-testid="arena-error-a"' in result.done.data
    assert "利用上限" in result.done.data
    assert sum(u.requests for u in upstreams) == 0
    with ministry_scope(ministry_id=a.pk):
        assert ArenaStream.objects.get(battle_id=battle_id).status_a == "error"
        record = UsageRecord.objects.get(user=staff_a.user, feature="eval")
        assert record.status == "refused" and record.completion_tokens == 0
    last = run_stream(staff_a.user, urls["b"])
    assert last.done is not None and 'data-testid="arena-vote-closed"' in last.done.data
    assert "arena-vote-form" not in last.done.data
    # No ballot (nor the names) for a comparison whose answers were refused before any model call.
    client = _client(staff_a)
    refused = client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "a"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 422 and "arena-name-a" not in refused.content.decode()
    with ministry_scope(ministry_id=a.pk):
        assert not ArenaVote.objects.exists()


def test_no_pair_at_this_level_is_explained(upstreams: Any, staff_b: Actor) -> None:
    # 機密性3: no model of B is cleared for it, so there is nothing to compare.
    conversation = _conversation(staff_b, level=3)
    response = _client(staff_b).post(
        f"/chat/{conversation.pk}/messages", {"content": "比較", "arena": "1"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 422 and "比較できるモデル" in response.content.decode()
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        assert not ArenaBattle.objects.exists()


def test_the_comparison_speaks_english_too(upstreams: Any, staff_a: Actor) -> None:
    conversation = _conversation(staff_a)
    client = _client(staff_a)
    page = client.get(f"/chat/{conversation.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Compare two models (blind comparison)" in page
    response = client.post(
        f"/chat/{conversation.pk}/messages",
        {"content": QUESTION, "arena": "1"},
        HTTP_HX_REQUEST="true",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    html = response.content.decode()
    assert "Two anonymous answers" in html and "You can vote once both answers are complete." in html


def test_a_new_conversation_can_start_with_a_comparison(
    upstreams: Any, staff_b: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(staff_b)
    form = {"alias": "shared-one", "level": "2", "content": QUESTION, "arena": "1"}
    response = client.post("/chat/new", form)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert len(STREAM_URL.findall(page)) == 2 and not any(name in page for name in ("shared-two", "a-only"))
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        conversation = Conversation.objects.get(owner=staff_b.user)
        assert conversation.title == QUESTION
        assert not Message.objects.filter(conversation=conversation).exists()
        assert ArenaStream.objects.get().conversation_id == conversation.pk
    # No second model to compare with: nothing is kept, the form explains and keeps the text.
    monkeypatch.setattr("apps.evaluation.arena.arena_candidates", lambda *, level: ["shared-one"])
    refused = client.post("/chat/new", form, HTTP_HX_REQUEST="true")
    assert refused.status_code == 422
    assert "比較できるモデル" in refused.content.decode() and QUESTION in refused.content.decode()
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        assert Conversation.objects.filter(owner=staff_b.user).count() == 1


def test_deleting_the_conversation_erases_the_comparisons_text_but_keeps_the_vote(
    upstreams: Any, staff_a: Actor
) -> None:
    conversation = _conversation(staff_a)
    battle_id, urls, _html = _ask(staff_a, conversation)
    for side in "ab":
        run_stream(staff_a.user, urls[side])
    client = _client(staff_a)
    assert client.post(f"/chat/arena/{battle_id}/vote", {"outcome": "tie"}).status_code == 302
    assert client.post(f"/chat/{conversation.pk}/delete").status_code == 302
    battle = _battle(staff_a, battle_id)
    assert (battle.prompt, battle.answer_a, battle.answer_b) == ("", "", "")
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert not ArenaStream.objects.exists()
        assert ArenaVote.objects.get(battle=battle).outcome == "tie"
