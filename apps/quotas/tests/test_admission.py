"""Admission (real Redis, real limits from PostgreSQL): every level checked at once, reserve/settle exact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis

from apps.quotas import admission, journal, limits
from apps.quotas.admission import (
    QuotaExceeded,
    Reservation,
    areserve,
    asettle,
    reserve,
    settle,
    subject_for_api_key,
)

from .admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    counters,
    grant_alias,
    limit_every_level,
    new_id,
    quota_redis_fixture,
    set_limit,
    staff_of,
    team_with,
    user_subject,
)


def refused(subject: admission.Subject, *, tokens: int = 10, max_tokens: int = 0) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as excinfo:
        reserve(subject=subject, prompt_tokens=tokens, max_tokens=max_tokens, request_id=new_id())
    return excinfo.value


def test_reserve_holds_the_estimate_and_settle_replaces_it_on_every_level(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    user = staff_of(a)
    team = team_with(a, "kikaku", user)
    limit_every_level(a, team=team, user=user)
    subject = user_subject(a, user)
    r = reserve(
        subject=subject, prompt_tokens=100, max_tokens=400, request_id=new_id(), price=Decimal("1000")
    )
    m = a.pk
    scopes = [
        "p",
        f"m{m}",
        f"m{m}:t{team.pk}",
        f"m{m}:u{user.pk}",
        f"m{m}|standard-chat",
        f"m{m}:u{user.pk}|standard-chat",
    ]
    for scope in scopes:
        # 500 tokens at 1,000 yen per 1M tokens = 0.5 yen = 5,000 units held.
        assert counters(quota_redis, scope) == {"ut": 0, "ht": 500, "uy": 0, "hy": 5000}, scope
    settle(reservation=r, prompt_tokens=100, completion_tokens=37, cost_yen=Decimal("0.137"))
    for scope in scopes:
        assert counters(quota_redis, scope) == {"ut": 137, "ht": 0, "uy": 1370, "hy": 0}, scope
    r.settled = False  # a second settle (a retry, or a finally after an except) changes nothing
    settle(reservation=r, prompt_tokens=100, completion_tokens=999, cost_yen=Decimal("5"))
    assert counters(quota_redis, f"m{m}:u{user.pk}") == {"ut": 137, "ht": 0, "uy": 1370, "hy": 0}


def test_user_budget_refuses_with_retry_after_until_next_month(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    set_limit(a, admin, level="user", user=user, monthly_tokens=1000)
    subject = user_subject(a, user)
    r = reserve(subject=subject, prompt_tokens=300, max_tokens=500, request_id=new_id())
    exc = refused(subject, tokens=100, max_tokens=200)  # 800 held + 300 > 1000
    assert (exc.level, exc.kind) == ("user", "budget")
    assert exc.retry_after == admission._month()[1] or abs(exc.retry_after - admission._month()[1]) <= 2
    assert "今月の利用上限" in exc.message
    settle(reservation=r, prompt_tokens=300, completion_tokens=100, cost_yen=Decimal(0))
    reserve(subject=subject, prompt_tokens=100, max_tokens=200, request_id=new_id())  # 400 + 300 fits now
    # Another user of the same ministry is not affected by this user's limit.
    reserve(subject=user_subject(a, staff_of(a)), prompt_tokens=5000, max_tokens=0, request_id=new_id())


def test_each_nested_level_refuses_on_its_own(quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    """user < team < ministry: a tight limit at any one level refuses, whatever the others allow."""
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    team = team_with(a, "chosa", user)
    subject = user_subject(a, user)
    set_limit(a, admin, level="ministry", monthly_tokens=100)
    assert refused(subject, tokens=150).level == "ministry"
    set_limit(a, admin, level="ministry", monthly_tokens=None)
    set_limit(a, admin, level="team", team=team, monthly_tokens=100)
    assert refused(subject, tokens=150).level == "team"
    set_limit(a, admin, level="team", team=team, monthly_tokens=None)
    set_limit(a, admin, level="user", user=user, monthly_tokens=100)
    assert refused(subject, tokens=150).level == "user"
    set_limit(a, admin, level="user", user=user, monthly_tokens=10_000)
    # A generous user limit does not lend headroom past a tight ministry.
    set_limit(a, admin, level="ministry", monthly_tokens=120)
    reserve(subject=subject, prompt_tokens=100, max_tokens=0, request_id=new_id())
    assert refused(subject, tokens=30).level == "ministry"


def test_a_user_in_two_teams_is_held_to_the_tighter(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    admin, user, colleague = admin_of(a), staff_of(a), staff_of(a)
    loose = team_with(a, "loose", user)
    tight = team_with(a, "tight", user, colleague)
    set_limit(a, admin, level="team", team=loose, monthly_tokens=1_000_000, rpm=1000)
    set_limit(a, admin, level="team", team=tight, monthly_tokens=500)
    subject = user_subject(a, user)
    assert subject.team_ids == tuple(sorted((loose.pk, tight.pk)))
    reserve(subject=subject, prompt_tokens=300, max_tokens=0, request_id=new_id())
    exc = refused(subject, tokens=300)
    assert (exc.level, exc.kind) == ("team", "budget")
    # The colleague's usage counts against the shared tight team too.
    exc = refused(user_subject(a, colleague), tokens=250)
    assert exc.level == "team"


def test_per_alias_budget_and_max_tokens_cap(quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    grant_alias(a, "premium-chat")
    admin, user = admin_of(a), staff_of(a)
    set_limit(a, admin, level="user", user=user, alias_name="premium-chat", monthly_tokens=200, max_tokens=64)
    set_limit(a, admin, level="ministry", max_tokens=1000)
    premium = user_subject(a, user, alias="premium-chat")
    standard = user_subject(a, user, alias="standard-chat")
    assert admission.cap_max_tokens(subject=premium, requested=4096, default=512) == 64
    assert admission.cap_max_tokens(subject=standard, requested=4096, default=512) == 1000
    assert admission.cap_max_tokens(subject=standard, requested=None, default=512) == 512
    exc = refused(premium, tokens=150, max_tokens=64)
    assert (exc.level, exc.kind, exc.alias) == ("user", "budget", "premium-chat")
    reserve(subject=standard, prompt_tokens=150, max_tokens=64, request_id=new_id())  # other alias: free


@pytest.mark.parametrize("level", ["ministry", "team", "user", "api_key"])
def test_rpm_per_level(level: str, quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    subject, refs = _subject_at(level, a)
    set_limit(a, admin_of(a), level=level, rpm=3, **refs)
    for _ in range(3):
        settle(
            reservation=reserve(subject=subject, prompt_tokens=1, max_tokens=0, request_id=new_id()),
            prompt_tokens=1,
            completion_tokens=0,
            cost_yen=Decimal(0),
        )
    exc = refused(subject, tokens=1)
    assert (exc.level, exc.kind) == (level, "rpm")
    assert 1 <= exc.retry_after <= 120


@pytest.mark.parametrize("level", ["ministry", "team", "user", "api_key"])
def test_tpm_per_level(level: str, quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    subject, refs = _subject_at(level, a)
    set_limit(a, admin_of(a), level=level, tpm=1000, **refs)
    r = reserve(subject=subject, prompt_tokens=100, max_tokens=800, request_id=new_id())
    exc = refused(subject, tokens=50, max_tokens=100)  # 900 estimated + 150 > 1000
    assert (exc.level, exc.kind) == (level, "tpm")
    settle(reservation=r, prompt_tokens=100, completion_tokens=20, cost_yen=Decimal(0))  # window: 120
    reserve(subject=subject, prompt_tokens=50, max_tokens=100, request_id=new_id())


@pytest.mark.parametrize("level", ["ministry", "team", "user", "api_key"])
def test_max_concurrent_per_level(level: str, quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    subject, refs = _subject_at(level, a)
    set_limit(a, admin_of(a), level=level, max_concurrent=2, **refs)
    first = reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    exc = refused(subject, tokens=1)
    assert (exc.level, exc.kind, exc.retry_after) == (level, "concurrency", 1)
    settle(reservation=first, prompt_tokens=1, completion_tokens=0, cost_yen=Decimal(0))
    reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())


def test_a_crashed_processs_concurrency_slot_frees_itself(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], settings: Any
) -> None:
    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, max_concurrent=1)
    subject = user_subject(a, user)
    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 0.05
    reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())  # never settled
    import time

    time.sleep(0.1)
    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 900
    reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())


def test_refusal_reports_the_binding_level(quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    """Several levels refuse: the answer is the one the client must wait longest for."""
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    set_limit(a, admin, level="user", user=user, max_concurrent=0)
    set_limit(a, admin, level="ministry", monthly_tokens=5)
    exc = refused(user_subject(a, user), tokens=10)
    assert (exc.level, exc.kind) == ("ministry", "budget")


def test_limits_of_one_ministry_never_touch_another(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, b = ministries
    set_limit(a, admin_of(a), level="ministry", monthly_tokens=10, rpm=1)
    assert refused(user_subject(a, staff_of(a)), tokens=20).level == "ministry"
    for _ in range(3):
        reserve(subject=user_subject(b, staff_of(b)), prompt_tokens=20, max_tokens=0, request_id=new_id())


def test_a_refused_request_holds_nothing(quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    team = team_with(a, "t1", user)
    set_limit(a, admin, level="team", team=team, monthly_tokens=50, rpm=10, max_concurrent=5)
    refused(user_subject(a, user), tokens=100)
    for scope in ("p", f"m{a.pk}", f"m{a.pk}:t{team.pk}", f"m{a.pk}:u{user.pk}"):
        assert counters(quota_redis, scope)["ht"] == 0, scope
    assert quota_redis.zcard(f"{admission.PREFIX}m{a.pk}:t{team.pk}:c") == 0
    assert not list(quota_redis.scan_iter(match=f"{admission.PREFIX}rs:*"))


def test_same_request_id_cannot_reserve_twice(quota_redis: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    limit_every_level(a)
    subject = user_subject(a, staff_of(a))
    request_id = new_id()
    reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=request_id)
    with pytest.raises(ValueError):
        reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=request_id)
    assert counters(quota_redis, f"m{a.pk}")["ht"] == 2


@pytest.fixture
def journaled_user(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, admission.Subject, str]]:
    """A user with a 1,000-token month budget, a journal stream of this test's own, and the
    ministry's limits cached (the async path needs no database hop): (stream, subject, scope)."""
    stream = f"test:journal:{new_id()}"
    monkeypatch.setattr(journal, "STREAM", stream)
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    set_limit(a, admin, level="user", user=user, monthly_tokens=1000)
    limits.ministry_limits(a.pk)
    yield stream, user_subject(a, user), f"m{a.pk}:u{user.pk}"
    quota_redis.delete(stream)


def test_the_started_entry_is_journaled_with_the_reservation_and_only_with_it(
    quota_redis: redis.Redis, journaled_user: tuple[str, admission.Subject, str]
) -> None:
    """One script: admitted ⇔ the request's started usage entry is in the journal (no second
    write in front of the upstream call, no entry for a refused or duplicate request)."""
    stream, subject, scope = journaled_user
    first, second, plain = new_id(), new_id(), new_id()

    async def run() -> tuple[Reservation, Reservation]:
        ok = await areserve(
            subject=subject, prompt_tokens=300, max_tokens=500, request_id=first, journal=b'{"n": 1}'
        )
        with pytest.raises(QuotaExceeded):  # 800 held + 800 > 1000
            await areserve(
                subject=subject, prompt_tokens=300, max_tokens=500, request_id=second, journal=b'{"n": 2}'
            )
        with pytest.raises(ValueError):  # the same request id again
            await areserve(
                subject=subject, prompt_tokens=1, max_tokens=1, request_id=first, journal=b'{"n": 3}'
            )
        without = await areserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=plain)
        return ok, without

    try:
        ok, without = asyncio.run(run())
        assert ok.journaled and not without.journaled
        entries: list[tuple[bytes, dict[bytes, bytes]]] = quota_redis.xrange(stream)  # type: ignore[assignment]
        assert [(fields[b"k"], fields[b"r"]) for _id, fields in entries] == [(b"s", b'{"n": 1}')]
        assert counters(quota_redis, scope)["ht"] == 802
    finally:
        quota_redis.delete(stream)
    # A journal that refuses the entry (here: the key is no stream) leaves the reservation
    # made and tells the caller to journal it itself.
    quota_redis.set(stream, "not a stream")
    try:
        refused_journal = asyncio.run(
            areserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id(), journal=b"{}")
        )
        assert not refused_journal.journaled
        assert counters(quota_redis, scope)["ht"] == 804
    finally:
        quota_redis.delete(stream)


def test_the_finished_entry_is_journaled_by_the_settle_and_a_refusing_journal_stops_no_settle(
    quota_redis: redis.Redis, journaled_user: tuple[str, admission.Subject, str]
) -> None:
    """One script at the end of a request: settle + the finished usage entry; if the journal
    refuses the entry the settle still happens and the caller is told to journal it itself."""
    stream, subject, scope = journaled_user

    async def reserve_and_settle(entry: bytes) -> bool:
        r = await areserve(subject=subject, prompt_tokens=100, max_tokens=100, request_id=new_id())
        return await asettle(
            reservation=r, prompt_tokens=100, completion_tokens=7, cost_yen=Decimal(0), journal=entry
        )

    try:
        assert asyncio.run(reserve_and_settle(b'{"n": 1}')) is True
        entries: list[tuple[bytes, dict[bytes, bytes]]] = quota_redis.xrange(stream)  # type: ignore[assignment]
        assert [(fields[b"k"], fields[b"r"]) for _id, fields in entries] == [(b"f", b'{"n": 1}')]
        assert counters(quota_redis, scope) == {"ut": 107, "ht": 0, "uy": 0, "hy": 0}
        quota_redis.delete(stream)
        quota_redis.set(stream, "not a stream")
        assert asyncio.run(reserve_and_settle(b'{"n": 2}')) is False
        assert counters(quota_redis, scope) == {"ut": 214, "ht": 0, "uy": 0, "hy": 0}
    finally:
        quota_redis.delete(stream)


def _subject_at(level: str, ministry: Any) -> tuple[admission.Subject, dict[str, Any]]:
    """A subject and the limit_set reference that targets it at ``level``."""
    if level == "api_key":
        from datetime import timedelta

        from django.utils import timezone

        from apps.gateway.services import api_key_create

        key, _ = api_key_create(
            actor=None, ministry=ministry, name="k", expires_at=timezone.now() + timedelta(days=1)
        )
        return subject_for_api_key(api_key=key, alias_name="standard-chat", zone="on_prem"), {"api_key": key}
    user = staff_of(ministry)
    team = team_with(ministry, f"team-{user.pk}", user)
    refs: dict[str, Any] = {"team": {"team": team}, "user": {"user": user}}.get(level, {})
    return user_subject(ministry, user), refs


def test_a_level_without_limits_keeps_no_counter(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    """Admission work grows with the limits that exist: here only the user's."""
    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, monthly_tokens=1000)
    set_limit(a, admin_of(a), level="ministry", max_tokens=4096)  # a cap alone needs no counter
    set_limit(a, admin_of(a), level="team", rpm=5)  # a default for teams; this user is in none
    reserve(subject=user_subject(a, user), prompt_tokens=10, max_tokens=10, request_id=new_id())
    month = admission.month_key()
    budgets = sorted(k.decode() for k in quota_redis.scan_iter(match=f"{admission.PREFIX}*:b:{month}"))
    assert budgets == [f"{admission.PREFIX}m{a.pk}:u{user.pk}:b:{month}"]


def test_a_default_user_limit_applies_to_each_user_separately(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    admin, first, second, exempt = admin_of(a), staff_of(a), staff_of(a), staff_of(a)
    set_limit(a, admin, level="user", monthly_tokens=100)  # no user: every user's default
    set_limit(a, admin, level="user", user=exempt, monthly_tokens=None)  # an own row replaces it
    for user in (first, second):
        reserve(subject=user_subject(a, user), prompt_tokens=80, max_tokens=0, request_id=new_id())
        exc = refused(user_subject(a, user), tokens=30)
        assert (exc.level, exc.kind) == ("user", "budget")
    for _ in range(3):
        reserve(subject=user_subject(a, exempt), prompt_tokens=80, max_tokens=0, request_id=new_id())


def test_an_alias_that_is_no_slug_never_reaches_redis(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    subject = user_subject(a, staff_of(a), alias="x\nm1:b:202601")
    with pytest.raises(ValueError):
        reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    assert not list(quota_redis.scan_iter(match=f"{admission.PREFIX}*"))
