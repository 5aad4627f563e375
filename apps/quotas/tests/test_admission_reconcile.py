"""The reconciler: leaked reservations are released, drifted counters are reseeded from the ledger."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis

from apps.quotas import admission
from apps.quotas.admission import QuotaExceeded, reserve, settle
from apps.quotas.models import UsageRecord
from apps.quotas.reconcile import reconcile
from apps.tenancy.scope import ministry_scope

from .admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    counters,
    limit_every_level,
    new_id,
    quota_redis_fixture,
    set_limit,
    staff_of,
    team_with,
    user_subject,
)


def ledger(ministry: Any, request_id: str, user: Any, tokens: tuple[int, int], yen: str) -> None:
    """The UsageRecord the journal drainer writes for a finished request."""
    with ministry_scope(ministry_id=ministry.pk):
        UsageRecord.objects.create(
            request_id=uuid.UUID(request_id),
            user=user,
            alias_name="standard-chat",
            status="ok",
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            cost_yen=Decimal(yen),
        )


def served(ministry: Any, user: Any, tokens: tuple[int, int], yen: str, *, in_ledger: bool = True) -> str:
    """One request: reserved, settled, and (unless ``in_ledger`` is False) drained into the ledger."""
    request_id = new_id()
    r = reserve(
        subject=user_subject(ministry, user), prompt_tokens=tokens[0], max_tokens=500, request_id=request_id
    )
    settle(reservation=r, prompt_tokens=tokens[0], completion_tokens=tokens[1], cost_yen=Decimal(yen))
    if in_ledger:
        ledger(ministry, request_id, user, tokens, yen)
    return request_id


def test_drift_is_replaced_by_the_ledger(quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    user = staff_of(a)
    team = team_with(a, "drift", user)
    limit_every_level(a, team=team, user=user)
    served(a, user, (100, 20), "0.5")
    served(a, user, (30, 7), "0.25")
    scopes = [
        "p",
        f"m{a.pk}",
        f"m{a.pk}:t{team.pk}",
        f"m{a.pk}:u{user.pk}",
        f"m{a.pk}:u{user.pk}|standard-chat",
    ]
    # Garbage: a lost settle, a hand-made INCRBY, a restored backup...
    for scope in scopes:
        key = f"{admission.PREFIX}{scope}:b:{admission.month_key()}"
        quota_redis.hincrby(key, "ut", 99_999)
        quota_redis.hincrby(key, "ht", 777)
        quota_redis.hincrby(key, "uy", -5)
    reconcile()
    for scope in scopes:
        assert counters(quota_redis, scope) == {"ut": 157, "ht": 0, "uy": 7500, "hy": 0}, scope


def test_a_drifted_counter_with_a_limit_stops_refusing(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    """A phantom 429 (counter drifted up, no usage in the ledger) is gone after one pass."""
    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, monthly_tokens=1000)
    quota_redis.hincrby(f"{admission.PREFIX}m{a.pk}:u{user.pk}:b:{admission.month_key()}", "ut", 5000)
    subject = user_subject(a, user)
    with pytest.raises(QuotaExceeded):
        reserve(subject=subject, prompt_tokens=10, max_tokens=10, request_id=new_id())
    reconcile()
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}")["ut"] == 0
    reserve(subject=subject, prompt_tokens=10, max_tokens=10, request_id=new_id())


def test_a_leaked_reservation_is_released_and_a_late_settle_still_counts(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], settings: Any
) -> None:
    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, max_concurrent=1, monthly_tokens=1000)
    subject = user_subject(a, user)
    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 0.05
    leaked = reserve(
        subject=subject, prompt_tokens=100, max_tokens=500, request_id=new_id()
    )  # process "dies"
    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 900
    time.sleep(0.1)
    with pytest.raises(QuotaExceeded) as excinfo:  # 600 held + 600 > 1000
        reserve(subject=subject, prompt_tokens=100, max_tokens=500, request_id=new_id())
    assert excinfo.value.kind == "budget"
    result = reconcile()
    assert result.released >= 1
    for scope in ("p", f"m{a.pk}", f"m{a.pk}:u{user.pk}"):
        assert counters(quota_redis, scope)["ht"] == 0, scope
    assert quota_redis.zcard(f"{admission.PREFIX}m{a.pk}:u{user.pk}:c") == 0
    assert reconcile().released == 0  # released once
    # The request was only slow: its settle still records what it produced, once.
    settle(reservation=leaked, prompt_tokens=100, completion_tokens=40, cost_yen=Decimal(0))
    leaked.settled = False
    settle(reservation=leaked, prompt_tokens=100, completion_tokens=40, cost_yen=Decimal(0))
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}") == {"ut": 140, "ht": 0, "uy": 0, "hy": 0}


def test_settled_usage_not_yet_in_the_ledger_is_kept_then_not_counted_twice(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    user = staff_of(a)
    limit_every_level(a, user=user)
    request_id = served(a, user, (50, 10), "0", in_ledger=False)  # the journal has not drained yet
    reconcile()
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}")["ut"] == 60
    ledger(a, request_id, user, (50, 10), "0")  # now it has
    reconcile()
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}")["ut"] == 60
    assert not quota_redis.hexists(f"{admission.PREFIX}settled:{a.pk}", request_id)


def test_open_reservations_stay_held_across_a_reseed(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    user = staff_of(a)
    limit_every_level(a, user=user)
    r = reserve(subject=user_subject(a, user), prompt_tokens=100, max_tokens=400, request_id=new_id())
    reconcile()
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}") == {"ut": 0, "ht": 500, "uy": 0, "hy": 0}
    settle(reservation=r, prompt_tokens=100, completion_tokens=5, cost_yen=Decimal(0))
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}") == {"ut": 105, "ht": 0, "uy": 0, "hy": 0}


def test_platform_counter_is_the_sum_of_the_ministries(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, b = ministries
    limit_every_level(a)
    limit_every_level(b)
    served(a, staff_of(a), (10, 5), "0")
    served(b, staff_of(b), (20, 1), "0")
    quota_redis.hincrby(f"{admission.PREFIX}p:b:{admission.month_key()}", "ut", 12345)
    reconcile()
    assert counters(quota_redis, "p")["ut"] == 36
    assert counters(quota_redis, "p|standard-chat")["ut"] == 36


@pytest.mark.django_db(transaction=True)
def test_a_new_limit_starts_from_the_months_usage_not_from_zero(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit of limit_set queues a reseed of the ministry (run inline here)."""
    from gennai.celery import app

    monkeypatch.setattr(app.conf, "task_always_eager", True)
    a, _ = ministries
    user = staff_of(a)
    ledger(a, new_id(), user, (700, 200), "0")  # used earlier this month, before any limit
    set_limit(a, admin_of(a), level="user", user=user, monthly_tokens=1000)
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}")["ut"] == 900
    with pytest.raises(QuotaExceeded):
        reserve(subject=user_subject(a, user), prompt_tokens=50, max_tokens=100, request_id=new_id())


def test_an_idle_scopes_expired_slots_are_dropped_though_their_record_is_gone(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], settings: Any
) -> None:
    """Slot sets carry no expiry (a busy one must never vanish): the reconciler empties them."""
    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, max_concurrent=3)
    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 0.05
    leaked = reserve(subject=user_subject(a, user), prompt_tokens=1, max_tokens=1, request_id=new_id())
    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 900
    slots = f"{admission.PREFIX}m{a.pk}:u{user.pk}:c"
    assert quota_redis.ttl(slots) == -1 and quota_redis.zcard(slots) == 1
    # The record vanished (a day past expiry): releasing cannot reach the slot through it.
    quota_redis.delete(f"{admission.PREFIX}rs:{leaked.request_id}")
    time.sleep(0.1)
    reconcile()
    assert not quota_redis.exists(slots)
