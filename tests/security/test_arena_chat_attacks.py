"""The blind arena asked from chat (e5ef7e4), as its own user would try to game it.

The vote of a chat battle waits for both answers (the stream row's sides). Deleting
the conversation takes the stream row with it (cascade) but leaves the battle: it
must not become a battle that can be voted on, and its names revealed, without
either answer ever being asked for (no model call, nothing metered).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from apps.chat.services import conversation_delete
from apps.chat.tests.factories import make_conversation
from apps.evaluation.arena import arena_battle_start, arena_vote, get_battle_for_actor
from apps.evaluation.models import ArenaVote
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(ministries: tuple[Any, Any]) -> Iterator[None]:
    a, b = ministries
    with FakeUpstream(tokens=3, word="はい") as up1, FakeUpstream(tokens=3, word="いいえ") as up2:
        register_alias(upstreams=[Upstream(up1.url)], ministries=[a, b], name="shared-one")
        register_alias(upstreams=[Upstream(up2.url)], ministries=[a, b], name="shared-two")
        reset_for_tests()
        yield
        reset_for_tests()


def test_deleting_the_conversation_does_not_open_the_vote_of_an_unanswered_battle(
    pair: None, staff_a: Actor
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="shared-one", level=1)
        battle = arena_battle_start(
            actor=staff_a.user,
            conversation=conversation,
            prompt="首都は",
            rng=random.Random(1),  # noqa: S311  (a test draw)
        )
        # Neither side was ever streamed: the vote must wait.
        with pytest.raises(ValidationError):
            arena_vote(actor=staff_a.user, battle=battle, outcome="a")
        conversation_delete(actor=staff_a.user, conversation=conversation)

    # Through the standalone arena page (it serves every battle of the user) ...
    client = Client()
    client.force_login(staff_a.user)
    response = client.post(f"/evaluation/arena/{battle.pk}/", {"outcome": "a"})
    page = client.get(f"/evaluation/arena/{battle.pk}/").content.decode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert not ArenaVote.objects.filter(battle_id=battle.pk).exists(), response.status_code
        # ... and through the service: still refused, no names on the page.
        found = get_battle_for_actor(actor=staff_a.user, battle_id=battle.pk)
        with pytest.raises(ValidationError):
            arena_vote(actor=staff_a.user, battle=found, outcome="b")
        assert found.alias_a.name not in page and found.alias_b.name not in page
