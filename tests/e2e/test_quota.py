"""Browser flow for budgets: a ministry admin lowers a user's budget in the console, and that
user's next chat message is refused with a clear message (and when it resets); nothing is saved.

Same stack as tests/e2e/test_chat.py (uvicorn in a thread, the dev IdP, a fake model), plus real
Redis for admission under a prefix of this test's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import redis

from apps.accounts.models import User
from apps.quotas.reconcile import reconcile
from apps.quotas.tests.admission_support import quota_redis_fixture  # noqa: F401  (provides quota_redis)
from tests.e2e.test_chat import (  # noqa: F401  (fixtures)
    QUESTION,
    asgi_server,
    fake_model,
    sign_in,
    site,
    watch_answer,
)
from tests.support.registry import Registered

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(os.environ.get("GENNAI_SCREENSHOTS", ".gennai/test/screenshots"))
FOLLOW_UP = "もう一度、短くまとめてください"


def test_admin_lowers_a_budget_and_the_users_next_message_is_refused(
    page: Any,
    browser: Any,
    site: tuple[str, Registered],  # noqa: F811  (the fixture imported above)
    quota_redis: redis.Redis,
) -> None:
    base, registered = site
    # tanaka chats once: the answer completes and is counted against the month.
    sign_in(page, base, "tanaka")
    page.goto(f"{base}/chat/")
    page.get_by_test_id("model-select").select_option(registered.alias.name)
    page.get_by_test_id("composer-input").fill(QUESTION)
    page.get_by_test_id("start-conversation").click()
    page.wait_for_url(f"{base}/chat/*/")
    watch_answer(page)
    tanaka = User.objects.get(username="tanaka")

    # sato (ministry admin of デジタル庁) sets tanaka's monthly budget below what was used.
    admin_context = browser.new_context(locale="ja-JP", viewport={"width": 1280, "height": 800})
    try:
        admin = admin_context.new_page()
        admin.set_default_timeout(15_000)
        sign_in(admin, base, "sato")
        admin.get_by_test_id("nav-console").click()
        admin.goto(f"{base}/console/limits/")
        admin.get_by_test_id("limit-create").click()
        admin.locator("#id_level").select_option("user")
        admin.locator("#id_user").select_option(str(tanaka.pk))
        admin.locator("#id_monthly_tokens").fill("10")
        admin.get_by_test_id("form-submit").click()
        admin.wait_for_url(f"{base}/console/limits/")
        assert "田中 花子" in admin.locator("main").inner_text()
    finally:
        admin_context.close()

    # tanaka's next message, within the minute: admission refuses it in the stream (the new
    # limit's counter starts empty, so the estimate alone exceeds it). The question stays, the
    # answer is the explanation, with no model text.
    page.get_by_test_id("composer-input").fill(FOLLOW_UP)
    page.get_by_test_id("send").click()
    refused = page.locator('article[data-role="assistant"][data-status="error"]')
    refused.wait_for()
    text = refused.get_by_test_id("message-error").inner_text()
    assert "今月の利用上限に達しました" in text and "リセットされます" in text, text
    assert refused.get_by_test_id("answer").count() == 0, "no half answer"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat-budget-refused-stream.png"), full_page=True)

    # Once the reconciler has reseeded the counter from the ledger (Celery beat, every minute),
    # the message is refused before anything is saved: 429 in the composer, the text kept.
    reconcile()
    before = page.locator("#messages article").count()
    page.get_by_test_id("composer-input").fill(FOLLOW_UP)
    page.get_by_test_id("send").click()
    error = page.get_by_test_id("composer-error")
    error.wait_for()
    text = error.inner_text()
    assert "今月の利用上限に達しました" in text and "リセットされます" in text, text
    assert page.get_by_test_id("composer-input").input_value() == FOLLOW_UP
    assert page.locator("#messages article").count() == before
    page.screenshot(path=str(SCREENSHOTS / "chat-budget-refused.png"), full_page=True)

    # After a reload the sidebar's meter shows the personal budget used up.
    page.reload()
    line = page.locator('[data-testid="budget-line"][data-level="user"]')
    assert line.get_attribute("data-percent") == "100"
