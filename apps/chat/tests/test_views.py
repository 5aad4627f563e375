"""Chat pages: conversations, validation, privacy, search, pagination, model picker."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.chat import services
from apps.chat.models import Conversation, Message, Role, Status
from apps.chat.tests.factories import make_conversation, make_message
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

LOCAL = "http://127.0.0.1:9"  # never contacted by these tests


@pytest.fixture
def aliases(staff_a: Actor, staff_b: Actor) -> dict[str, Any]:
    """level2: cleared to 2, granted to A; level3: cleared to 3, granted to A; other: granted to B only."""
    return {
        "level2": register_alias(
            upstreams=[Upstream(LOCAL, clearance=2)], ministries=[staff_a.ministry], display_name_ja="標準2"
        ).alias,
        "level3": register_alias(
            upstreams=[Upstream(LOCAL, clearance=3)], ministries=[staff_a.ministry], display_name_ja="高機密3"
        ).alias,
        "other": register_alias(
            upstreams=[Upstream(LOCAL, clearance=3)],
            ministries=[staff_b.ministry],
            display_name_ja="他省庁用",
        ).alias,
    }


def _conversations(actor: Actor) -> list[Conversation]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return list(Conversation.objects.filter(owner=actor.user).order_by("id"))


def _messages(actor: Actor, conversation: Conversation) -> list[Message]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return list(Message.objects.filter(conversation=conversation).order_by("id"))


def test_index_model_picker_shows_only_allowed_aliases_cleared_for_the_level(
    client_a: Client, aliases: dict[str, Any]
) -> None:
    html = client_a.get("/chat/").content.decode()  # default level 2
    assert "標準2" in html and "高機密3" in html and "他省庁用" not in html
    level3 = client_a.get("/chat/models", {"level": 3}, HTTP_HX_REQUEST="true").content.decode()
    assert "高機密3" in level3 and "標準2" not in level3 and "他省庁用" not in level3
    assert 'data-testid="level-select"' in html and "機密性3" in html


def test_no_alias_for_level_is_explained(client_a: Client, staff_a: Actor) -> None:
    html = client_a.get("/chat/models", {"level": 3}).content.decode()
    assert 'data-testid="no-models"' in html and "機密性3の情報を扱えるモデル" in html


def test_create_with_first_message_opens_conversation(
    client_a: Client, staff_a: Actor, aliases: dict[str, Any]
) -> None:
    text = "会議の議事録を要約してください。" * 5
    response = client_a.post("/chat/new", {"alias": aliases["level2"].name, "level": 2, "content": text})
    (conversation,) = _conversations(staff_a)
    assert response.status_code == 302 and response["Location"] == f"/chat/{conversation.pk}/"
    assert conversation.level == 2 and conversation.alias_name == aliases["level2"].name
    assert len(conversation.title) <= 40 and conversation.title.startswith("会議の議事録を要約してください。")
    user_msg, answer = _messages(staff_a, conversation)
    assert (user_msg.role, user_msg.content) == (Role.USER, text)
    assert answer.status == Status.STREAMING
    page = client_a.get(response["Location"]).content.decode()
    assert "sse-connect" in page and text in page
    assert AuditEvent.objects.filter(
        action="chat.conversation.create", target_id=str(conversation.pk)
    ).exists()


def test_create_via_htmx_redirects_client_side(
    client_a: Client, staff_a: Actor, aliases: dict[str, Any]
) -> None:
    response = client_a.post(
        "/chat/new",
        {"alias": aliases["level3"].name, "level": 3, "content": "こんにちは"},
        HTTP_HX_REQUEST="true",
    )
    (conversation,) = _conversations(staff_a)
    assert response.status_code == 200 and response["HX-Redirect"] == conversation.get_absolute_url()


@pytest.mark.parametrize(
    ("alias_key", "level"),
    [("level2", 3), ("other", 2), ("level2", 9)],
    ids=["not-cleared-for-level", "not-on-allowlist", "bad-level"],
)
def test_create_refuses_alias_not_allowed_for_level(
    client_a: Client, staff_a: Actor, aliases: dict[str, Any], alias_key: str, level: int
) -> None:
    response = client_a.post(
        "/chat/new", {"alias": aliases[alias_key].name, "level": level, "content": "秘密の話"}
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "この機密性の区分では利用できません" in html or "機密性の区分を選んでください" in html
    assert "秘密の話" in html  # what was typed is shown again, not lost
    assert _conversations(staff_a) == []


@pytest.mark.parametrize(
    ("content", "ja", "en"),
    [
        ("   \n ", "メッセージを入力してください。", "Please enter a message."),
        (
            "あ" * 20_001,
            "メッセージが長すぎます（20,000文字まで、現在20,001文字）",
            "Your message is too long",
        ),
    ],
    ids=["empty", "too-long"],
)
def test_message_validation_errors_in_both_languages(
    client_a: Client, staff_a: Actor, content: str, ja: str, en: str
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="x")
    url = f"/chat/{conversation.pk}/messages"
    response = client_a.post(url, {"content": content}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert ja in response.content.decode()
    english = client_a.post(url, {"content": content}, HTTP_HX_REQUEST="true", HTTP_ACCEPT_LANGUAGE="en")
    assert english.status_code == 422 and en in english.content.decode()
    assert _messages(staff_a, conversation) == []
    # Without JavaScript: the page again, with the text kept in the box.
    plain = client_a.post(url, {"content": content})
    assert plain.status_code == 422 and ja in plain.content.decode()


def test_exactly_20000_chars_is_accepted(client_a: Client, staff_a: Actor, aliases: dict[str, Any]) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name=aliases["level2"].name)
    response = client_a.post(
        f"/chat/{conversation.pk}/messages", {"content": "あ" * 20_000}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert len(_messages(staff_a, conversation)[0].content) == 20_000


def test_send_while_generating_is_refused_but_page_stays_usable(
    client_a: Client, staff_a: Actor, aliases: dict[str, Any]
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name=aliases["level2"].name)
        make_message(conversation, content="一つ目")
        make_message(conversation, role=Role.ASSISTANT, content="途中", status=Status.STREAMING,
                     stream_started_at=conversation.created_at)  # fmt: skip
    response = client_a.post(
        f"/chat/{conversation.pk}/messages", {"content": "二つ目"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 409 and "前の回答を生成中です" in response.content.decode()


def test_stale_streaming_message_is_marked_interrupted(client_a: Client, staff_a: Actor) -> None:
    from datetime import timedelta

    from django.utils import timezone

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="x")
        answer = make_message(conversation, role=Role.ASSISTANT, content="部分", status=Status.STREAMING,
                              stream_started_at=timezone.now())  # fmt: skip
        Message.objects.filter(pk=answer.pk).update(
            updated_at=timezone.now() - timedelta(seconds=services.STALE_STREAM_SECONDS + 5)
        )
    html = client_a.get(conversation.get_absolute_url()).content.decode()
    assert 'data-status="interrupted"' in html and "部分" in html and "途中で中断されました" in html


def test_stop_before_stream_starts_marks_interrupted(client_a: Client, staff_a: Actor) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="x")
        answer = make_message(conversation, role=Role.ASSISTANT, content="", status=Status.STREAMING)
    response = client_a.post(f"/chat/{conversation.pk}/messages/{answer.pk}/stop", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'data-status="interrupted"' in response.content.decode()
    assert _messages(staff_a, conversation)[0].status == Status.INTERRUPTED


def test_rename_and_delete(client_a: Client, staff_a: Actor) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="x", title="旧題")
        make_message(conversation, content="本文")
    response = client_a.post(
        f"/chat/{conversation.pk}/rename", {"title": "  新しい 題名 "}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and "新しい 題名" in response.content.decode()
    assert _conversations(staff_a)[0].title == "新しい 題名"
    empty = client_a.post(f"/chat/{conversation.pk}/rename", {"title": " "}, HTTP_HX_REQUEST="true")
    assert empty.status_code == 422 and "タイトルを入力してください。" in empty.content.decode()

    confirm = client_a.get(f"/chat/{conversation.pk}/delete")
    assert confirm.status_code == 200 and "新しい 題名" in confirm.content.decode()
    assert _conversations(staff_a)  # GET never deletes
    response = client_a.post(f"/chat/{conversation.pk}/delete", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == "/chat/"
    assert _conversations(staff_a) == []
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert client_a.get(conversation.get_absolute_url()).status_code == 404


def test_search_own_history_by_title_and_message(
    client_a: Client, staff_a: Actor, colleague_a: Actor
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        by_title = make_conversation(staff_a.user, staff_a.ministry, alias_name="x", title="予算要求の相談")
        by_message = make_conversation(staff_a.user, staff_a.ministry, alias_name="x", title="無関係")
        make_message(by_message, role=Role.ASSISTANT, content="来年度の予算要求について整理します")
        make_conversation(staff_a.user, staff_a.ministry, alias_name="x", title="別件")
        theirs = make_conversation(
            colleague_a.user, colleague_a.ministry, alias_name="x", title="予算要求（同僚）"
        )
    response = client_a.get(
        "/chat/", {"q": "予算要求"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="conversation-list"
    )
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith("<nav")
    ids = {int(x) for x in re.findall(r'href="/chat/(\d+)/"', html)}
    assert ids == {by_title.pk, by_message.pk}
    assert theirs.pk not in ids
    none = client_a.get("/chat/", {"q": "存在しない語"}).content.decode()
    assert "該当する会話はありません。" in none
    percent = client_a.get("/chat/", {"q": "%"}).content.decode()  # LIKE wildcards are literal
    assert "該当する会話はありません。" in percent


def test_list_is_paginated_by_50_newest_first(client_a: Client, staff_a: Actor) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        made = [
            make_conversation(staff_a.user, staff_a.ministry, alias_name="x", title=f"会話{i}")
            for i in range(51)
        ]
    first = client_a.get("/chat/").content.decode()
    ids = [int(x) for x in re.findall(r'href="/chat/(\d+)/" data-testid="conversation-link"', first)]
    assert len(ids) == 50 and ids[0] == made[-1].pk
    second = client_a.get("/chat/", {"page": 2}).content.decode()
    assert re.findall(r'href="/chat/(\d+)/" data-testid="conversation-link"', second) == [str(made[0].pk)]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/chat/{c}/"),
        ("get", "/chat/{c}/delete"),
        ("get", "/chat/{c}/messages/{m}"),
        ("post", "/chat/{c}/messages"),
        ("post", "/chat/{c}/rename"),
        ("post", "/chat/{c}/delete"),
        ("post", "/chat/{c}/regenerate"),
        ("post", "/chat/{c}/messages/{m}/stop"),
    ],
)
def test_same_ministry_colleague_and_other_ministry_get_404(
    staff_a: Actor, colleague_a: Actor, staff_b: Actor, method: str, path: str
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = make_conversation(staff_a.user, staff_a.ministry, alias_name="x", title="私的な会話")
        message = make_message(conversation, role=Role.ASSISTANT, content="私的な回答")
    url = path.format(c=conversation.pk, m=message.pk)
    for actor in (colleague_a, staff_b):
        client = Client()
        client.force_login(actor.user)
        response = getattr(client, method)(url, {"content": "x", "title": "乗っ取り"})
        assert response.status_code == 404, (actor.user.username, url)
    assert _conversations(staff_a)[0].title == "私的な会話"
    assert len(_messages(staff_a, conversation)) == 1


def test_colleague_does_not_see_my_conversations_in_list(
    client_a: Client, staff_a: Actor, colleague_a: Actor
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        make_conversation(colleague_a.user, colleague_a.ministry, alias_name="x", title="同僚の会話")
    assert "同僚の会話" not in client_a.get("/chat/").content.decode()


def test_user_without_membership_is_refused(db: None) -> None:
    from apps.accounts.models import User

    loner = User.objects.create(username="loner", subject="sub-loner")
    client = Client()
    client.force_login(loner)
    assert client.get("/chat/").status_code == 403


def test_header_links_to_chat_for_members(client_a: Client) -> None:
    html = client_a.get("/").content.decode()
    assert 'data-testid="nav-chat"' in html and 'href="/chat/"' in html
    assert 'data-testid="nav-chat"' not in Client().get("/").content.decode()


def test_english_ui(client_a: Client, aliases: dict[str, Any]) -> None:
    html = client_a.get("/chat/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "New conversation" in html and "Confidentiality level" in html
