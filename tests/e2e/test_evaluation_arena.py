"""Browser: a staff member asks the blind arena, reads two anonymous answers, votes, sees the names
and the ministry leaderboard.

Served by uvicorn (tests/support/asgi.py), as in production: the ask view is async and must
work on the event loop with its database hops (DESIGN invariant 10)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from apps.evaluation.models import ArenaVote
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
    with FakeUpstream(tokens=3, word="回答甲") as one, FakeUpstream(tokens=3, word="回答乙") as two:
        register_alias(upstreams=[Upstream(one.url)], ministries=[digital], name="arena-one")
        register_alias(upstreams=[Upstream(two.url)], ministries=[digital], name="arena-two")
        reset_for_tests()
        yield asgi_server
    reset_for_tests()


def test_staff_votes_in_the_blind_arena(page: Any, site: str) -> None:
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
    page.get_by_test_id("vote-a").click()
    page.get_by_test_id("vote-recorded").wait_for()
    names = page.get_by_test_id("name-a").inner_text() + page.get_by_test_id("name-b").inner_text()
    assert "arena-one" in names and "arena-two" in names
    with ministry_scope(ministry_id=Ministry.objects.get(code="digital").pk):
        assert ArenaVote.objects.get().outcome == "a"
    page.goto(f"{site}/evaluation/arena/")
    board = page.get_by_test_id("board-ministry")
    board.wait_for()
    assert board.locator("tbody tr").count() == 2
    shoot(page, "arena-leaderboard")
