"""Admission: reserve before calling a model, settle after — atomically, on every level at once.

What this module guarantees, and why:

* **One atomic step for every level.** A request's levels — the platform, its
  ministry, each of the user's teams, the user or the API key, each for all
  aliases and for the request's alias, wherever a limit row (own or the level's
  default) exists — are checked and reserved by one Lua
  script (``lua/admit.lua``), one ``EVALSHA``. Redis runs a script alone, so
  concurrent requests (in any number of processes: the counters live only in
  Redis) cannot all pass a check that only one of them should pass. A user in
  several teams is held to *every* team's limits; no level lends headroom to
  another.
* **Budgets are checked before, with the worst case.** The reservation is the
  counted prompt plus the capped ``max_tokens`` (and its price in yen); a month
  counter is ``used + held``, and a request passes only if its reservation fits
  under every budget. Overspend is therefore bounded by one request's actual
  usage beyond its own estimate (an upstream that ignores ``max_tokens``).
* **Settle always, once.** :func:`asettle` replaces the estimate with the
  actual usage on every level (also after an upstream failure, a client that
  went away or a stopped stream: settle to what was produced). It is idempotent:
  the reservation is deleted by the same script, so a second settle does nothing.
* **Nothing leaks.** A reservation carries an expiry; its concurrency slots free
  themselves when it passes (scores in a sorted set), and the reconciler
  (:mod:`apps.quotas.reconcile`, Celery beat) releases its held budget and
  reseeds the month counters from the ledger, so counters cannot drift.
* **Limits come from PostgreSQL** through a per-process cache with a version
  and a maximum age (:mod:`apps.quotas.limits`, DESIGN invariant 11); the
  script receives the values as arguments.
* **Redis down** is decided per zone (``GENNAI_QUOTA_REDIS_DOWN``): fail closed
  (``AdmissionUnavailable``: HTTP 429 with Retry-After) for external and
  government-cloud models; for on-prem models a small per-process grace
  (``GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE`` admissions a minute) keeps work going.

Windows: RPM/TPM use a sliding-window estimate over two fixed minute buckets
(the previous minute weighted by the part of it still inside the last 60 s),
on Redis's clock. Month counters use the platform's time zone (Asia/Tokyo).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from . import journal as usage_journal
from .admission_redis import (
    ADMIT_LUA,
    LUA_DIR,
    REDIS_DOWN,
    SETTLE_LUA,
    async_scripts,
    aunavailable,
    redis_down_policy,
    reset_clients_for_tests,
    sync_scripts,
    unavailable,
)
from .admission_types import (
    PLATFORM,
    AdmissionUnavailable,
    BudgetLine,
    Level,
    QuotaExceeded,
    Reservation,
    Subject,
    refusal_message,
)
from .budget_models import LimitLevel
from .limits import (
    YEN_UNITS,
    LimitValues,
    MinistryLimits,
    cached_ministry_limits,
    ministry_limits,
    refresh_ahead_ministry_limits,
)
from .redis_pipe import encode_args

__all__ = [
    "ADMIT_LUA",
    "LUA_DIR",
    "PLATFORM",
    "SETTLE_LUA",
    "AdmissionUnavailable",
    "BudgetLine",
    "Level",
    "QuotaExceeded",
    "Reservation",
    "Subject",
    "acap_max_tokens",
    "areserve",
    "asettle",
    "budget_status",
    "cap_max_tokens",
    "redis_down_policy",
    "refusal_message",
    "reserve",
    "reset_clients_for_tests",
    "settle",
    "subject_for_api_key",
    "subject_for_user",
]

logger = logging.getLogger("gennai.quotas")

PREFIX = "gennai:q:"
"""Every admission key starts with this (tests give each run its own)."""

DEFAULT_RESERVATION_SECONDS = 900.0
_ALIAS = re.compile(r"[-a-zA-Z0-9_]{1,100}")  # registry aliases are slugs (Alias.name)


def subject_for_user(*, ministry_id: int, user: Any, alias_name: str, zone: str) -> Subject:
    """The subject of a signed-in user's request (sync: reads the user's teams, scoped).

    Security: the ministry is the request's active one (from the membership);
    teams are read inside that ministry's scope, so another ministry's team
    memberships never apply.
    """
    from apps.tenancy.models import TeamMembership
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry_id):
        team_ids = tuple(
            sorted(TeamMembership.objects.filter(user_id=user.pk).values_list("team_id", flat=True))
        )
    return Subject(
        ministry_id=ministry_id,
        user_id=int(user.pk),
        api_key_id=None,
        team_ids=team_ids,
        alias_name=alias_name,
        zone=zone,
    )


def subject_for_api_key(*, api_key: Any, alias_name: str, zone: str) -> Subject:
    """The subject of a ``/v1`` request: the key and its ministry (no I/O)."""
    return Subject(
        ministry_id=int(api_key.ministry_id),
        user_id=None,
        api_key_id=int(getattr(api_key, "pk", None) or api_key.id),
        team_ids=(),
        alias_name=alias_name,
        zone=zone,
    )


# --- Levels ------------------------------------------------------------------------------------


def scopes_of(subject: Subject) -> list[tuple[str, str, int]]:
    """``(scope, level, subject id)`` of each level, all-alias variant (platform first)."""
    m = subject.ministry_id
    out = [("p", PLATFORM, 0), (f"m{m}", LimitLevel.MINISTRY.value, m)]
    out += [(f"m{m}:t{t}", LimitLevel.TEAM.value, t) for t in subject.team_ids]
    if subject.user_id is not None:
        out.append((f"m{m}:u{subject.user_id}", LimitLevel.USER.value, subject.user_id))
    if subject.api_key_id is not None:
        out.append((f"m{m}:k{subject.api_key_id}", LimitLevel.API_KEY.value, subject.api_key_id))
    return out


def _rows_of(subject: Subject, limits: MinistryLimits) -> list[Level]:
    """Every limit row that applies to the request (own or default), for all aliases and its alias."""
    if subject.alias_name and not _ALIAS.fullmatch(subject.alias_name):
        # Security: the alias becomes part of Redis key names and of the script's
        # newline-separated lists; registry aliases are slugs, anything else is refused.
        raise ValueError(f"not an alias name: {subject.alias_name[:100]!r}")
    out: list[Level] = []
    for scope, level, subject_id in scopes_of(subject):
        values = limits.get(level, subject_id, "")
        if values is not None:
            out.append(Level(scope, level, "", values))
        if subject.alias_name:
            values = limits.get(level, subject_id, subject.alias_name)
            if values is not None:
                out.append(Level(f"{scope}|{subject.alias_name}", level, subject.alias_name, values))
    return out


def levels_of(subject: Subject, limits: MinistryLimits) -> list[Level]:
    """The counters the request is charged to: each scope with a counted limit (budget, RPM, TPM or
    concurrency), for all aliases and for its alias. A scope without one keeps no counter, so
    admission work grows with the limits that exist, not with the depth of the hierarchy."""
    return list(_plan(subject, limits).levels)


@dataclass(frozen=True)
class _Plan:
    """What admission derives from a subject and its ministry's limits, computed once per limits
    snapshot (cached on the :class:`MinistryLimits` object, so a new snapshot starts afresh)."""

    levels: tuple[Level, ...]
    max_tokens: int | None
    """The smallest ``max_tokens`` cap of any applying row (``None``: no cap)."""
    level_args: tuple[int, bytes]
    """The levels' part of ``admit.lua``'s arguments, already in Redis's wire format."""


PLANS_PER_LIMITS = 100_000
"""Subjects remembered per limits snapshot (then the cache starts over; it is only a shortcut)."""


def _plan(subject: Subject, limits: MinistryLimits) -> _Plan:
    plan: _Plan | None = limits.plans.get(subject)
    if plan is not None:
        return plan
    rows = _rows_of(subject, limits)
    levels = tuple(level for level in rows if level.limits is not None and level.limits.counted)
    caps = [
        int(r.limits.max_tokens) for r in rows if r.limits is not None and r.limits.max_tokens is not None
    ]
    parts = [value for level in levels for value in _level_values(level)]
    plan = _Plan(levels, min(caps) if caps else None, (len(parts), encode_args(parts)))
    if len(limits.plans) >= PLANS_PER_LIMITS:
        limits.plans.clear()
    limits.plans[subject] = plan
    return plan


def _cap(plan: _Plan, requested: int | None, default: int) -> int:
    value = default if requested is None or requested <= 0 else int(requested)
    if plan.max_tokens is not None:
        value = min(value, plan.max_tokens)
    return max(value, 0)


def cap_max_tokens(*, subject: Subject, requested: int | None, default: int) -> int:
    """``requested`` (or ``default``) lowered to the smallest ``max_tokens`` cap of any level (sync)."""
    return _cap(_plan(subject, ministry_limits(subject.ministry_id)), requested, default)


async def acap_max_tokens(*, subject: Subject, requested: int | None, default: int) -> int:
    """:func:`cap_max_tokens` for the event loop (hops to a thread only to refresh the cache)."""
    return _cap(_plan(subject, await _alimits(subject.ministry_id)), requested, default)


_refreshing: dict[tuple[int, int], asyncio.Task[MinistryLimits]] = {}


def _log_refresh_failure(task: asyncio.Task[MinistryLimits]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("admission: refreshing the limits cache failed", exc_info=task.exception())


async def _alimits(ministry_id: int) -> MinistryLimits:
    """The ministry's limits without blocking the loop: from the cache, or one refresh in a thread.

    Single flight: when the cache needs its version check (every ``check_seconds()``), the
    first request of the loop does the database hop and every concurrent request of that
    ministry awaits the same result. Without this, 200 in-flight requests queued 200
    database hops behind each other on the one thread-sensitive executor twice a second.
    """
    limits = cached_ministry_limits(ministry_id)
    if limits is not None:
        return limits
    from apps.tenancy.connections import db_hop

    loop = asyncio.get_running_loop()
    key = (id(loop), ministry_id)
    task = _refreshing.get(key)
    if task is None or task.get_loop() is not loop:
        task = loop.create_task(db_hop(ministry_limits, ministry_id))
        _refreshing[key] = task
        task.add_done_callback(
            lambda done: _refreshing.pop(key, None) if _refreshing.get(key) is done else None
        )
        # Nobody may await a refresh-ahead task: its failure is logged, not left unretrieved.
        task.add_done_callback(_log_refresh_failure)
    # Refresh ahead: just after a check fell due, this request goes on with the cached
    # limits while the refresh runs (the p99 of reserve otherwise carries one database hop
    # per check interval); see limits.refresh_ahead_ministry_limits for the bound.
    ahead = refresh_ahead_ministry_limits(ministry_id)
    if ahead is not None:
        return ahead
    # Shielded: a request that goes away must not cancel the refresh the others wait for.
    return await asyncio.shield(task)


# --- Arguments of the scripts -----------------------------------------------------------------


_month_now: tuple[float, float, str, float] = (0.0, 0.0, "", 0.0)
"""``(start, end)`` epoch seconds of the month :func:`_month` last computed, its ``YYYYMM`` and
the instant its retry counts to (a request needs only a comparison, not a calendar)."""


def _month(now: datetime | None = None) -> tuple[str, int]:
    """``(YYYYMM, seconds to the start of next month)`` in the platform's time zone."""
    global _month_now
    if now is None:
        ts = time.time()
        start, end, month, last = _month_now
        if start <= ts < end:
            return month, max(1, int(last - ts) + 1)
    local = timezone.localtime(now)
    days = calendar.monthrange(local.year, local.month)[1]
    end_dt = local.replace(day=days, hour=23, minute=59, second=59, microsecond=0)
    month = f"{local.year:04d}{local.month:02d}"
    if now is None:
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        _month_now = (first.timestamp(), end_dt.timestamp() + 1, month, end_dt.timestamp())
    return month, max(1, int((end_dt - local).total_seconds()) + 1)


def month_key(now: datetime | None = None) -> str:
    return _month(now)[0]


def reservation_seconds() -> float:
    return float(getattr(settings, "GENNAI_QUOTA_RESERVATION_SECONDS", DEFAULT_RESERVATION_SECONDS))


def yen_units(amount: Decimal | int | float | None) -> int:
    """Yen as an integer count of 1/10,000 yen, rounded up (a reservation never under-estimates)."""
    if not amount:
        return 0
    return int((Decimal(str(amount)) * YEN_UNITS).to_integral_value(rounding=ROUND_CEILING))


def _n(value: int | None) -> int:
    return -1 if value is None else int(value)


def _level_values(level: Level) -> list[Any]:
    """One level's arguments of ``admit.lua``: its scope and limits (-1 = none)."""
    lim = level.limits or LimitValues()
    return [
        level.scope,
        _n(lim.monthly_tokens),
        _n(lim.monthly_yen_units),
        _n(lim.rpm),
        _n(lim.tpm),
        _n(lim.max_concurrent),
    ]


def admit_args(*, subject: Subject, plan: _Plan, request_id: str, tokens: int, yen: int) -> list[Any]:
    """The arguments of ``admit.lua`` before the levels' (``plan.level_args``, pre-encoded)."""
    month, month_retry = _month()
    return [
        PREFIX,
        request_id,
        tokens,
        yen,
        month,
        month_retry,
        int(reservation_seconds() * 1000),
        subject.ministry_id,
        len(plan.levels),
    ]


def _estimate(prompt_tokens: int, max_tokens: int, price: Decimal | None) -> tuple[int, int]:
    tokens = max(int(prompt_tokens), 0) + max(int(max_tokens), 0)
    yen = yen_units(Decimal(tokens) * Decimal(str(price)) / Decimal(1_000_000)) if price else 0
    return tokens, yen


def _outcome(reply: list[Any], reservation: Reservation, plan: _Plan) -> Reservation:
    tag = _text(reply[0])
    if tag == "ok":
        reservation.expires_at_ms = int(reply[1])
        return reservation
    if tag == "dup":
        raise ValueError(f"request id {reservation.request_id} already holds a reservation")
    level = plan.levels[int(reply[1]) - 1]
    raise QuotaExceeded(
        level=level.level, kind=_text(reply[2]), retry_after=int(reply[3]), alias=level.alias_name
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- Reserve and settle -------------------------------------------------------------------------


def _journal_args(entry: bytes | None) -> list[Any] | None:
    """The scripts' optional last arguments: the usage journal's stream and an encoded entry."""
    return None if entry is None else [usage_journal.STREAM, entry]


async def areserve(
    *,
    subject: Subject,
    prompt_tokens: int,
    max_tokens: int,
    request_id: str,
    price: Decimal | None = None,
    journal: bytes | None = None,
) -> Reservation:
    """Reserve ``prompt_tokens + max_tokens`` (and their yen at ``price`` per 1M tokens) on every level.

    ``max_tokens`` must already be capped (:func:`acap_max_tokens`). Raises
    :class:`QuotaExceeded` (the binding level: the longest ``retry_after``) or
    :class:`AdmissionUnavailable`; otherwise settle the result with :func:`asettle`.

    ``journal``: the request's encoded ``started`` usage-journal entry
    (:meth:`apps.quotas.journal.UsageEntry.encode`). The script appends it to the journal
    in the same atomic step as the reservation, and only if the request is admitted: the
    result's ``journaled`` is then True and the caller must not write it again. Otherwise
    (Redis down and a grace admission, or a journal stream that refused the entry) the
    caller journals it itself.
    """
    plan = _plan(subject, await _alimits(subject.ministry_id))
    tokens, yen = _estimate(prompt_tokens, max_tokens, price)
    reservation = Reservation(request_id, subject, tokens, yen, int(max_tokens))
    args = admit_args(subject=subject, plan=plan, request_id=request_id, tokens=tokens, yen=yen)
    try:
        reply = await async_scripts().admit(args=args, encoded=plan.level_args, after=_journal_args(journal))
    except REDIS_DOWN as exc:
        return await aunavailable(reservation, exc)
    reservation = _outcome(reply, reservation, plan)
    reservation.journaled = journal is not None and int(reply[2]) == 1
    return reservation


def reserve(
    *,
    subject: Subject,
    prompt_tokens: int,
    max_tokens: int,
    request_id: str,
    price: Decimal | None = None,
) -> Reservation:
    """:func:`areserve` for synchronous code (Celery workers, sync views)."""
    plan = _plan(subject, ministry_limits(subject.ministry_id))
    tokens, yen = _estimate(prompt_tokens, max_tokens, price)
    reservation = Reservation(request_id, subject, tokens, yen, int(max_tokens))
    args = admit_args(subject=subject, plan=plan, request_id=request_id, tokens=tokens, yen=yen)
    args += [value for level in plan.levels for value in _level_values(level)]
    try:
        reply = sync_scripts().admit(args=args)
    except REDIS_DOWN as exc:
        return unavailable(reservation, exc)
    return _outcome(reply, reservation, plan)


def _settle_args(
    reservation: Reservation, prompt_tokens: int, completion_tokens: int, cost_yen: Any
) -> list[Any]:
    tokens = max(int(prompt_tokens), 0) + max(int(completion_tokens), 0)
    return [PREFIX, reservation.request_id, "s", tokens, yen_units(cost_yen)]


SETTLE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds between background retries of a settle that could not reach Redis (settling is idempotent)."""

_retrying: set[asyncio.Task[None]] = set()


async def asettle(
    *,
    reservation: Reservation,
    prompt_tokens: int,
    completion_tokens: int,
    cost_yen: Decimal,
    journal: bytes | None = None,
) -> bool:
    """Replace the reservation with the actual usage on every level; idempotent, never raises for Redis.

    Call it in a ``finally`` (upstream errors, disconnects and stopped streams
    settle to what was produced). If Redis cannot be reached, the settle is
    retried in the background for about half a minute (a blip must not hold the
    reservation's budget and slot until it expires); after that the reservation
    expires and the reconciler catches the counters up from the ledger.

    ``journal``: the request's encoded ``finished`` usage-journal entry, appended by
    the same script (one command at the end of a request instead of two). Returns
    True only if Redis stored it; otherwise (not given, nothing to settle, Redis down,
    the journal refused it) the caller journals it itself.
    """
    if reservation.degraded or reservation.settled:
        return False
    args = _settle_args(reservation, prompt_tokens, completion_tokens, cost_yen)
    try:
        reply = await async_scripts().settle(args=args, after=_journal_args(journal))
        reservation.settled = True
        return isinstance(reply, list) and int(reply[1]) == 1
    except REDIS_DOWN:
        logger.warning("admission: settle of %s failed, retrying in the background", reservation.request_id)
        task = asyncio.get_running_loop().create_task(_retry_settle(reservation, args))
        _retrying.add(task)  # keep a reference until done (the loop holds tasks weakly)
        task.add_done_callback(_retrying.discard)
    except RedisError:
        logger.exception(
            "admission: settle of %s failed; the reconciler will repair it", reservation.request_id
        )
    return False


async def _retry_settle(reservation: Reservation, args: list[Any]) -> None:
    for delay in SETTLE_RETRY_DELAYS:
        await asyncio.sleep(delay)
        if reservation.settled:
            return
        try:
            await async_scripts().settle(args=args)
        except REDIS_DOWN:
            continue
        except RedisError:
            break
        reservation.settled = True
        return
    logger.warning("admission: settle of %s gave up; the reconciler will repair it", reservation.request_id)


def settle(
    *, reservation: Reservation, prompt_tokens: int, completion_tokens: int, cost_yen: Decimal
) -> None:
    """:func:`asettle` for synchronous code."""
    if reservation.degraded or reservation.settled:
        return
    try:
        sync_scripts().settle(args=_settle_args(reservation, prompt_tokens, completion_tokens, cost_yen))
        reservation.settled = True
    except (RedisError, OSError):
        logger.warning(
            "admission: settle of %s failed; the reconciler will repair it",
            reservation.request_id,
            exc_info=True,
        )


# --- Remaining budget ----------------------------------------------------------------------------


def budget_status(*, ministry_id: int, user_id: int, alias_name: str = "") -> list[BudgetLine]:
    """The month budget of every level above ``user_id`` that has one (sync: cache + one Redis round trip).

    For "remaining budget" displays and the 80 %/100 % warnings; empty if Redis
    is unreachable (the display is advisory, admission is what enforces).

    Security: the platform level is left out, as in the alerts
    (:func:`apps.quotas.alerts.budget_levels`): its counter is the usage of every
    ministry together, which no ministry's member may watch (a live total would
    show another ministry's activity); platform admins see it in the console.
    Admission still holds every request to the platform's limits.
    """
    from django.contrib.auth import get_user_model

    user = get_user_model()(pk=user_id)
    subject = subject_for_user(ministry_id=ministry_id, user=user, alias_name=alias_name, zone="on_prem")
    levels = [
        level
        for level in levels_of(subject, ministry_limits(ministry_id))
        if level.level != PLATFORM
        and level.limits is not None
        and (level.limits.monthly_tokens is not None or level.limits.monthly_yen_units is not None)
    ]
    if not levels:
        return []
    month = month_key()
    try:
        client = sync_scripts().client
        pipe = client.pipeline(transaction=False)
        for level in levels:
            pipe.hmget(f"{PREFIX}{level.scope}:b:{month}", "ut", "ht", "uy")
        replies = pipe.execute()
    except (RedisError, OSError):
        logger.warning("budget_status: Redis unreachable", exc_info=True)
        return []
    lines = []
    for level, (ut, ht, uy) in zip(levels, replies, strict=True):
        assert level.limits is not None
        yen_limit = level.limits.monthly_yen_units
        lines.append(
            BudgetLine(
                level=level.level,
                alias_name=level.alias_name,
                used_tokens=int(ut or 0),
                held_tokens=int(ht or 0),
                limit_tokens=level.limits.monthly_tokens,
                used_yen=Decimal(int(uy or 0)) / YEN_UNITS,
                limit_yen=None if yen_limit is None else Decimal(yen_limit) / YEN_UNITS,
            )
        )
    return lines
