"""Browser: a staff member compares two anonymous models from the chat page, watches both answers
stream side by side, votes, sees the names and the ministry leaderboard; the standalone arena page
still works too.

Served by uvicorn (tests/support/asgi.py), as in production: the streams and the ask view are async
and must work on the event loop with their database hops (DESIGN invariant 10)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from apps.evaluation.models import ArenaVote
from apps.quotas.models import UsageRecord
from apps.registry.breaker import breaker
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope
from tests.e2e.test_registry import shoot, sign_in
from tests.support.asgi import AsgiServer
from tests.support.fake_upstream import FakeUpstream
from tests.support.idp import DevIdP
from tests.support.registry import Upstream, register_alias

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOKENS = 8
DELAY = 0.15  # a token every 0.15 s: slow enough to see both answers grow


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[str]:
    server = AsgiServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def site(dev_idp: DevIdP, asgi_server: str) -> Iterator[str]:
    call_command("seed_demo", verbosity=0)
    dev_idp.register_app(asgi_server)
    reset_for_tests()
    breaker.reset()
    digital = Ministry.objects.get(code="digital")
    with (
        FakeUpstream(tokens=TOKENS, delay=DELAY, word="回答甲") as one,
        FakeUpstream(tokens=TOKENS, delay=DELAY, word="回答乙") as two,
    ):
        register_alias(upstreams=[Upstream(one.url)], ministries=[digital], name="arena-one")
        register_alias(upstreams=[Upstream(two.url)], ministries=[digital], name="arena-two")
        reset_for_tests()
        yield asgi_server
    reset_for_tests()


SIDES_STATE = """() => ['a', 'b'].map((s) => {
  const side = document.querySelector(`[data-testid="arena-side-${s}"]`);
  const text = side && side.querySelector(`[data-testid="arena-answer-${s}"]`);
  return side ? [side.dataset.status, text ? text.textContent.length : 0] : null;
})"""


def watch_both(page: Any, *, timeout: float = 20.0) -> list[tuple[int, int]]:
    """Both sides' text lengths while at least one streams, until both are complete."""
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = page.evaluate(SIDES_STATE)
        if all(state):
            (status_a, len_a), (status_b, len_b) = state
            if "streaming" in (status_a, status_b) and (not seen or seen[-1] != (len_a, len_b)):
                seen.append((len_a, len_b))
            if status_a != "streaming" and status_b != "streaming":
                assert (status_a, status_b) == ("complete", "complete"), state
                return seen
        time.sleep(0.03)
    pytest.fail(f"the two answers did not complete in {timeout}s; seen: {seen}")


def test_staff_compares_two_anonymous_models_in_chat_and_votes(page: Any, site: str) -> None:
    sign_in(page, site, "tanaka")
    page.goto(f"{site}/chat/")
    page.get_by_test_id("level-select").select_option("2")
    page.get_by_test_id("model-select").select_option("arena-one")
    page.get_by_test_id("composer-input").fill("こんにちは")
    page.get_by_test_id("start-conversation").click()
    page.wait_for_url(f"{site}/chat/*/")
    page.locator('article[data-role="assistant"][data-status="complete"]').wait_for()

    # Tick the comparison toggle and send from the same composer.
    page.get_by_test_id("arena-toggle").locator("input").check()
    page.get_by_test_id("composer-input").fill("行政手続のオンライン化の利点を一文で")
    page.get_by_test_id("send").click()
    page.get_by_test_id("arena-turn").wait_for()
    assert page.get_by_test_id("arena-vote-waiting").is_visible()  # no buttons while they stream
    growth = watch_both(page)
    # Both answers grew on screen at the same time (side by side, streamed), not one after the other.
    assert any(0 < a < max(x for x, _ in growth) and 0 < b < max(y for _, y in growth) for a, b in growth), (
        growth
    )
    answers = (
        page.get_by_test_id("arena-side-a").inner_text() + page.get_by_test_id("arena-side-b").inner_text()
    )
    assert "回答甲" in answers and "回答乙" in answers
    assert "arena-one" not in answers and "arena-two" not in answers  # anonymous until the vote
    assert page.get_by_test_id("arena-name-a").count() == 0
    page.get_by_test_id("arena-vote-a").wait_for()  # the buttons came with the last answer
    shoot(page, "arena-chat")
    page.get_by_test_id("arena-vote-a").click()
    page.get_by_test_id("arena-vote-recorded").wait_for()
    names = (
        page.get_by_test_id("arena-name-a").inner_text() + page.get_by_test_id("arena-name-b").inner_text()
    )
    assert "arena-one" in names and "arena-two" in names
    digital = Ministry.objects.get(code="digital")
    with ministry_scope(ministry_id=digital.pk):
        assert ArenaVote.objects.get().outcome == "a"
        # Each side was one metered call (plus the conversation's first, ordinary answer).
        assert UsageRecord.objects.filter(feature="eval", endpoint="arena", status="ok").count() == 2
    page.reload()  # after a reload the comparison is still there, names shown, no stream reopened
    assert "arena-one" in page.get_by_test_id("arena-turn").inner_text()

    page.goto(f"{site}/evaluation/arena/")
    board = page.get_by_test_id("board-ministry")
    board.wait_for()
    assert board.locator("tbody tr").count() == 2
    shoot(page, "arena-leaderboard")


def test_the_standalone_arena_page_still_votes(page: Any, site: str) -> None:
    sign_in(page, site, "tanaka")
    page.goto(f"{site}/evaluation/arena/")
    page.get_by_test_id("arena-form").locator("textarea").fill("行政手続のオンライン化の利点を一文で")
    page.get_by_test_id("arena-form").locator("select").select_option("2")
    page.get_by_test_id("arena-submit").click()
    page.wait_for_url(f"{site}/evaluation/arena/*/")
    answers = page.get_by_test_id("answer-a").inner_text() + page.get_by_test_id("answer-b").inner_text()
    assert "回答甲" in answers and "回答乙" in answers
    assert page.get_by_test_id("name-a").count() == 0  # anonymous until the vote
    shoot(page, "arena-battle")
    page.get_by_test_id("vote-b").click()
    page.get_by_test_id("vote-recorded").wait_for()
    with ministry_scope(ministry_id=Ministry.objects.get(code="digital").pk):
        assert ArenaVote.objects.get().outcome == "b"
