"""Defects of chat found in security review: each test failed before its fix."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.chat import quota, services
from apps.chat.models import Message, Role, Status
from apps.chat.tests.factories import make_conversation, make_message
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import Actor
from tests.support.races import race_through
from tests.support.registry import Upstream, register_alias

SSE_URL = re.compile(r'sse-connect="(/chat/\d+/messages/\d+/stream)"')
BUSY_JA = "前の回答を生成中です"


def _conversation(actor: Actor) -> Any:
    # Never called: the tests stop before any stream connects.
    reg = register_alias(upstreams=[Upstream("http://127.0.0.1:9")], ministries=[actor.ministry])
    with ministry_scope(ministry_id=actor.ministry.pk):
        return make_conversation(actor.user, actor.ministry, alias_name=reg.alias.name)


def _rows(actor: Actor, conversation: Any) -> list[tuple[str, str, str]]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return list(
            Message.objects.filter(conversation=conversation)
            .order_by("id")
            .values_list("role", "status", "content")
        )


def _client(actor: Actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


# --- One answer at a time per conversation ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_messages_sent_at_once_get_one_answer_and_one_refusal(
    staff_a: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sends passed "no answer pending" before either inserted: two answers streamed at
    once into one conversation, each with the other's question in its history."""
    conversation = _conversation(staff_a)

    def send(text: str) -> Any:
        def call() -> None:
            with ministry_scope(ministry_id=staff_a.ministry.pk):
                services.message_send(actor=staff_a.user, conversation=conversation, content=text)

        return call

    results = race_through(monkeypatch, quota, "precheck", [send("一つ目"), send("二つ目")])
    assert sorted(type(r).__name__ for r in results) == ["ConversationBusy", "NoneType"]
    refusal = next(r for r in results if r is not None)
    assert isinstance(refusal, services.ConversationBusy) and refusal.code == "busy"
    rows = _rows(staff_a, conversation)
    assert [(role, status) for role, status, _ in rows] == [
        (Role.USER, Status.COMPLETE),
        (Role.ASSISTANT, Status.STREAMING),
    ]


def test_a_second_send_before_the_first_answer_connects_is_a_409_in_the_composer(
    staff_a: Actor,
) -> None:
    """The second send dropped the first answer (never connected yet) and was answered instead:
    a double submit lost the first question's answer. Now it is refused, the text kept."""
    conversation = _conversation(staff_a)
    client = _client(staff_a)
    url = f"/chat/{conversation.pk}/messages"
    first = client.post(url, {"content": "一つ目"}, HTTP_HX_REQUEST="true")
    assert first.status_code == 200 and SSE_URL.search(first.content.decode())
    second = client.post(url, {"content": "二つ目"}, HTTP_HX_REQUEST="true")
    assert second.status_code == 409
    assert BUSY_JA in second.content.decode()
    assert second["HX-Retarget"] == "#composer-errors" and second["HX-Reswap"] == "innerHTML"
    english = client.post(url, {"content": "二つ目"}, HTTP_HX_REQUEST="true", HTTP_ACCEPT_LANGUAGE="en")
    assert english.status_code == 409
    assert "still being generated" in english.content.decode()
    plain = client.post(url, {"content": "二つ目"})  # without JavaScript: the page, text kept
    assert plain.status_code == 409 and BUSY_JA in plain.content.decode()
    assert "二つ目" in plain.content.decode()
    rows = _rows(staff_a, conversation)
    assert [(role, status, content) for role, status, content in rows] == [
        (Role.USER, Status.COMPLETE, "一つ目"),
        (Role.ASSISTANT, Status.STREAMING, ""),
    ]
    regenerate = client.post(f"/chat/{conversation.pk}/regenerate", HTTP_HX_REQUEST="true")
    assert regenerate.status_code == 409 and BUSY_JA in regenerate.content.decode()


def test_an_answer_left_unconnected_is_given_up_by_the_next_send(staff_a: Actor) -> None:
    """Kept: an answer whose page was closed before it connected does not block the
    conversation; once the grace has passed the next send marks it interrupted."""
    conversation = _conversation(staff_a)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        make_message(conversation, content="一つ目")
        left = make_message(conversation, role=Role.ASSISTANT, content="", status=Status.STREAMING)
        Message.objects.filter(pk=left.pk).update(
            created_at=timezone.now() - timedelta(seconds=services.CONNECT_GRACE_SECONDS + 5)
        )
    response = _client(staff_a).post(
        f"/chat/{conversation.pk}/messages", {"content": "二つ目"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    statuses = [status for _, status, _ in _rows(staff_a, conversation)]
    assert statuses == [Status.COMPLETE, Status.INTERRUPTED, Status.COMPLETE, Status.STREAMING]


# --- A stop pressed while the stream starts ------------------------------------------------------


def test_a_stop_pressed_while_the_stream_starts_takes_effect(
    staff_a: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop after the stream claimed the answer (so it only raises the flag) but before the relay's
    first check, which came ``STOP_CHECK_SECONDS`` after the start and only between chunks: the
    model was still called, and an answer shorter than that completed — the stop was lost."""
    from apps.chat.tests.factories import run_stream
    from tests.support.fake_upstream import FakeUpstream

    with FakeUpstream(tokens=3) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        with ministry_scope(ministry_id=staff_a.ministry.pk):
            conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name=reg.alias.name)
        response = _client(staff_a).post(
            f"/chat/{conversation.pk}/messages", {"content": "一つ目"}, HTTP_HX_REQUEST="true"
        )
        match = SSE_URL.search(response.content.decode())
        assert match is not None
        real_open = services.stream_open

        def open_then_stop(**kwargs: Any) -> Any:
            opened = real_open(**kwargs)  # claimed: from now on a stop only raises the flag
            assert isinstance(opened, services.StreamJob)
            stop = _client(staff_a).post(
                f"/chat/{conversation.pk}/messages/{kwargs['message_id']}/stop", HTTP_HX_REQUEST="true"
            )
            assert stop.status_code == 200 and "停止しています" in stop.content.decode()
            return opened

        monkeypatch.setattr(services, "stream_open", open_then_stop)  # as the view calls it
        result = run_stream(staff_a.user, match.group(1))
        assert fake.requests == 0, "the model was called after the stop"
    assert result.done is not None and not result.tokens
    assert 'data-status="interrupted"' in result.done.data
    statuses = [status for _, status, _ in _rows(staff_a, conversation)]
    assert statuses == [Status.COMPLETE, Status.INTERRUPTED]
