"""Shared helpers of the admission tests: an isolated Redis prefix, limits, subjects, users."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from apps.quotas import admission, limits
from apps.quotas.admission import Subject
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


@pytest.fixture(name="quota_redis")
def quota_redis_fixture(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[redis.Redis]:
    """Admission keys of this test's own (the Redis of the test run is shared), fresh caches."""
    prefix = f"test:q:{uuid.uuid4().hex[:12]}:"
    monkeypatch.setattr(admission, "PREFIX", prefix)
    admission.reset_clients_for_tests()
    limits.reset_for_tests()
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    admission.reset_clients_for_tests()
    limits.reset_for_tests()


def admin_of(ministry: Any, username: str | None = None) -> Any:
    return make_user(
        username or f"admin-{ministry.code}-{uuid.uuid4().hex[:6]}", ministry, ["ministry_admin"]
    )


def staff_of(ministry: Any, username: str | None = None) -> Any:
    return make_user(username or f"staff-{ministry.code}-{uuid.uuid4().hex[:6]}", ministry, ["staff"])


def set_limit(ministry: Any, actor: Any, **fields: Any) -> Any:
    """limit_set in the ministry's scope, then forget the process's cached limits (tests run
    inside one transaction, where the on-commit drop never fires)."""
    with ministry_scope(ministry_id=ministry.pk):
        row = limits.limit_set(actor=actor, **fields)
    limits.reset_for_tests()
    return row


def team_with(ministry: Any, code: str, *users: Any) -> Any:
    from apps.tenancy.models import Team, TeamMembership

    with ministry_scope(ministry_id=ministry.pk):
        team = Team.objects.create(code=code, name=code)
        for user in users:
            TeamMembership.objects.create(team=team, user=user)
    return team


def grant_alias(ministry: Any, name: str) -> None:
    from apps.registry import snapshot
    from apps.registry.models import Alias, AliasGrant

    alias, _ = Alias.objects.get_or_create(
        name=name, defaults={"display_name_ja": name, "display_name_en": name}
    )
    with ministry_scope(ministry_id=ministry.pk):
        AliasGrant.objects.get_or_create(alias=alias)
    snapshot.reset_for_tests()


def user_subject(ministry: Any, user: Any, *, alias: str = "standard-chat", zone: str = "on_prem") -> Subject:
    return admission.subject_for_user(ministry_id=ministry.pk, user=user, alias_name=alias, zone=zone)


def new_id() -> str:
    return uuid.uuid4().hex


def counters(client: redis.Redis, scope: str) -> dict[str, int]:
    """The month counter of ``scope`` (``ut``/``ht`` tokens used/held, ``uy``/``hy`` yen units)."""
    raw: dict[bytes, bytes] = client.hgetall(f"{admission.PREFIX}{scope}:b:{admission.month_key()}")  # type: ignore[assignment]
    values = {k.decode(): int(v) for k, v in raw.items()}
    return {name: values.get(name, 0) for name in ("ut", "ht", "uy", "hy")}


BIG = 10**12


def limit_every_level(
    ministry: Any, *, team: Any = None, user: Any = None, alias: str = "standard-chat"
) -> None:
    """A far-away token budget on the platform, the ministry, ``team`` and ``user``, for all aliases and
    for ``alias``: every level then keeps counters (a level without limits keeps none)."""
    from apps.quotas.models import PlatformLimit

    grant_alias(ministry, alias)
    admin = admin_of(ministry)
    for alias_name in ("", alias):
        PlatformLimit.objects.get_or_create(alias_name=alias_name, defaults={"monthly_tokens": BIG})
        set_limit(ministry, admin, level="ministry", alias_name=alias_name, monthly_tokens=BIG)
        if team is not None:
            set_limit(ministry, admin, level="team", team=team, alias_name=alias_name, monthly_tokens=BIG)
        if user is not None:
            set_limit(ministry, admin, level="user", user=user, alias_name=alias_name, monthly_tokens=BIG)
