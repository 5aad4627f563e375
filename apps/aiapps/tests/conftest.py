"""Fixtures: a fresh registry per test, a colleague in ministry A, a platform admin, clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.registry import snapshot
from apps.registry.breaker import breaker
from apps.registry.providers import openai_compatible
from tests.support.fixtures import Actor, make_user


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    snapshot.reset_for_tests()
    breaker.reset()
    openai_compatible._clients.clear()
    yield
    snapshot.reset_for_tests()
    breaker.reset()
    openai_compatible._clients.clear()


@pytest.fixture
def colleague_a(staff_a: Actor) -> Actor:
    """Same ministry as staff_a."""
    return Actor(user=make_user("colleague-a", staff_a.ministry, ["staff"]), ministry=staff_a.ministry)


@pytest.fixture
def platform_admin(ministries: tuple[Any, Any]) -> Actor:
    return Actor(
        user=make_user("platform-admin", ministries[1], ["staff", "platform_admin"]), ministry=ministries[1]
    )


def client_for(actor: Actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client
