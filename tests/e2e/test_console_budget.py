"""Browser: a ministry admin lowers a user's monthly budget in the console; that user's next chat
message is refused with the clear message, nothing is saved, and the console shows the new limit.

Served by uvicorn in a thread (tests/support/asgi.py) so the chat answer streams as in
production; admission runs against the test run's real Redis under a key prefix of its own.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client

from apps.quotas.budget_models import Limit
from apps.quotas.limits import limit_set
from apps.quotas.tests.admission_support import quota_redis_fixture  # noqa: F401  (provides quota_redis)
from apps.tenancy.scope import ministry_scope
from tests.support.asgi import AsgiServer
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user
from tests.support.registry import Upstream, register_alias

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTION = "こんにちは、要約してください"


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[str]:
    server = AsgiServer().start()
    try:
        yield server.url
    finally:
        server.stop()
        # Connections that the server's worker threads opened die with those threads only when
        # collected; left open, they keep the test database from being dropped at the end.
        gc.collect()


@pytest.fixture
def fake_model() -> Iterator[FakeUpstream]:
    with FakeUpstream(tokens=6, delay=0.02, word="要約") as upstream:
        yield upstream


def _sign_in(page: Any, base: str, user: Any) -> None:
    """Switch the browser to ``user``'s session (the OIDC flow itself is tested in test_login_flow)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.clear_cookies()
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": base}])


def test_admin_lowers_a_budget_and_the_next_message_is_refused(
    page: Any,
    asgi_server: str,
    fake_model: FakeUpstream,
    ministries: tuple[Any, Any],
    quota_redis: redis.Redis,
) -> None:
    digital = ministries[0]
    admin = make_user("budget-admin", digital, ["staff", "ministry_admin"])
    staff = make_user("budget-staff", digital, ["staff"])
    register_alias(
        upstreams=[Upstream(fake_model.url, clearance=2)],
        ministries=[digital],
        name="standard-chat",
        display_name_ja="標準チャット（テスト）",
        display_name_en="Standard chat (test)",
    )
    with ministry_scope(ministry_id=digital.pk):
        limit = limit_set(actor=admin, level="user", user=staff, monthly_tokens=1_000_000)
    base = asgi_server

    # The staff member has room: the first question is answered.
    _sign_in(page, base, staff)
    page.goto(f"{base}/chat/")
    page.get_by_test_id("model-select").select_option("standard-chat")
    page.get_by_test_id("composer-input").fill(QUESTION)
    page.get_by_test_id("start-conversation").click()
    page.wait_for_url(f"{base}/chat/*/")
    conversation_url = page.url
    page.locator('article[data-role="assistant"][data-status="complete"]').wait_for()

    # The admin lowers that user's budget below what they already used, in the console.
    _sign_in(page, base, admin)
    page.goto(f"{base}/console/members/{staff.pk}/")
    page.get_by_test_id(f"limit-edit-{limit.pk}").click()
    page.get_by_test_id("field-monthly_tokens").fill("1")
    page.get_by_test_id("form-submit").click()
    page.wait_for_url(f"{base}/console/limits/")
    row = page.get_by_test_id(f"limit-{limit.pk}")
    assert "budget-staff" in row.inner_text() and "1000000" not in row.inner_text()
    with ministry_scope(ministry_id=digital.pk):
        assert Limit.objects.get(pk=limit.pk).monthly_tokens == 1

    # The user's next message is refused with the clear message, and nothing is saved.
    _sign_in(page, base, staff)
    page.goto(conversation_url)
    page.get_by_test_id("composer-input").fill("続けてください")
    page.get_by_test_id("composer-input").press("Control+Enter")
    error = page.get_by_test_id("composer-error")
    error.wait_for()
    assert "利用者の今月の利用上限に達しました" in error.inner_text()
    assert page.get_by_test_id("composer-input").input_value() == "続けてください"  # the text is kept
    page.reload()
    assert page.locator('article[data-role="user"]').count() == 1
