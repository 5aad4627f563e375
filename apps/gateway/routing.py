"""Routing a ``/v1`` request: key restrictions, the ministry's allowlist, the classification gate.

:func:`plan_for` is synchronous and runs in one database hop inside the
caller's ministry scope (the allowlist grants are loaded there once and then
cached in the registry snapshot). It never raises for a refusal: it returns
the :class:`ApiError` so that the caller can record the refusal as usage.
"""

from __future__ import annotations

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


def plan_sync(
    caller: Caller, *, alias_name: str, level: int, sticky: str | None, kind: str
) -> RoutePlan | ApiError:
    """The route for ``alias_name``, or the refusal; must run inside the caller's ministry scope.

    Security, in this order: the key's own 機密性 cap; the key's alias
    restriction (answered like an unknown model: no oracle); the ministry's
    allowlist and the classification gate (:func:`plan_route`); the kind of
    model (chat vs embedding).
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


async def plan_for(
    caller: Caller, *, alias_name: str, level: int, sticky: str | None, kind: str
) -> RoutePlan | ApiError:
    """:func:`plan_sync` in one scoped database hop (the connection is released after it)."""
    return await scoped_db_hop(
        plan_sync,
        caller,
        alias_name=alias_name,
        level=level,
        sticky=sticky,
        kind=kind,
        ministry_id=caller.ministry_id,
    )
