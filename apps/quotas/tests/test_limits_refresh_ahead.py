"""The limits cache refreshes ahead: a due version check does not stall the request that finds it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from apps.quotas import admission, limits
from apps.tenancy import versions


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    limits.reset_for_tests()
    yield
    limits.reset_for_tests()


def _seed(ministry_id: int, *, checked_ago: float) -> limits.MinistryLimits:
    cached = limits.MinistryLimits(ministry_id=ministry_id, rows={})
    now = time.monotonic()
    limits._cache.entries[ministry_id] = (cached, now)
    limits._cache.checked_at = now - checked_ago
    return cached


@pytest.mark.django_db(transaction=True)
def test_a_due_check_serves_the_cache_and_refreshes_beside_the_request(ministries: Any) -> None:
    a, _b = ministries
    check = versions.check_seconds()
    cached = _seed(a.pk, checked_ago=1.5 * check)

    async def scenario() -> tuple[Any, float]:
        got = await admission._alimits(a.pk)
        # The refresh was started, not awaited: it runs beside the request.
        [task] = [t for (_loop, m), t in admission._refreshing.items() if m == a.pk]
        fresh = await task
        return got, fresh

    got, fresh = asyncio.run(scenario())
    assert got is cached  # served without waiting for the database
    assert fresh is not cached and fresh.ministry_id == a.pk  # the refresh loaded the limits again
    assert time.monotonic() - limits._cache.checked_at < check  # and the version was checked


@pytest.mark.django_db(transaction=True)
def test_an_overdue_check_is_awaited(ministries: Any) -> None:
    a, _b = ministries
    cached = _seed(a.pk, checked_ago=2.5 * versions.check_seconds())
    assert limits.refresh_ahead_ministry_limits(a.pk) is None
    got = asyncio.run(admission._alimits(a.pk))
    assert got is not cached  # two intervals without a check: the request waits for the fresh limits


def test_nothing_is_served_ahead_after_a_local_change() -> None:
    _seed(7, checked_ago=0.0)
    limits._drop_local()  # what a limit change does in this process after its commit
    assert limits.refresh_ahead_ministry_limits(7) is None
    assert limits.cached_ministry_limits(7) is None
