"""Caches of the /v1 hot path are refreshed after a request's first token, never before its upstream call.

Why it matters: a refresh is a thread running Django code, which competes with the
event loop for the GIL; started in front of the upstream call it slowed that
request's first token (docs/performance.md, "/v1 overhead"). The hard bounds on
reuse (route decisions, key facts) must hold whatever the refreshes do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from apps.gateway import endpoints, keys, routing
from apps.gateway.auth import Caller
from apps.registry.models import ModelKind
from apps.registry.router import RoutePlan
from apps.tenancy import versions

from .conftest import World


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the background refresh did not happen"
        await asyncio.sleep(0.01)


def _caller(world: World) -> Caller:
    return Caller(
        ministry_id=world.ministry_a.pk,
        api_key_id=None,
        user_id=None,
        allowed_aliases=frozenset(),
        max_level=2,
        default_level=2,
    )


@pytest.mark.django_db(transaction=True)
def test_route_decision_is_refreshed_ahead_only_by_refresh_ahead_and_never_served_stale(
    world: World, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GENNAI_ROUTE_CACHE_SECONDS = 0.4
    asked: list[float] = []
    route_sync = routing._route_sync

    def counting(**kwargs: Any) -> Any:
        asked.append(time.monotonic())
        return route_sync(**kwargs)

    monkeypatch.setattr(routing, "_route_sync", counting)
    caller = _caller(world)
    args: dict[str, Any] = {"alias_name": "standard-chat", "level": 2, "kind": ModelKind.CHAT}

    async def run() -> None:
        assert isinstance(await routing.plan_for(caller, sticky=None, **args), RoutePlan)
        assert len(asked) == 1
        routing.refresh_ahead(caller, **args)  # fresh: nothing to do
        await asyncio.sleep(0.25)  # past half the lifetime
        assert isinstance(await routing.plan_for(caller, sticky=None, **args), RoutePlan)
        await asyncio.sleep(0.05)
        assert len(asked) == 1, "plan_for started a refresh in front of the upstream call"
        routing.refresh_ahead(caller, **args)
        routing.refresh_ahead(caller, **args)  # single flight
        await until(lambda: len(asked) >= 2)
        await asyncio.sleep(0.05)
        assert len(asked) == 2
        await asyncio.sleep(0.45)  # past the whole lifetime, no refresh: plan_for must ask again
        await routing.plan_for(caller, sticky=None, **args)
        assert len(asked) == 3

    asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_key_version_is_rechecked_ahead_and_the_cache_bound_still_holds(
    world: World, make_key: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GENNAI_CACHE_CHECK_SECONDS = 0.4
    _key, plaintext = make_key()
    assert keys.lookup_key(plaintext) is not None
    assert keys.cached_key(plaintext) is not None and not keys.version_check_due()
    checks: list[float] = []
    read_version = versions.read_version

    def counting(name: str) -> Any:
        checks.append(time.monotonic())
        return read_version(name)

    monkeypatch.setattr(versions, "read_version", counting)
    caller = Caller(
        ministry_id=world.ministry_a.pk,
        api_key_id=1,
        user_id=None,
        allowed_aliases=frozenset(),
        max_level=2,
        default_level=2,
    )

    async def run() -> None:
        await asyncio.sleep(0.25)
        assert keys.version_check_due()
        endpoints.refresh_ahead(caller, "standard-chat", 2, ModelKind.CHAT)
        endpoints.refresh_ahead(caller, "standard-chat", 2, ModelKind.CHAT)  # single flight
        await until(lambda: not keys.version_check_due())
        await asyncio.sleep(0.05)
        assert len(checks) == 1

    asyncio.run(run())
    assert keys.cached_key(plaintext) is not None  # re-checked ahead: still served without I/O
    time.sleep(0.45)
    assert keys.cached_key(plaintext) is None, "key facts served past check_seconds() without a check"
