"""Admission under concurrency (real Redis): no overspend, nothing left held, one set of counters
for every process, and the per-zone policy when Redis is unreachable."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from django.db import connection, connections
from django.db.models import F, Sum

from apps.quotas import admission, limits
from apps.quotas import services as quota_services
from apps.quotas.admission import AdmissionUnavailable, QuotaExceeded, areserve, asettle, reserve, settle
from apps.quotas.models import GraceWindow, UsageRecord
from apps.quotas.reconcile import reconcile
from apps.quotas.services import GRACE_KEEP_MINUTES, grace_take
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

BUDGET = 12_000
PROMPT, MAX_TOKENS = 40, 160  # each reservation: 200 tokens


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_requests_never_overspend_and_leave_nothing_held(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], settings: Any
) -> None:
    """200 requests at once against a budget for 60: completed, failed mid-stream (partial usage),
    disconnected (settled to what was produced), and abandoned (process died: never settled)."""
    a, _ = ministries
    user = staff_of(a)
    team = team_with(a, "load", user)
    limit_every_level(a, team=team, user=user)
    set_limit(a, admin_of(a), level="team", team=team, monthly_tokens=BUDGET, monthly_yen=Decimal("100"))
    subject = user_subject(a, user)
    limits.ministry_limits(a.pk)  # warm this process's cache (the event loop never waits on it)
    rng = random.Random(8)  # noqa: S311 (a reproducible mix of outcomes, not a secret)
    outcomes = [rng.choice(["ok", "ok", "error", "disconnect", "abandon"]) for _ in range(200)]
    settled_tokens: list[int] = []
    settled_yen: list[Decimal] = []
    admitted: list[int] = []
    ledger_rows: list[tuple[str, int, Decimal, str]] = []

    async def one(i: int, outcome: str) -> None:
        try:
            r = await areserve(
                subject=subject,
                prompt_tokens=PROMPT,
                max_tokens=MAX_TOKENS,
                request_id=new_id(),
                price=Decimal(500),
            )
        except QuotaExceeded as exc:
            assert (exc.level, exc.kind) == ("team", "budget")
            return
        admitted.append(i)
        await asyncio.sleep(rng.random() / 100)  # the upstream streams
        if outcome == "abandon":
            return  # the process died: no settle, ever
        completion = {"ok": rng.randint(1, MAX_TOKENS), "error": rng.randint(0, 20), "disconnect": 7}[outcome]
        cost = Decimal(PROMPT + completion) * Decimal(500) / Decimal(1_000_000)
        settled_tokens.append(PROMPT + completion)
        settled_yen.append(cost)
        ledger_rows.append((r.request_id, completion, cost, outcome))
        await asettle(reservation=r, prompt_tokens=PROMPT, completion_tokens=completion, cost_yen=cost)

    settings.GENNAI_QUOTA_RESERVATION_SECONDS = 2

    async def run() -> None:
        await asyncio.gather(*(one(i, o) for i, o in enumerate(outcomes)))

    asyncio.run(run())
    scope = f"m{a.pk}:t{team.pk}"
    state = counters(quota_redis, scope)
    # Check-then-reserve is atomic: used + held never passed the budget, so the overspend is
    # at most one reservation (here zero: no upstream produced more than its max_tokens).
    assert state["ut"] + state["ht"] <= BUDGET
    # A refusal needs more than BUDGET - 200 consumed, and each request consumes at most 200.
    assert len(admitted) >= BUDGET // (PROMPT + MAX_TOKENS)
    abandoned = [i for i in admitted if outcomes[i] == "abandon"]
    assert abandoned, "the mix must include abandoned requests"
    assert state["ht"] == len(abandoned) * (PROMPT + MAX_TOKENS)
    # The abandoned reservations expire; the reconciler releases them.
    import time

    time.sleep(2.2)
    reconcile()
    for name in ("p", f"m{a.pk}", scope, f"m{a.pk}:u{user.pk}"):
        final = counters(quota_redis, name)
        # The ledger has no rows (no journal here): every settled request is still a
        # not-yet-drained note, so used == what was settled, exactly.
        assert final == {
            "ut": sum(settled_tokens),
            "ht": 0,
            "uy": sum(admission.yen_units(y) for y in settled_yen),
            "hy": 0,
        }, name
    assert not quota_redis.zcard(f"{admission.PREFIX}open:{a.pk}")
    # The journal drains every finished request into the ledger; the abandoned ones become
    # "gateway_lost" rows with their prompt only. Then the counters equal the ledger.
    lost = [(new_id(), 0, Decimal(0), "abandon") for _ in abandoned]
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.bulk_create(
            UsageRecord(
                ministry=a,
                request_id=uuid.UUID(request_id),
                user=user,
                alias_name="standard-chat",
                status={"ok": "ok", "abandon": "interrupted"}.get(outcome, "error"),
                prompt_tokens=PROMPT,
                completion_tokens=completion,
                cost_yen=cost,
            )
            for request_id, completion, cost, outcome in ledger_rows + lost
        )
    reconcile()
    with ministry_scope(ministry_id=a.pk):
        ledger = UsageRecord.objects.aggregate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))
        yen = UsageRecord.objects.aggregate(yen=Sum("cost_yen"))["yen"]
    assert counters(quota_redis, scope) == {
        "ut": ledger["tokens"],
        "ht": 0,
        "uy": admission.yen_units(yen),
        "hy": 0,
    }
    assert ledger["tokens"] == sum(settled_tokens) + PROMPT * len(abandoned)


def _in_two_processes(target: Any, n: int, subject: admission.Subject) -> int:
    """``target(n, subject, queue)`` in two forked processes (two web processes) at once; the sum
    of what they report."""
    connections.close_all()  # each child opens its own connection if it needs one
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    children = [context.Process(target=target, args=(n, subject, out)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    return int(out.get(timeout=5) + out.get(timeout=5))


def _burst(n: int, subject: admission.Subject, out: Any) -> None:
    """In another process: ``n`` reservations at once, never settled; report how many passed."""

    async def run() -> int:
        async def one() -> bool:
            try:
                await areserve(subject=subject, prompt_tokens=50, max_tokens=50, request_id=new_id())
            except QuotaExceeded:
                return False
            return True

        return sum(await asyncio.gather(*(one() for _ in range(n))))

    out.put(asyncio.run(run()))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("limit", ["max_concurrent", "monthly_tokens", "rpm"])
def test_two_processes_share_one_set_of_limits(
    limit: str, quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    """Two web processes each try 15 requests against a limit of 10: exactly 10 pass in total."""
    a, _ = ministries
    user = staff_of(a)
    value = {"max_concurrent": 10, "monthly_tokens": 1000, "rpm": 10}[limit]
    set_limit(a, admin_of(a), level="user", user=user, **{limit: value})
    subject = user_subject(a, user)
    limits.ministry_limits(a.pk)
    passed = _in_two_processes(_burst, 15, subject)
    assert passed == 10
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}")["ht"] == 1000


# --- Redis unreachable -------------------------------------------------------------------------


@pytest.fixture
def redis_down(quota_redis: redis.Redis, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    admission.reset_clients_for_tests()
    # One minute for the whole test (the grace is counted per minute; forked children inherit it).
    monkeypatch.setattr(quota_services, "time", SimpleNamespace(time=lambda: 1_800_000_030.0))


@pytest.mark.parametrize("zone", ["external", "gov_cloud"])
def test_redis_down_fails_closed_for_external_and_gov_cloud(
    zone: str, redis_down: None, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    subject = user_subject(a, staff_of(a), zone=zone)
    with pytest.raises(AdmissionUnavailable) as excinfo:
        reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    assert excinfo.value.kind == "unavailable"
    assert excinfo.value.retry_after >= 1
    with pytest.raises(AdmissionUnavailable):
        asyncio.run(areserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id()))


@pytest.mark.django_db(transaction=True)  # the async path takes its grace on its own connection
def test_redis_down_on_prem_gets_a_bounded_grace(
    redis_down: None, ministries: tuple[Any, Any], settings: Any
) -> None:
    a, b = ministries
    settings.GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE = 3
    subject = user_subject(a, staff_of(a), zone="on_prem")
    granted = [reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id()) for _ in range(2)]
    granted.append(asyncio.run(areserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())))
    assert all(r.degraded for r in granted)
    # No per-process state: a fresh client (as in another process) finds the grace spent.
    admission.reset_clients_for_tests()
    with pytest.raises(AdmissionUnavailable):  # the grace is spent: closed until the next minute
        reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    with pytest.raises(AdmissionUnavailable):
        asyncio.run(areserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id()))
    # Counted per ministry: B's users still have theirs.
    other = user_subject(b, staff_of(b), zone="on_prem")
    assert reserve(subject=other, prompt_tokens=1, max_tokens=1, request_id=new_id()).degraded
    settle(
        reservation=granted[0], prompt_tokens=1, completion_tokens=1, cost_yen=Decimal(0)
    )  # no-op, no raise


def test_grace_windows_count_per_minute_and_forget_old_minutes(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    now = 1_800_000_000.0
    with ministry_scope(ministry_id=a.pk):
        assert [grace_take(zone="on_prem", per_minute=2, now=now) for _ in range(3)] == [True, True, False]
        assert grace_take(zone="gov_cloud", per_minute=2, now=now)  # zones counted apart
        assert not grace_take(zone="on_prem", per_minute=0, now=now)
        assert grace_take(zone="on_prem", per_minute=2, now=now + 60)  # the next minute
        assert GraceWindow.objects.filter(zone="on_prem").count() == 2
        assert grace_take(zone="on_prem", per_minute=2, now=now + 60 * (GRACE_KEEP_MINUTES + 2))
        assert sorted(GraceWindow.objects.filter(zone="on_prem").values_list("admitted", flat=True)) == [1]
    with ministry_scope(ministry_id=b.pk):
        assert GraceWindow.objects.count() == 0  # A's rows are not B's (RLS and the scoped manager)
        assert grace_take(zone="on_prem", per_minute=2, now=now)


@pytest.mark.django_db(transaction=True)
def test_a_grace_admission_does_not_queue_behind_a_held_minute(
    redis_down: None, ministries: tuple[Any, Any], settings: Any
) -> None:
    """A sync caller's outer transaction holds the minute's row until it ends: others refuse after
    GRACE_LOCK_TIMEOUT_MS instead of waiting for it, and the caller's lock_timeout is left as it was."""
    a, _ = ministries
    settings.GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE = 5
    subject = user_subject(a, staff_of(a), zone="on_prem")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with ministry_scope(ministry_id=a.pk):  # took a grace admission, and goes on working
                assert grace_take(zone="on_prem", per_minute=5)
                held.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(AdmissionUnavailable):
            reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    finally:
        release.set()
        thread.join(30)
    assert reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id()).degraded
    with ministry_scope(ministry_id=a.pk), connection.cursor() as cursor:
        assert grace_take(zone="gov_cloud", per_minute=5)
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"


def _take_grace_in_child(n: int, subject: admission.Subject, out: Any) -> None:
    """In another process, Redis unreachable: ``n`` admissions at once (threads, each with its own
    database connection); report how many got the grace."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_i: int) -> bool:
        try:
            reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
        except AdmissionUnavailable:
            return False
        finally:
            connections.close_all()
        return True

    with ThreadPoolExecutor(max_workers=n) as pool:
        out.put(sum(pool.map(one, range(n))))


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_one_grace(redis_down: None, ministries: tuple[Any, Any], settings: Any) -> None:
    """Redis down, grace 5 a minute: two web processes trying 8 each admit exactly 5 in total
    (a per-process allowance would have let 10 through: limits must not multiply with replicas)."""
    a, _ = ministries
    settings.GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE = 5
    subject = user_subject(a, staff_of(a), zone="on_prem")
    assert _in_two_processes(_take_grace_in_child, 8, subject) == 5
    with ministry_scope(ministry_id=a.pk):
        assert list(GraceWindow.objects.values_list("admitted", flat=True)) == [5]


def test_redis_down_policy_is_configurable_and_settle_never_raises(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], settings: Any
) -> None:
    a, _ = ministries
    subject = user_subject(a, staff_of(a), zone="on_prem")
    r = reserve(subject=subject, prompt_tokens=10, max_tokens=10, request_id=new_id())  # Redis up
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.GENNAI_QUOTA_REDIS_DOWN = {"on_prem": "closed"}
    admission.reset_clients_for_tests()
    with pytest.raises(AdmissionUnavailable):
        reserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
    asyncio.run(asettle(reservation=r, prompt_tokens=10, completion_tokens=3, cost_yen=Decimal(0)))
    assert not r.settled  # left for the reconciler: the reservation expires and is released


def test_refusal_message_speaks_the_request_language(
    quota_redis: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    from django.utils import translation

    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, rpm=0)
    with translation.override("en"), pytest.raises(QuotaExceeded) as excinfo:
        reserve(subject=user_subject(a, user), prompt_tokens=1, max_tokens=1, request_id=new_id())
    assert "per-minute limit" in excinfo.value.message
    with translation.override("ja"), pytest.raises(QuotaExceeded) as excinfo:
        reserve(subject=user_subject(a, user), prompt_tokens=1, max_tokens=1, request_id=new_id())
    assert "1分あたり" in excinfo.value.message


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_share_one_refresh_of_the_limits(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cache must re-check its version, 100 concurrent requests cause one database hop."""
    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, monthly_tokens=10**9)
    subject = user_subject(a, user)
    loads: list[int] = []
    real = limits.ministry_limits

    def counted(ministry_id: int) -> Any:
        loads.append(ministry_id)  # counts the hops; the real cache and database answer
        return real(ministry_id)

    monkeypatch.setattr(admission, "ministry_limits", counted)
    limits.reset_for_tests()  # nothing cached: the first request of the burst must load

    async def burst() -> None:
        await asyncio.gather(
            *(
                areserve(subject=subject, prompt_tokens=1, max_tokens=1, request_id=new_id())
                for _ in range(100)
            )
        )

    asyncio.run(burst())
    assert loads == [a.pk]
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}")["ht"] == 200


def test_a_settle_that_missed_redis_is_retried_when_it_is_back(
    quota_redis: redis.Redis, ministries: tuple[Any, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis blip at settle time must not hold the budget and slot until the reservation expires.

    The web process reaches Redis through a TCP relay that the test takes down and brings back.
    """
    from redis.asyncio.connection import parse_url

    a, _ = ministries
    user = staff_of(a)
    set_limit(a, admin_of(a), level="user", user=user, monthly_tokens=10_000, max_concurrent=1)
    subject = user_subject(a, user)
    limits.ministry_limits(a.pk)
    real = parse_url(settings.REDIS_URL)
    monkeypatch.setattr(admission, "SETTLE_RETRY_DELAYS", (0.2, 0.2, 0.4, 0.8, 1.6))
    relayed: list[asyncio.StreamWriter] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(real["host"], real["port"])
        relayed.extend([writer, up_writer])

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    async def run() -> Any:
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/{real.get('db', 0)}"
        r = await areserve(subject=subject, prompt_tokens=10, max_tokens=90, request_id=new_id())
        server.close()  # Redis goes away
        for writer in relayed:
            writer.close()
        await asyncio.sleep(0.1)  # the web process notices the lost connection
        await asettle(reservation=r, prompt_tokens=10, completion_tokens=5, cost_yen=Decimal(0))
        assert not r.settled
        assert quota_redis.zcard(f"{admission.PREFIX}m{a.pk}:u{user.pk}:c") == 1  # the slot is still held
        server = await asyncio.start_server(relay, "127.0.0.1", port)  # Redis is back
        for _ in range(40):
            await asyncio.sleep(0.1)
            if r.settled:
                break
        server.close()
        return r

    admission.reset_clients_for_tests()
    r = asyncio.run(run())
    assert r.settled
    assert counters(quota_redis, f"m{a.pk}:u{user.pk}") == {"ut": 15, "ht": 0, "uy": 0, "hy": 0}
