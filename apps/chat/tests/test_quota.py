"""Chat under budgets and limits: 429 before anything is saved, refusals in the stream, and
reserve → settle to what was produced (complete, upstream dropped mid-stream, client gone),
with one usage record per answer and the 80 %/100 % notices sent exactly once.

Real PostgreSQL, real Redis (each test has its own admission key prefix), real views,
fake upstreams for failure injection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core import mail
from django.test import Client

from apps.chat.models import Message, Role, Status
from apps.chat.tests.factories import make_conversation, run_stream
from apps.console.models import Notification, NotificationKind
from apps.quotas import admission, alerts
from apps.quotas.models import UsageRecord
from apps.quotas.reconcile import reconcile
from apps.quotas.tests.admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    quota_redis_fixture,
    set_limit,
    team_with,
)
from apps.tenancy.scope import ministry_scope
from gennai.celery import app as celery_app
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

SSE_URL = re.compile(r'sse-connect="(/chat/\d+/messages/\d+/stream)"')
QUESTION = "こんにちは、要約してください"


@pytest.fixture
def admin_a(ministries: tuple[Any, Any], quota_redis: redis.Redis) -> Any:
    admin = admin_of(ministries[0], "quota-admin-a")
    admin.email = "quota-admin-a@digital.example.go.jp"
    admin.save()
    return admin


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run queued Celery tasks in place (the alerts task), as a worker would."""
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


def _conversation(actor: Actor, alias_name: str) -> Any:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return make_conversation(actor.user, actor.ministry, alias_name=alias_name, level=2)


def _send(actor: Actor, conversation: Any, *, language: str = "ja") -> Any:
    client = Client()
    client.force_login(actor.user)
    return client.post(
        f"/chat/{conversation.pk}/messages",
        {"content": QUESTION},
        HTTP_HX_REQUEST="true",
        HTTP_ACCEPT_LANGUAGE=language,
    )


def _ask(actor: Actor, conversation: Any) -> tuple[Message, str]:
    response = _send(actor, conversation)
    assert response.status_code == 200, response.content.decode()
    match = SSE_URL.search(response.content.decode())
    assert match is not None
    with ministry_scope(ministry_id=actor.ministry.pk):
        answer = Message.objects.filter(conversation=conversation, role=Role.ASSISTANT).latest("id")
    return answer, match.group(1)


def _messages(actor: Actor, conversation: Any) -> list[tuple[str, str]]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return list(Message.objects.filter(conversation=conversation).values_list("role", "status"))


def _records(actor: Actor) -> list[UsageRecord]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


def _user_line(actor: Actor) -> admission.BudgetLine:
    lines = admission.budget_status(ministry_id=actor.ministry.pk, user_id=actor.user.pk)
    (line,) = [line for line in lines if line.level == "user" and not line.alias_name]
    return line


def test_over_budget_message_gets_429_in_both_languages_and_nothing_is_saved(
    staff_a: Actor, admin_a: Any
) -> None:
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=100_000)
    with FakeUpstream(tokens=5) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        _answer, url = _ask(staff_a, conversation)
        run_stream(staff_a.user, url)
        assert _user_line(staff_a).used_tokens == 12  # 7 prompt + 5 completion, as reported
        # The admin lowers the budget below what was already used this month.
        set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=10)
        before = _messages(staff_a, conversation)

        response = _send(staff_a, conversation)
        english = _send(staff_a, conversation, language="en")
        assert fake.requests == 1, "no model call for a refused message"

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response["HX-Retarget"] == "#composer-errors"
    body = response.content.decode()
    assert "利用者の今月の利用上限に達しました" in body
    assert "リセットされます" in body
    assert english.status_code == 429
    assert "this month" in english.content.decode() and "resets on" in english.content.decode()
    assert _messages(staff_a, conversation) == before, "no user message, no half answer"
    assert len(_records(staff_a)) == 1


def test_over_budget_plain_form_post_renders_the_page_with_429(staff_a: Actor, admin_a: Any) -> None:
    set_limit(staff_a.ministry, admin_a, level="ministry", monthly_tokens=0)
    conversation = _conversation(staff_a, "any-alias")
    client = Client()
    client.force_login(staff_a.user)
    response = client.post(f"/chat/{conversation.pk}/messages", {"content": QUESTION})
    assert response.status_code == 429
    html = response.content.decode()
    assert "府省庁の今月の利用上限に達しました" in html and 'data-testid="composer"' in html
    assert QUESTION in html, "the typed text stays in the composer"
    assert _messages(staff_a, conversation) == []


def test_reservation_refused_in_the_stream_is_an_event_and_an_explained_error(
    staff_a: Actor, admin_a: Any
) -> None:
    # Nothing used yet (the POST passes), but the estimate (prompt + max_tokens) does not fit.
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=100)
    with FakeUpstream(tokens=5) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        answer, url = _ask(staff_a, conversation)
        result = run_stream(staff_a.user, url)
        assert fake.requests == 0, "the model is never called"
    assert [e.event for e in result.events] == ["refused", "done"]
    assert "今月の利用上限に達しました" in result.events[0].data
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        answer.refresh_from_db()
    assert (answer.status, answer.content) == (Status.ERROR, "")
    assert "リセット" in answer.error
    assert 'data-status="error"' in result.events[1].data
    (record,) = _records(staff_a)
    assert (record.status, record.detail, record.prompt_tokens, record.completion_tokens) == (
        "refused",
        "quota_budget",
        0,
        0,
    )
    line = _user_line(staff_a)
    assert (line.used_tokens, line.held_tokens) == (0, 0)


def test_rate_limit_refusal_says_when_to_retry(staff_a: Actor, admin_a: Any) -> None:
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, rpm=1)
    with FakeUpstream(tokens=2) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        _first, url = _ask(staff_a, conversation)
        run_stream(staff_a.user, url)
        _second, url = _ask(staff_a, conversation)
        result = run_stream(staff_a.user, url)
        assert fake.requests == 1
    assert result.events[0].event == "refused"
    assert "1分あたりの利用上限" in result.events[0].data and "秒後" in result.events[0].data


def test_a_complete_answer_settles_to_its_usage_and_writes_one_ledger_row(
    staff_a: Actor, admin_a: Any
) -> None:
    team = team_with(staff_a.ministry, "planning", staff_a.user)
    set_limit(staff_a.ministry, admin_a, level="team", team=team, monthly_tokens=100_000)
    with FakeUpstream(tokens=5) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        _answer, url = _ask(staff_a, conversation)
        run_stream(staff_a.user, url)
    (record,) = _records(staff_a)
    assert (record.feature, record.status, record.team_id, record.user_id) == (
        "chat",
        "ok",
        team.pk,
        staff_a.user.pk,
    )
    assert (record.prompt_tokens, record.completion_tokens) == (7, 5)
    assert record.model_name == reg.deployments[0].model.name
    (line,) = admission.budget_status(ministry_id=staff_a.ministry.pk, user_id=staff_a.user.pk)
    assert (line.level, line.used_tokens, line.held_tokens) == ("team", 12, 0)
    # The row carries the reservation's id, so the reconciler counts it once (ledger), not
    # twice (ledger + "settled, not in the ledger yet"): counters equal the ledger after a pass.
    assert record.request_id is not None
    reconcile()
    (line,) = admission.budget_status(ministry_id=staff_a.ministry.pk, user_id=staff_a.user.pk)
    assert (line.used_tokens, line.held_tokens) == (12, 0)


def test_upstream_that_drops_mid_stream_is_settled_to_what_was_produced(staff_a: Actor, admin_a: Any) -> None:
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=100_000)
    with FakeUpstream(mode="drop", tokens=10, drop_after=3) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        answer, url = _ask(staff_a, conversation)
        run_stream(staff_a.user, url)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        answer.refresh_from_db()
    assert answer.status == Status.INTERRUPTED
    (record,) = _records(staff_a)
    assert (record.status, record.completion_tokens) == ("interrupted", 3)
    assert record.prompt_tokens >= len(QUESTION), "counted by the platform: no usage chunk came"
    line = _user_line(staff_a)
    assert line.held_tokens == 0, "the reservation is gone"
    assert line.used_tokens == record.prompt_tokens + record.completion_tokens == answer.prompt_tokens + 3


def test_client_disconnect_is_settled_to_what_was_produced(staff_a: Actor, admin_a: Any) -> None:
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=100_000)
    with FakeUpstream(tokens=200, delay=0.02) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        answer, url = _ask(staff_a, conversation)
        result = run_stream(staff_a.user, url, cancel_after_tokens=4)
    assert result.done is None
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        answer.refresh_from_db()
    assert answer.status == Status.INTERRUPTED
    (record,) = _records(staff_a)
    assert record.status == "interrupted"
    assert 4 <= record.completion_tokens < 200
    line = _user_line(staff_a)
    assert line.held_tokens == 0
    assert line.used_tokens == record.prompt_tokens + record.completion_tokens


def test_crossing_80_and_100_percent_notifies_once_each(
    staff_a: Actor, admin_a: Any, staff_b: Actor, eager_tasks: None
) -> None:
    mail.outbox.clear()
    admin_b = admin_of(staff_b.ministry, "quota-admin-b")
    # The estimate is the counted prompt (≈ 21) + max_tokens capped at 20; the upstream then
    # produces 30 tokens (7 + 30 = 37 of 45 = 82 %).
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=45, max_tokens=20)
    with FakeUpstream(tokens=30) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        _answer, url = _ask(staff_a, conversation)
        run_stream(staff_a.user, url)
        assert fake.last_body["max_tokens"] == 20, "max_tokens capped by the limit"
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        notices = list(Notification.objects.order_by("id").values_list("recipient_id", "kind"))
    assert notices == [
        (staff_a.user.pk, NotificationKind.BUDGET_WARNING),
        (admin_a.pk, NotificationKind.BUDGET_WARNING),
    ]
    assert [m.to for m in mail.outbox] == [["quota-admin-a@digital.example.go.jp"]]

    # Another settle at the same level (and a lost marker) notifies nobody again.
    subject = admission.subject_for_user(
        ministry_id=staff_a.ministry.pk, user=staff_a.user, alias_name="", zone="on_prem"
    )
    assert alerts.alerts_maybe_enqueue(subject) is False
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert alerts.budget_alerts_for_user(user_id=staff_a.user.pk) == []

    # 100 %: the admin lowers the budget to what is used; the next settle reports it once.
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=37)
    assert alerts.alerts_maybe_enqueue(subject) is True
    assert alerts.alerts_maybe_enqueue(subject) is False
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        kinds = list(Notification.objects.values_list("kind", flat=True))
    assert sorted(kinds).count(NotificationKind.BUDGET_EXHAUSTED) == 2
    assert len(mail.outbox) == 2
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        assert not Notification.objects.exists(), "nothing for ministry B or its admin"
    assert admin_b.pk not in {r for m in mail.outbox for r in m.to}


def test_the_sidebar_shows_the_meter_and_the_users_notices(
    staff_a: Actor, admin_a: Any, colleague_a: Actor
) -> None:
    set_limit(staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=1000)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        alerts.budget_alerts_send(
            user_id=staff_a.user.pk,
            lines=[alerts.BudgetUse("user", staff_a.user.pk, "", "", "tokens", 850, 1000)],  # type: ignore[arg-type]
        )
        notice = Notification.objects.get(recipient=staff_a.user)
    client = Client()
    client.force_login(staff_a.user)
    html = client.get("/chat/").content.decode()
    assert 'data-testid="budget-line" data-level="user" data-percent="0"' in html
    assert "0 / 1,000 トークン" in html
    assert "月間予算の80%に達しました" in html

    other = Client()
    other.force_login(colleague_a.user)
    assert other.post(f"/chat/notices/{notice.pk}/dismiss").status_code == 404, "not the recipient"
    assert client.post(f"/chat/notices/{notice.pk}/dismiss", HTTP_HX_REQUEST="true").status_code == 200
    assert "月間予算の80%に達しました" not in client.get("/chat/").content.decode()


@pytest.mark.parametrize(
    ("failure", "shown", "detail"),
    [
        (admission.AdmissionUnavailable(retry_after=5), "利用量の確認ができないため", "quota_unavailable"),
        (RuntimeError("boom"), "回答の生成中にエラーが発生しました", "admission_error"),
    ],
)
def test_admission_that_cannot_decide_fails_closed_with_an_explained_answer(
    staff_a: Actor,
    quota_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    shown: str,
    detail: str,
) -> None:
    from apps.chat import quota as chat_quota

    async def failing_reserve(**_kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(chat_quota, "areserve", failing_reserve)
    with FakeUpstream(tokens=3) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        answer, url = _ask(staff_a, conversation)
        result = run_stream(staff_a.user, url)
        assert fake.requests == 0
    assert result.done is not None and shown in result.done.data
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        answer.refresh_from_db()
    assert (answer.status, answer.content) == (Status.ERROR, "")
    assert [(r.status, r.detail) for r in _records(staff_a)] == [("refused", detail)]


def test_browser_leaving_while_admission_runs_leaks_no_reservation(
    staff_a: Actor, admin_a: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reservation made after the cancellation is released at once, not held for 15 minutes."""
    import asyncio

    from apps.chat import quota as chat_quota

    real = chat_quota.areserve

    async def slow_reserve(**kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # a slow Redis: the browser leaves meanwhile
        return await real(**kwargs)

    monkeypatch.setattr(chat_quota, "areserve", slow_reserve)
    set_limit(
        staff_a.ministry, admin_a, level="user", user=staff_a.user, monthly_tokens=100_000, max_concurrent=1
    )
    with FakeUpstream(tokens=3) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        answer, url = _ask(staff_a, conversation)
        with pytest.raises(TimeoutError):
            run_stream(staff_a.user, url, timeout=0.2)
        assert fake.requests == 0
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        answer.refresh_from_db()
    assert answer.status == Status.INTERRUPTED
    line = _user_line(staff_a)
    assert (line.used_tokens, line.held_tokens) == (0, 0)
    assert [(r.status, r.prompt_tokens) for r in _records(staff_a)] == [("interrupted", 0)]
    # The concurrency slot is free again: the next answer is admitted.
    monkeypatch.setattr(chat_quota, "areserve", real)
    with FakeUpstream(tokens=2) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        conversation = _conversation(staff_a, reg.alias.name)
        answer, url = _ask(staff_a, conversation)
        assert run_stream(staff_a.user, url).tokens == ["tok0 ", "tok1 "]
