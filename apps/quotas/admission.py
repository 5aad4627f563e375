"""Admission: reserve before calling a model, settle after — atomically, on every level at once.

What this module guarantees, and why:

* **One atomic step for every level.** A request's levels — the platform, its
  ministry, each of the user's teams, the user or the API key, each for all
  aliases and for the request's alias — are checked and reserved by one Lua
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
  (``AdmissionUnavailable``, HTTP 503/429 with Retry-After) for external and
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
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .budget_models import LimitLevel
from .limits import YEN_UNITS, LimitValues, MinistryLimits, cached_ministry_limits, ministry_limits

logger = logging.getLogger("gennai.quotas")

PREFIX = "gennai:q:"
"""Every admission key starts with this (tests give each run its own)."""

PLATFORM = "platform"
DEFAULT_RESERVATION_SECONDS = 900.0
# What "Redis is down" means: no connection, no answer in time, or a replica that cannot
# take writes (during a failover). A script error is a bug and is raised, never waved through.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
DEFAULT_REDIS_DOWN = {"external": "closed", "gov_cloud": "closed", "on_prem": "grace"}
LUA_DIR = Path(__file__).with_name("lua")


def _lua(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


ADMIT_LUA = _lua("admit")
SETTLE_LUA = _lua("settle")


# --- Subjects, refusals, reservations --------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """Who a request is charged to: every level whose limits apply to it.

    ``zone`` is the zone of the deployment the request goes to (``external``,
    ``gov_cloud``, ``on_prem``): it decides what happens when Redis is down.
    """

    ministry_id: int
    user_id: int | None
    api_key_id: int | None
    team_ids: tuple[int, ...]
    alias_name: str
    zone: str


class QuotaExceeded(Exception):
    """A limit refused the request: answer HTTP 429 with ``Retry-After: retry_after``.

    ``level`` is the refusing level (platform, ministry, team, user, api_key),
    ``kind`` what ran out (budget, rpm, tpm, concurrency), ``alias`` the alias
    when the refusing limit was that alias's own ("" = all aliases together).
    ``message`` is localised in the active language.
    """

    def __init__(self, *, level: str, kind: str, retry_after: int, alias: str = "") -> None:
        self.level = level
        self.kind = kind
        self.retry_after = max(1, int(retry_after))
        self.alias = alias
        self.message = refusal_message(level=level, kind=kind, retry_after=self.retry_after)
        super().__init__(self.message)


class AdmissionUnavailable(QuotaExceeded):
    """Redis is unreachable and the zone's policy is to fail closed (kind ``unavailable``)."""

    def __init__(self, *, retry_after: int = 5) -> None:
        super().__init__(level=PLATFORM, kind="unavailable", retry_after=retry_after)


def refusal_message(*, level: str, kind: str, retry_after: int) -> str:
    """The user-facing explanation of a refusal (ja, or en in an English request)."""
    levels = {
        PLATFORM: _("プラットフォーム全体"),
        LimitLevel.MINISTRY: _("府省庁"),
        LimitLevel.TEAM: _("チーム"),
        LimitLevel.USER: _("利用者"),
        LimitLevel.API_KEY: _("APIキー"),
    }
    where = levels.get(level, level)
    if kind == "budget":
        return _(
            "%(level)sの今月の利用上限に達しました。来月まで、または管理者が上限を変更するまでお待ちください。"
        ) % {"level": where}
    if kind == "concurrency":
        return _(
            "%(level)sの同時実行数の上限に達しています。実行中の処理が終わってから再度お試しください。"
        ) % {"level": where}
    if kind == "unavailable":
        return _(
            "利用量の確認ができないため、現在このモデルは利用できません。%(seconds)d秒後に再度お試しください。"
        ) % {"seconds": retry_after}
    return _("%(level)sの1分あたりの利用上限に達しました。%(seconds)d秒後に再度お試しください。") % {
        "level": where,
        "seconds": retry_after,
    }


@dataclass
class Reservation:
    """What :func:`areserve` held; pass it to :func:`asettle` exactly once (more is harmless).

    ``degraded`` reservations were admitted under the Redis-down grace: nothing
    is held in Redis, settling them does nothing, and the ledger row catches the
    counters up at the next reconcile.
    """

    request_id: str
    subject: Subject
    tokens: int
    yen_units: int
    max_tokens: int
    expires_at_ms: int = 0
    degraded: bool = False
    settled: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class BudgetLine:
    """One level's month budget, for "remaining budget" displays."""

    level: str
    alias_name: str
    used_tokens: int
    held_tokens: int
    limit_tokens: int | None
    used_yen: Decimal
    limit_yen: Decimal | None

    @property
    def fraction(self) -> float | None:
        """The larger of the token and yen fractions used (``None`` without a limit)."""
        parts: list[float] = []
        if self.limit_tokens:
            parts.append((self.used_tokens + self.held_tokens) / self.limit_tokens)
        elif self.limit_tokens == 0:
            parts.append(1.0)
        if self.limit_yen:
            parts.append(float(self.used_yen / self.limit_yen))
        elif self.limit_yen == 0:
            parts.append(1.0)
        return max(parts) if parts else None


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


@dataclass(frozen=True)
class Level:
    """One counter scope of a request, with its limits (``None`` = no row)."""

    scope: str
    level: str
    alias_name: str
    limits: LimitValues | None


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


def levels_of(subject: Subject, limits: MinistryLimits) -> list[Level]:
    """Every counter the request is charged to: each scope for all aliases and for its alias."""
    out: list[Level] = []
    for scope, level, subject_id in scopes_of(subject):
        out.append(Level(scope, level, "", limits.get(level, subject_id, "")))
        if subject.alias_name:
            alias_limits = limits.get(level, subject_id, subject.alias_name)
            out.append(Level(f"{scope}|{subject.alias_name}", level, subject.alias_name, alias_limits))
    return out


def _cap(levels: list[Level], requested: int | None, default: int) -> int:
    value = default if requested is None or requested <= 0 else int(requested)
    for level in levels:
        if level.limits is not None and level.limits.max_tokens is not None:
            value = min(value, int(level.limits.max_tokens))
    return max(value, 0)


def cap_max_tokens(*, subject: Subject, requested: int | None, default: int) -> int:
    """``requested`` (or ``default``) lowered to the smallest ``max_tokens`` cap of any level (sync)."""
    return _cap(levels_of(subject, ministry_limits(subject.ministry_id)), requested, default)


async def acap_max_tokens(*, subject: Subject, requested: int | None, default: int) -> int:
    """:func:`cap_max_tokens` for the event loop (hops to a thread only to refresh the cache)."""
    return _cap(levels_of(subject, await _alimits(subject.ministry_id)), requested, default)


async def _alimits(ministry_id: int) -> MinistryLimits:
    limits = cached_ministry_limits(ministry_id)
    if limits is not None:
        return limits
    from apps.tenancy.connections import db_hop

    return await db_hop(ministry_limits, ministry_id)


# --- Arguments of the scripts -----------------------------------------------------------------


def _month(now: datetime | None = None) -> tuple[str, int]:
    """``(YYYYMM, seconds to the start of next month)`` in the platform's time zone."""
    local = timezone.localtime(now)
    days = calendar.monthrange(local.year, local.month)[1]
    end = local.replace(day=days, hour=23, minute=59, second=59, microsecond=0)
    return f"{local.year:04d}{local.month:02d}", max(1, int((end - local).total_seconds()) + 1)


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


def admit_args(*, subject: Subject, levels: list[Level], request_id: str, tokens: int, yen: int) -> list[Any]:
    month, month_retry = _month()
    args: list[Any] = [
        PREFIX,
        request_id,
        tokens,
        yen,
        month,
        month_retry,
        int(reservation_seconds() * 1000),
        subject.ministry_id,
        len(levels),
    ]
    for level in levels:
        lim = level.limits or LimitValues()
        args += [
            level.scope,
            level.level,
            level.alias_name,
            _n(lim.monthly_tokens),
            _n(lim.monthly_yen_units),
            _n(lim.rpm),
            _n(lim.tpm),
            _n(lim.max_concurrent),
        ]
    return args


def _estimate(prompt_tokens: int, max_tokens: int, price: Decimal | None) -> tuple[int, int]:
    tokens = max(int(prompt_tokens), 0) + max(int(max_tokens), 0)
    yen = yen_units(Decimal(tokens) * Decimal(str(price)) / Decimal(1_000_000)) if price else 0
    return tokens, yen


def _outcome(reply: list[Any], reservation: Reservation) -> Reservation:
    tag = _text(reply[0])
    if tag == "ok":
        reservation.expires_at_ms = int(reply[1])
        return reservation
    if tag == "dup":
        raise ValueError(f"request id {reservation.request_id} already holds a reservation")
    raise QuotaExceeded(
        level=_text(reply[1]), kind=_text(reply[2]), retry_after=int(reply[3]), alias=_text(reply[4])
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- Redis clients ------------------------------------------------------------------------------


def _timeout() -> float:
    return float(getattr(settings, "GENNAI_QUOTA_REDIS_TIMEOUT_SECONDS", 0.5))


class _AsyncScripts:
    """One asyncio Redis client and its two scripts, per event loop (connections are loop-bound)."""

    def __init__(self) -> None:
        import redis.asyncio as aredis

        # A blocking pool: under a burst, a request waits (bounded) for a connection
        # instead of failing as if Redis were down.
        pool = aredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=int(getattr(settings, "GENNAI_QUOTA_REDIS_CONNECTIONS", 64)),
            timeout=2 * _timeout() + 1,
            socket_timeout=_timeout(),
            socket_connect_timeout=_timeout(),
        )
        self.client = aredis.Redis(connection_pool=pool)
        self.admit = self.client.register_script(ADMIT_LUA)
        self.settle = self.client.register_script(SETTLE_LUA)


_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncScripts] = weakref.WeakKeyDictionary()


def _ascripts() -> _AsyncScripts:
    loop = asyncio.get_running_loop()
    scripts = _async.get(loop)
    if scripts is None:
        scripts = _async[loop] = _AsyncScripts()
    return scripts


class _SyncScripts:
    def __init__(self) -> None:
        import redis

        self.client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=_timeout(), socket_connect_timeout=_timeout()
        )
        self.admit = self.client.register_script(ADMIT_LUA)
        self.settle = self.client.register_script(SETTLE_LUA)


_sync_local = threading.local()


def _sscripts() -> _SyncScripts:
    scripts = getattr(_sync_local, "scripts", None)
    if scripts is None or getattr(_sync_local, "url", None) != settings.REDIS_URL:
        scripts = _sync_local.scripts = _SyncScripts()
        _sync_local.url = settings.REDIS_URL
    return scripts


def reset_clients_for_tests() -> None:
    _async.clear()
    _sync_local.__dict__.clear()
    _grace.reset()


# --- Redis down: the per-zone policy ------------------------------------------------------------


class _Grace:
    """Per-process admissions allowed per minute while Redis is unreachable (zones on ``grace``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.minute = 0
        self.count = 0

    def take(self, per_minute: int) -> bool:
        minute = int(time.time() // 60)
        with self.lock:
            if minute != self.minute:
                self.minute, self.count = minute, 0
            if self.count >= per_minute:
                return False
            self.count += 1
            return True

    def reset(self) -> None:
        with self.lock:
            self.minute, self.count = 0, 0


_grace = _Grace()


def redis_down_policy(zone: str) -> str:
    """``closed`` or ``grace`` for ``zone``; unknown zones fail closed."""
    policy = {**DEFAULT_REDIS_DOWN, **getattr(settings, "GENNAI_QUOTA_REDIS_DOWN", {})}
    return "grace" if policy.get(zone, "closed") == "grace" else "closed"


def _unavailable(reservation: Reservation, exc: BaseException) -> Reservation:
    """Security: without Redis no limit can be checked; only a zone on ``grace`` gets a bounded pass."""
    zone = reservation.subject.zone
    per_minute = int(getattr(settings, "GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE", 60))
    if redis_down_policy(zone) == "grace" and _grace.take(per_minute):
        logger.warning(
            "admission: Redis unreachable, %s admitted under the %s grace: %s",
            reservation.request_id,
            zone,
            exc,
        )
        reservation.degraded = True
        return reservation
    logger.error("admission: Redis unreachable, %s refused (zone %s): %s", reservation.request_id, zone, exc)
    raise AdmissionUnavailable() from exc


# --- Reserve and settle -------------------------------------------------------------------------


async def areserve(
    *,
    subject: Subject,
    prompt_tokens: int,
    max_tokens: int,
    request_id: str,
    price: Decimal | None = None,
) -> Reservation:
    """Reserve ``prompt_tokens + max_tokens`` (and their yen at ``price`` per 1M tokens) on every level.

    ``max_tokens`` must already be capped (:func:`acap_max_tokens`). Raises
    :class:`QuotaExceeded` (the binding level: the longest ``retry_after``) or
    :class:`AdmissionUnavailable`; otherwise settle the result with :func:`asettle`.
    """
    levels = levels_of(subject, await _alimits(subject.ministry_id))
    tokens, yen = _estimate(prompt_tokens, max_tokens, price)
    reservation = Reservation(request_id, subject, tokens, yen, int(max_tokens))
    args = admit_args(subject=subject, levels=levels, request_id=request_id, tokens=tokens, yen=yen)
    try:
        reply = await _ascripts().admit(args=args)
    except REDIS_DOWN as exc:
        return _unavailable(reservation, exc)
    return _outcome(reply, reservation)


def reserve(
    *,
    subject: Subject,
    prompt_tokens: int,
    max_tokens: int,
    request_id: str,
    price: Decimal | None = None,
) -> Reservation:
    """:func:`areserve` for synchronous code (Celery workers, sync views)."""
    levels = levels_of(subject, ministry_limits(subject.ministry_id))
    tokens, yen = _estimate(prompt_tokens, max_tokens, price)
    reservation = Reservation(request_id, subject, tokens, yen, int(max_tokens))
    args = admit_args(subject=subject, levels=levels, request_id=request_id, tokens=tokens, yen=yen)
    try:
        reply = _sscripts().admit(args=args)
    except REDIS_DOWN as exc:
        return _unavailable(reservation, exc)
    return _outcome(reply, reservation)


def _settle_args(
    reservation: Reservation, prompt_tokens: int, completion_tokens: int, cost_yen: Any
) -> list[Any]:
    tokens = max(int(prompt_tokens), 0) + max(int(completion_tokens), 0)
    return [PREFIX, reservation.request_id, "s", tokens, yen_units(cost_yen)]


async def asettle(
    *, reservation: Reservation, prompt_tokens: int, completion_tokens: int, cost_yen: Decimal
) -> None:
    """Replace the reservation with the actual usage on every level; idempotent, never raises for Redis.

    Call it in a ``finally`` (upstream errors, disconnects and stopped streams
    settle to what was produced). If Redis is unreachable the reservation
    expires and the reconciler catches the counters up from the ledger.
    """
    if reservation.degraded or reservation.settled:
        return
    try:
        await _ascripts().settle(args=_settle_args(reservation, prompt_tokens, completion_tokens, cost_yen))
        reservation.settled = True
    except (RedisError, OSError):
        logger.warning(
            "admission: settle of %s failed; the reconciler will repair it",
            reservation.request_id,
            exc_info=True,
        )


def settle(
    *, reservation: Reservation, prompt_tokens: int, completion_tokens: int, cost_yen: Decimal
) -> None:
    """:func:`asettle` for synchronous code."""
    if reservation.degraded or reservation.settled:
        return
    try:
        _sscripts().settle(args=_settle_args(reservation, prompt_tokens, completion_tokens, cost_yen))
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
    """
    from django.contrib.auth import get_user_model

    user = get_user_model()(pk=user_id)
    subject = subject_for_user(ministry_id=ministry_id, user=user, alias_name=alias_name, zone="on_prem")
    levels = [
        level
        for level in levels_of(subject, ministry_limits(ministry_id))
        if level.limits is not None
        and (level.limits.monthly_tokens is not None or level.limits.monthly_yen_units is not None)
    ]
    if not levels:
        return []
    month = month_key()
    try:
        client = _sscripts().client
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
