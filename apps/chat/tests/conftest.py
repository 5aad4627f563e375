from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.registry import snapshot
from apps.registry.breaker import breaker
from apps.registry.providers import openai_compatible
from apps.tenancy.scope import ministry_scope
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
def colleague_a(ministries: tuple[Any, Any]) -> Actor:
    """Another staff member of ministry A (same ministry as staff_a)."""
    return Actor(user=make_user("colleague-a", ministries[0], ["staff"]), ministry=ministries[0])


@pytest.fixture
def client_a(staff_a: Actor) -> Client:
    client = Client()
    client.force_login(staff_a.user)
    return client


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(tokens=5, delay=0.02) as upstream:
        yield upstream


@pytest.fixture
def scope_a(staff_a: Actor) -> Iterator[None]:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        yield
