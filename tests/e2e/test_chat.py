"""Browser flow for staff chat: SSO login, pick a model, send Japanese, watch tokens stream, reload.

Streaming needs an ASGI server: under WSGI (pytest-django's ``live_server``)
Django collects an async ``StreamingHttpResponse`` into a list before sending
it, so nothing would arrive progressively. This module therefore serves the
app with uvicorn in a thread of the test process (same settings and test
database as ``live_server`` would use). The model is a :class:`FakeUpstream`
sending a token every 0.15 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from apps.tenancy.models import Ministry
from tests.support.asgi import AsgiServer
from tests.support.fake_upstream import FakeUpstream
from tests.support.idp import DevIdP
from tests.support.registry import Registered, Upstream, register_alias

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(os.environ.get("GENNAI_SCREENSHOTS", ".gennai/test/screenshots"))
TOKENS = 12
DELAY = 0.15
QUESTION = "こんにちは、要約してください"


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[str]:
    """The Django ASGI application under uvicorn (see tests/support/asgi.py)."""
    server = AsgiServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def fake_model() -> Iterator[FakeUpstream]:
    with FakeUpstream(tokens=TOKENS, delay=DELAY, word="要約") as upstream:
        yield upstream


@pytest.fixture
def site(dev_idp: DevIdP, asgi_server: str, fake_model: FakeUpstream) -> tuple[str, Registered]:
    call_command("seed_demo", verbosity=0)
    registered = register_alias(
        upstreams=[Upstream(fake_model.url, clearance=2)],
        ministries=[Ministry.objects.get(code="digital")],
        name="standard-chat",
        display_name_ja="標準チャット（テスト）",
        display_name_en="Standard chat (test)",
    )
    dev_idp.register_app(asgi_server)
    return asgi_server, registered


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/")
    page.get_by_test_id("login").click()
    page.get_by_test_id(f"login-{username}").click()
    page.wait_for_url(f"{base}/")


ANSWER_STATE = """() => {
  const all = document.querySelectorAll('article[data-role="assistant"]');
  const a = all[all.length - 1];
  if (!a) return null;
  const answer = a.querySelector('[data-testid="answer"]');
  return [a.dataset.status, answer ? answer.textContent.length : 0];
}"""


def watch_answer(page: Any, *, timeout: float = 20.0) -> list[int]:
    """Lengths of the streaming answer's text as it grows, until the answer is complete."""
    lengths: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = page.evaluate(ANSWER_STATE)
        if state is not None:
            status, length = state
            if status == "streaming" and (not lengths or length != lengths[-1]):
                lengths.append(length)
            if status in ("complete", "interrupted", "error"):
                assert status == "complete", status
                return lengths
        time.sleep(0.03)
    pytest.fail(f"answer did not complete in {timeout}s; lengths seen: {lengths}")


def test_staff_chats_and_sees_tokens_stream(
    page: Any, site: tuple[str, Registered], fake_model: FakeUpstream
) -> None:
    base, registered = site
    sign_in(page, base, "tanaka")
    page.get_by_test_id("nav-chat").click()
    page.wait_for_url(f"{base}/chat/")

    assert page.get_by_test_id("level-select").input_value() == "2"
    page.get_by_test_id("model-select").select_option(registered.alias.name)
    page.get_by_test_id("composer-input").fill(QUESTION)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-new.png"), full_page=True)
    page.get_by_test_id("start-conversation").click()
    page.wait_for_url(f"{base}/chat/*/")
    conversation_url = page.url
    page.locator('[data-role="assistant"][data-status="streaming"] [data-testid="answer"]').filter(
        has_text="要約2"
    ).wait_for()
    page.screenshot(path=str(SCREENSHOTS / "chat-streaming.png"), full_page=True)

    lengths = watch_answer(page)
    # Progressive: several distinct, growing lengths were on screen before "done".
    growing = [n for n in lengths if n > 0]
    assert len(set(growing)) >= 3, lengths
    assert growing == sorted(growing), lengths

    answer = page.locator('article[data-role="assistant"] [data-testid="answer"]').last
    expected = "".join(f"要約{i} " for i in range(TOKENS)).strip()
    assert answer.inner_text().strip() == expected
    assert page.get_by_test_id("message-usage").last.is_visible()
    assert fake_model.last_body["messages"] == [{"role": "user", "content": QUESTION}]
    assert page.get_by_test_id("conversation-title").inner_text().strip() == QUESTION
    page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)

    # A second turn through the composer (HTMX + SSE on the same page); focus stays in the box.
    page.get_by_test_id("composer-input").fill("もう少し短くしてください")
    page.get_by_test_id("composer-input").press("Control+Enter")
    page.locator('article[data-role="user"]').nth(1).wait_for()
    assert page.get_by_test_id("composer-input").input_value() == ""
    assert page.evaluate("document.activeElement && document.activeElement.id") == "composer-input"
    second = watch_answer(page)
    assert len({n for n in second if n > 0}) >= 3, second
    assert [m["role"] for m in fake_model.last_body["messages"]] == ["user", "assistant", "user"]

    # Reload keeps the history: both questions and both answers.
    page.goto(conversation_url)
    users = page.locator('article[data-role="user"] [data-testid="message-text"]')
    assert users.count() == 2
    assert users.nth(0).inner_text().strip() == QUESTION
    assert page.locator('article[data-role="assistant"][data-status="complete"]').count() == 2
    assert (
        page.locator('article[data-role="assistant"] [data-testid="answer"]').first.inner_text().strip()
        == expected
    )
    assert page.locator("[sse-connect]").count() == 0  # nothing left to stream
    page.get_by_test_id("conversation-link").first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "chat-reloaded.png"), full_page=True)


def test_stop_button_interrupts_and_keeps_partial_answer(page: Any, site: tuple[str, Registered]) -> None:
    base, registered = site
    sign_in(page, base, "tanaka")
    page.goto(f"{base}/chat/")
    page.get_by_test_id("model-select").select_option(registered.alias.name)
    page.get_by_test_id("composer-input").fill("長い説明をお願いします")
    page.get_by_test_id("start-conversation").click()
    page.wait_for_url(f"{base}/chat/*/")
    page.wait_for_function(
        """() => { const a = document.querySelector('[data-role="assistant"] [data-testid="answer"]');
                   return a && a.textContent.length > 8; }"""
    )
    # A second message while the answer streams: refused above the box (409), the text kept.
    page.get_by_test_id("composer-input").fill("もう一つ質問です")
    page.get_by_test_id("send").click()
    page.get_by_test_id("composer-error").wait_for(timeout=10_000)
    assert "前の回答を生成中です" in page.get_by_test_id("composer-errors").inner_text()
    assert page.get_by_test_id("composer-input").input_value() == "もう一つ質問です"
    assert page.locator('article[data-role="user"]').count() == 1
    page.get_by_test_id("stop").click()
    page.locator('article[data-role="assistant"][data-status="interrupted"]').wait_for(timeout=10_000)
    partial = page.locator('article[data-role="assistant"] [data-testid="answer"]').inner_text()
    assert partial.startswith("要約0 ")
    assert "途中で中断されました" in page.locator('article[data-role="assistant"]').inner_text()
    page.reload()
    assert page.locator('article[data-role="assistant"][data-status="interrupted"]').count() == 1
    assert (
        page.locator('article[data-role="assistant"] [data-testid="answer"]')
        .inner_text()
        .startswith("要約0 ")
    )
