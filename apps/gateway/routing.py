"""Routing a ``/v1`` request: key restrictions, the ministry's allowlist, the classification gate.

The decision is :func:`apps.registry.router.plan_route`'s, the one place where
the allowlist and the classification gate are enforced. It is synchronous and
must run inside the caller's ministry scope, i.e. in a database hop (a thread,
a pooled connection, a transaction with ``SET LOCAL``): measured at 8–17 ms of
wall time per request under load, the largest part of what ``/v1`` used to add
to the time to first token. So :func:`plan_for`

* checks the key's own limits (its 機密性 cap, its alias list) on the event loop;
* reuses the router's decision for the same ``(ministry, alias, level, kind)``
  for at most :func:`cache_seconds` (0.25 s by default), refreshed ahead of
  expiry in one scoped hop once a request's first token is out
  (:func:`refresh_ahead`), else asked again before the request. Requests
  with a sticky key (conversation) always ask the router, so stickiness is
  exact.

What the reuse costs, and why it is acceptable: a registry change (a revoked
grant, a lowered clearance, a disabled deployment) reaches this process within
the registry snapshot's own bound (``check_seconds()``, 1 s) **plus** 0.25 s;
the weighted pick between a canary and its main route is drawn once per
0.25 s per alias and ministry instead of once per request, which keeps the
configured proportions over time; circuit breakers are still consulted per
request by :func:`~apps.registry.router.stream_chat`, which skips an open
circuit and fails over before the first token.

Refusals are returned, never raised, so that the caller records them as usage.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import translation

from apps.registry.models import ModelKind
from apps.registry.router import RoutePlan, RouteRefused, plan_route
from apps.registry.snapshot import get_snapshot
from apps.tenancy.connections import scoped_db_hop

from . import errors
from .auth import Caller
from .errors import ApiError


def _classification_en(alias_name: str, level: int) -> str:
    snapshot = get_snapshot()
    alias = snapshot.aliases.get(alias_name)
    highest = max(
        (
            snapshot.deployments[r.deployment_id].clearance
            for r in (alias.routes if alias else ())
            if r.weight > 0 and r.deployment_id in snapshot.deployments
        ),
        default=0,
    )
    name = alias.display_name_en if alias else alias_name
    return (
        f"Confidentiality level {level} information cannot be sent to '{name}' "
        f"(this model is cleared up to level {highest}). Review the classification "
        f"or choose a model cleared for level {level}."
    )


def _refusal(exc: RouteRefused, alias_name: str, level: int) -> ApiError:
    if exc.code == "model_not_found":
        return errors.model_not_found(alias_name)
    if exc.code == "classification":
        english = _classification_en(alias_name, level)
    else:
        english = {
            "no_deployment": "This model is currently unavailable.",
            "no_scope": "No ministry is selected.",
        }.get(exc.code, "The request was refused.")
    return ApiError(exc.status, exc.message, english, code=exc.code)


def key_refusal(caller: Caller, *, alias_name: str, level: int) -> ApiError | None:
    """The key's own limits (no I/O): its 機密性 cap, then its alias restriction.

    Security: an alias outside the key's list is answered like an unknown model
    (no oracle for what the ministry may use).
    """
    if level > caller.max_level:
        return ApiError(
            403,
            f"このAPIキーは機密性{caller.max_level}までの情報にしか利用できません（指定: 機密性{level}）。",
            f"This API key may only be used for information up to confidentiality level "
            f"{caller.max_level} (requested: level {level}).",
            code="confidentiality_exceeds_key",
        )
    if caller.allowed_aliases and alias_name not in caller.allowed_aliases:
        return errors.model_not_found(alias_name)
    return None


def plan_sync(
    caller: Caller, *, alias_name: str, level: int, sticky: str | None, kind: str
) -> RoutePlan | ApiError:
    """The route for ``alias_name``, or the refusal; must run inside the caller's ministry scope.

    Security, in this order: the key's own 機密性 cap; the key's alias
    restriction (answered like an unknown model: no oracle); the ministry's
    allowlist and the classification gate (:func:`plan_route`); the kind of
    model (chat vs embedding).
    """
    refusal = key_refusal(caller, alias_name=alias_name, level=level)
    if refusal is not None:
        return refusal
    return _route_sync(alias_name=alias_name, level=level, sticky=sticky, kind=kind)


def _route_sync(*, alias_name: str, level: int, sticky: str | None, kind: str) -> RoutePlan | ApiError:
    """The router's decision for the active ministry scope (no key limits: those come first)."""
    try:
        with translation.override("ja"):
            plan = plan_route(alias_name=alias_name, level=level, sticky_key=sticky)
    except RouteRefused as exc:
        return _refusal(exc, alias_name, level)
    if plan.alias.kind != kind:
        what_ja = "チャット" if kind == ModelKind.CHAT else "埋め込み"
        what_en = "chat" if kind == ModelKind.CHAT else "embedding"
        return ApiError(
            400,
            f"モデル「{alias_name}」は{what_ja}用ではありません。",
            f"The model '{alias_name}' is not a {what_en} model.",
            code="model_not_supported",
            param="model",
        )
    return plan


def cache_seconds() -> float:
    """How long a routing decision is reused (see the module docstring)."""
    return float(getattr(settings, "GENNAI_ROUTE_CACHE_SECONDS", 0.25))


@dataclass(frozen=True)
class _Decision:
    outcome: RoutePlan | ApiError
    at: float  # time.monotonic() when the router was asked


_decisions: dict[tuple[int, str, int, str], _Decision] = {}
_pending: dict[tuple[int, str, int, str], asyncio.Task[_Decision]] = {}
_MAX_DECISIONS = 10_000


async def _ask_router(key: tuple[int, str, int, str]) -> _Decision:
    ministry_id, alias_name, level, kind = key
    asked = time.monotonic()
    outcome = await scoped_db_hop(_route_sync, ministry_id=ministry_id)(
        alias_name=alias_name, level=level, sticky=None, kind=kind
    )
    decision = _Decision(outcome, asked)  # stamped when asked: reuse never extends past that
    if len(_decisions) >= _MAX_DECISIONS:
        _decisions.clear()
    _decisions[key] = decision
    return decision


def _refresh(key: tuple[int, str, int, str]) -> asyncio.Task[_Decision]:
    """One router question per key at a time (single flight); concurrent askers share it."""
    task = _pending.get(key)
    if task is None or task.get_loop() is not asyncio.get_running_loop():
        task = asyncio.ensure_future(_ask_router(key))
        _pending[key] = task
        task.add_done_callback(lambda _t: _pending.pop(key, None))
    return task


async def plan_for(
    caller: Caller, *, alias_name: str, level: int, sticky: str | None, kind: str
) -> RoutePlan | ApiError:
    """The route or the refusal: key limits on the loop, the router's decision (briefly reused).

    A decision is served while younger than :func:`cache_seconds`; the caller
    refreshes it ahead of expiry with :func:`refresh_ahead` once its own first
    token is out, so requests do not wait for the database in steady state.
    """
    refusal = key_refusal(caller, alias_name=alias_name, level=level)
    if refusal is not None:
        return refusal
    if sticky is not None:
        return await scoped_db_hop(_route_sync, ministry_id=caller.ministry_id)(
            alias_name=alias_name, level=level, sticky=sticky, kind=kind
        )
    key = (caller.ministry_id, alias_name, level, kind)
    decision = _decisions.get(key)
    if decision is not None and time.monotonic() - decision.at < cache_seconds():
        return decision.outcome
    return (await asyncio.shield(_refresh(key))).outcome


def refresh_ahead(caller: Caller, *, alias_name: str, level: int, kind: str) -> None:
    """Refresh this decision in the background if it is past half its lifetime.

    Why not inside :func:`plan_for`: the refresh is a thread running Django code,
    which competes for the GIL with the event loop. Started by a request before
    its upstream call, it slowed exactly that request's way to its first token
    (≈1 ms at the median, measured); called once the first token is out (see
    :mod:`.endpoints`), it runs while the loop waits on upstreams. The bound on
    reuse is unchanged: :func:`plan_for` never serves a decision older than
    :func:`cache_seconds`.
    """
    key = (caller.ministry_id, alias_name, level, kind)
    decision = _decisions.get(key)
    if decision is not None and time.monotonic() - decision.at >= cache_seconds() / 2:
        _refresh(key)


def reset_for_tests() -> None:
    _decisions.clear()
    _pending.clear()
