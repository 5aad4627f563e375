"""Cited answers are charged like chat (feature ``rag``): reserved before the model, settled
after, one usage record; a budget that cannot hold the answer refuses it with an explanation."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from apps.chat.models import Status
from apps.chat.tests.factories import run_stream
from apps.quotas import admission
from apps.quotas.models import UsageRecord
from apps.quotas.tests.admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    quota_redis_fixture,
    set_limit,
)
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

from . import samples
from .test_answers import _answer, _ask, _fresh_registry, docs, query_embedder  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed")

QUESTION = "宿泊料の上限はいくらですか"


def _records(actor: Actor) -> list[UsageRecord]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return list(UsageRecord.objects.filter(feature="rag").order_by("id"))


def test_a_cited_answer_is_reserved_settled_and_recorded_as_rag(
    staff_a: Actor,
    shared_workspace: Any,
    docs: Any,  # noqa: F811
    quota_redis: redis.Redis,
) -> None:
    admin = admin_of(staff_a.ministry, "rag-quota-admin")
    set_limit(staff_a.ministry, admin, level="user", user=staff_a.user, monthly_tokens=100_000)
    with FakeUpstream(tokens=2, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer = _answer(staff_a, _ask(staff_a, shared_workspace, QUESTION, reg.alias.name))
        run_stream(staff_a.user, f"/documents/answers/{answer.pk}/stream")
    (record,) = _records(staff_a)
    assert (record.status, record.user_id, record.prompt_tokens, record.completion_tokens) == (
        "ok",
        staff_a.user.pk,
        7,
        2,
    )
    (line,) = admission.budget_status(ministry_id=staff_a.ministry.pk, user_id=staff_a.user.pk)
    assert (line.used_tokens, line.held_tokens) == (9, 0)


def test_a_budget_that_cannot_hold_the_answer_refuses_it_with_an_explanation(
    staff_a: Actor,
    shared_workspace: Any,
    docs: Any,  # noqa: F811
    quota_redis: redis.Redis,
) -> None:
    admin = admin_of(staff_a.ministry, "rag-quota-admin")
    set_limit(staff_a.ministry, admin, level="user", user=staff_a.user, monthly_tokens=50)
    with FakeUpstream(tokens=2, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer = _answer(staff_a, _ask(staff_a, shared_workspace, QUESTION, reg.alias.name))
        result = run_stream(staff_a.user, f"/documents/answers/{answer.pk}/stream")
        assert fake.requests == 0
    assert [e.event for e in result.events] == ["refused", "done"]
    assert "今月の利用上限に達しました" in result.events[0].data
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        answer.message.refresh_from_db()
    assert (answer.message.status, answer.message.content) == (Status.ERROR, "")
    assert [(r.status, r.detail) for r in _records(staff_a)] == [("refused", "quota_budget")]
