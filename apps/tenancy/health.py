"""Dependency checks for /readyz. Each returns quickly and never raises."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection

# A check raises when not ready; it may return a short detail string to report.
Check = Callable[[], str | None]


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _inference() -> str:
    """At least one enabled model deployment is not down ("none registered" is ready too)."""
    from apps.registry.selectors import inference_readiness

    return inference_readiness()


class SearchUnhealthy(RuntimeError):
    """The search backend reported itself unhealthy (its detail is the message)."""


def _search() -> str:
    """The configured search backend (apps.search) answers; its detail says which and how."""
    from apps.search.base import get_backend

    health = get_backend().health()
    if not health.ok:
        raise SearchUnhealthy(health.detail)
    return health.detail


CHECKS: dict[str, Check] = {
    "database": _database,
    "broker": _broker,
    "inference": _inference,
    "search": _search,
}
# Checks whose failure makes the pod unready. With every model upstream down the
# web tier still serves history, documents and admin screens (chat shows a clear
# error), so inference only marks the platform "degraded" instead of pulling
# every web pod out of the load balancer. Search likewise: chat works without it.
CRITICAL = frozenset({"database", "broker"})


def run_checks() -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        try:
            detail = check()
            results[name] = {"ok": True} if detail is None else {"ok": True, "detail": detail}
        except Exception as exc:  # noqa: BLE001 - report any failure as "not ready"
            results[name] = {"ok": False, "error": type(exc).__name__}
        results[name]["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return results
