"""The blind arena (/evaluation/arena/, any staff member) calls two models per prompt.

Attack: a staff member whose month budget is used up (or whose rate limit is 1
a minute) keeps asking the arena: ``apps.evaluation.arena.arena_battle_create``
calls both upstreams with no admission (no reservation, no settle), so the
user's, their teams' and the ministry's budgets and rate limits do not apply
there. The calls are on the ledger (feature "eval") but were never allowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from apps.evaluation.arena import arena_battle_create
from apps.quotas.tests.admission_support import admin_of, set_limit
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.registry import Upstream, register_alias


@pytest.fixture
def two_upstreams(ministries: tuple[Any, Any]) -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    a, _b = ministries
    with FakeUpstream(tokens=3, word="はい") as up1, FakeUpstream(tokens=3, word="いいえ") as up2:
        register_alias(upstreams=[Upstream(up1.url)], ministries=[a], name="sec-arena-one")
        register_alias(upstreams=[Upstream(up2.url)], ministries=[a], name="sec-arena-two")
        reset_for_tests()
        yield up1, up2
        reset_for_tests()


def test_arena_refuses_a_user_whose_budget_is_used_up(
    two_upstreams: tuple[FakeUpstream, FakeUpstream], staff_a: Any, quota_redis: redis.Redis
) -> None:
    a = staff_a.ministry
    # The admin gives this user a month budget of 1 token: no answer fits in it.
    set_limit(a, admin_of(a, "sec-arena-admin"), level="user", user=staff_a.user, monthly_tokens=1)
    with ministry_scope(ministry_id=a.pk):
        # Any refusal will do (a ValidationError or QuotaExceeded); what matters is the upstream count.
        with contextlib.suppress(Exception):
            arena_battle_create(actor=staff_a.user, prompt="比較して", level=1)
    calls = sum(up.requests for up in two_upstreams)
    assert calls == 0, f"a user with a 1-token budget got {calls} model calls through the arena"
