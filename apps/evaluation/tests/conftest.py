from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.quotas.tests.admission_support import quota_redis_fixture  # noqa: F401  (fixture quota_redis)
from apps.registry import snapshot
from apps.registry.breaker import breaker
from apps.registry.providers import openai_compatible
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor, make_user


@pytest.fixture(autouse=True)
def _fresh_registry_state() -> Iterator[None]:
    """Routing state is per process: start every test from a clean snapshot and breaker."""
    snapshot.reset_for_tests()
    breaker.reset()
    openai_compatible._clients.clear()
    yield
    snapshot.reset_for_tests()
    breaker.reset()
    openai_compatible._clients.clear()


@pytest.fixture
def officer(ministries: tuple[Any, Any]) -> Actor:
    """A procurement officer (platform-wide role) employed by ministry A."""
    return Actor(user=make_user("officer", ministries[0], ["procurement_officer"]), ministry=ministries[0])


@pytest.fixture
def officer2(ministries: tuple[Any, Any]) -> Actor:
    """A second procurement officer (four-eyes approvals)."""
    return Actor(user=make_user("officer2", ministries[1], ["procurement_officer"]), ministry=ministries[1])


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(tokens=4, word="東京", delay=0.0) as upstream:
        yield upstream
