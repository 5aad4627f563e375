"""Admission's Redis side: the scripts, one client per event loop (and per thread), and the
per-zone policy when Redis cannot be reached (see apps.quotas.admission)."""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from pathlib import Path

from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .admission_types import AdmissionUnavailable, Reservation

logger = logging.getLogger("gennai.quotas")

# What "Redis is down" means: no connection, no answer in time, or a replica that cannot
# take writes (during a failover). A script error is a bug and is raised, never waved through.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
DEFAULT_REDIS_DOWN = {"external": "closed", "gov_cloud": "closed", "on_prem": "grace"}
LUA_DIR = Path(__file__).with_name("lua")


def lua(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


ADMIT_LUA = lua("admit")
SETTLE_LUA = lua("settle")


def _timeout() -> float:
    return float(getattr(settings, "GENNAI_QUOTA_REDIS_TIMEOUT_SECONDS", 0.5))


class _AsyncScripts:
    """The two scripts over one multiplexed connection, per event loop (connections are loop-bound).

    :mod:`apps.quotas.redis_pipe` explains why not ``redis.asyncio``'s pool: no
    waiting for a connection under a burst, and a few µs of CPU per call.
    """

    def __init__(self) -> None:
        from .redis_pipe import PipelinedRedis, PipelinedScript

        self.client = PipelinedRedis(settings.REDIS_URL, timeout=_timeout())
        self.admit = PipelinedScript(self.client, ADMIT_LUA)
        self.settle = PipelinedScript(self.client, SETTLE_LUA)


_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncScripts] = weakref.WeakKeyDictionary()


def async_scripts() -> _AsyncScripts:
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


def sync_scripts() -> _SyncScripts:
    scripts = getattr(_sync_local, "scripts", None)
    if scripts is None or getattr(_sync_local, "url", None) != settings.REDIS_URL:
        scripts = _sync_local.scripts = _SyncScripts()
        _sync_local.url = settings.REDIS_URL
    return scripts


def reset_clients_for_tests() -> None:
    _async.clear()
    _sync_local.__dict__.clear()


# --- Redis down: the per-zone policy ------------------------------------------------------------


def redis_down_policy(zone: str) -> str:
    """``closed`` or ``grace`` for ``zone``; unknown zones fail closed."""
    policy = {**DEFAULT_REDIS_DOWN, **getattr(settings, "GENNAI_QUOTA_REDIS_DOWN", {})}
    return "grace" if policy.get(zone, "closed") == "grace" else "closed"


def _grace_per_minute() -> int:
    return int(getattr(settings, "GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE", 60))


def _take_grace(reservation: Reservation) -> bool:
    """One grace admission of the reservation's ministry and zone (PostgreSQL; False if spent or failing)."""
    from apps.tenancy.scope import ministry_scope

    from .services import grace_take

    subject = reservation.subject
    try:
        with ministry_scope(ministry_id=subject.ministry_id):
            return grace_take(zone=subject.zone, per_minute=_grace_per_minute())
    except Exception:
        logger.exception("admission: the grace count could not be taken; refused")
        return False


def _after_grace(reservation: Reservation, exc: BaseException, granted: bool) -> Reservation:
    zone = reservation.subject.zone
    if granted:
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


def unavailable(reservation: Reservation, exc: BaseException) -> Reservation:
    """Security: without Redis no limit can be checked; only a zone on ``grace`` gets a bounded pass.

    The pass is counted per ministry, zone and minute in PostgreSQL
    (:func:`apps.quotas.services.grace_take`), shared by every process: it
    does not multiply with the number of web processes. Raises
    :class:`AdmissionUnavailable` otherwise.
    """
    granted = redis_down_policy(reservation.subject.zone) == "grace" and _take_grace(reservation)
    return _after_grace(reservation, exc, granted)


async def aunavailable(reservation: Reservation, exc: BaseException) -> Reservation:
    """:func:`unavailable` for the event loop (the grace count is taken in a database hop)."""
    from apps.tenancy.connections import db_hop

    grace = redis_down_policy(reservation.subject.zone) == "grace"
    granted = grace and await db_hop(_take_grace, reservation)
    return _after_grace(reservation, exc, granted)
