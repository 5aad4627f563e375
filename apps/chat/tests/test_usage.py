"""Token usage of chat answers when the upstream reports none (llama.cpp does not).

The provider then reports ``prompt_tokens=0``; the chat must count the prompt
itself (a registered tokenizer, else an estimate flagged as such) and never
store 0 input tokens for a non-empty prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.chat.models import Message, Role, Status
from apps.chat.streaming import render_message
from apps.chat.tests.factories import make_conversation, run_stream
from apps.quotas.tokens import register_tokenizer, unregister_tokenizer
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

SSE_URL = re.compile(r'sse-connect="(/chat/\d+/messages/\d+/stream)"')
QUESTION = "来年度の予算要求の要点を三つにまとめてください。"


def _ask(actor: Actor, alias_name: str, content: str = QUESTION) -> tuple[Message, str]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        conversation = make_conversation(actor.user, actor.ministry, alias_name=alias_name, level=2)
    client = Client()
    client.force_login(actor.user)
    response = client.post(f"/chat/{conversation.pk}/messages", {"content": content}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200, response.content.decode()
    match = SSE_URL.search(response.content.decode())
    assert match is not None
    with ministry_scope(ministry_id=actor.ministry.pk):
        answer = Message.objects.filter(conversation=conversation, role=Role.ASSISTANT).latest("id")
    return answer, match.group(1)


def _reload(actor: Actor, message: Message) -> Message:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return Message.objects.get(pk=message.pk)


@pytest.fixture
def silent_upstream() -> Iterator[FakeUpstream]:
    """An upstream that streams an answer but no usage chunk (like llama.cpp)."""
    with FakeUpstream(tokens=4, usage=False) as fake:
        yield fake


def test_prompt_is_counted_and_flagged_when_the_upstream_reports_no_usage(
    staff_a: Actor, silent_upstream: FakeUpstream
) -> None:
    reg = register_alias(upstreams=[Upstream(silent_upstream.url)], ministries=[staff_a.ministry])
    answer, url = _ask(staff_a, reg.alias.name)
    result = run_stream(staff_a.user, url)

    message = _reload(staff_a, answer)
    assert message.status == Status.COMPLETE
    # Today's bug: 入力 0. The estimate counts each Japanese character (24) plus chat framing.
    assert message.prompt_tokens is not None and message.prompt_tokens >= len(QUESTION)
    assert message.prompt_tokens_estimated is True
    # The provider counted one token per content chunk and said so.
    assert (message.completion_tokens, message.completion_tokens_estimated) == (4, True)
    done = result.done
    assert done is not None
    assert f"入力 {message.prompt_tokens}（推定） / 出力 4（推定） トークン" in done.data


def test_a_registered_tokenizer_counts_exactly_and_is_not_flagged(
    staff_a: Actor, silent_upstream: FakeUpstream
) -> None:
    reg = register_alias(upstreams=[Upstream(silent_upstream.url)], ministries=[staff_a.ministry])
    model_name = reg.deployments[0].model.name
    # A stand-in tokenizer: one token per character.
    register_tokenizer(model_name, len)
    try:
        answer, url = _ask(staff_a, reg.alias.name)
        run_stream(staff_a.user, url)
    finally:
        unregister_tokenizer(model_name)
    message = _reload(staff_a, answer)
    # 3 for the assistant turn + 4 framing for the one user message + one per character.
    assert message.prompt_tokens == 3 + 4 + len(QUESTION)
    assert message.prompt_tokens_estimated is False


def test_counts_reported_by_the_upstream_are_kept_unflagged(staff_a: Actor) -> None:
    with FakeUpstream(tokens=3) as fake:  # reports prompt_tokens=7
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer, url = _ask(staff_a, reg.alias.name)
        result = run_stream(staff_a.user, url)
    message = _reload(staff_a, answer)
    assert (message.prompt_tokens, message.prompt_tokens_estimated) == (7, False)
    assert (message.completion_tokens, message.completion_tokens_estimated) == (3, False)
    assert result.done is not None and "推定" not in result.done.data


def test_an_answer_cut_off_mid_stream_still_counts_its_prompt(staff_a: Actor) -> None:
    with FakeUpstream(mode="drop", tokens=5, drop_after=2) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer, url = _ask(staff_a, reg.alias.name)
        run_stream(staff_a.user, url)
    message = _reload(staff_a, answer)
    assert message.status == Status.INTERRUPTED
    assert message.prompt_tokens and message.prompt_tokens >= len(QUESTION)
    assert message.prompt_tokens_estimated is True
    assert (message.completion_tokens, message.completion_tokens_estimated) == (2, True)


def test_estimated_counts_are_marked_in_english_too(staff_a: Actor, scope_a: Any) -> None:
    from django.utils import translation

    conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="x", level=2)
    message = Message.objects.create(
        conversation=conversation,
        role=Role.ASSISTANT,
        status=Status.COMPLETE,
        content="ok",
        prompt_tokens=31,
        prompt_tokens_estimated=True,
        completion_tokens=2,
    )
    with translation.override("en"):
        html = render_message(message)
    assert "31 (est.) input / 2 output tokens" in html
