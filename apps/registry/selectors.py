"""Reads of the registry for the procurement screens, health checks and /readyz.

Registry rows are platform-wide (not tenant data). The one exception is
:class:`AliasGrant`, a ministry's allowlist entry: it is read one ministry scope
at a time, so row-level security applies exactly as for any other tenant read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404

from apps.audit.models import AuditEvent
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

from .breaker import breaker
from .models import (
    Alias,
    AliasGrant,
    AliasRevision,
    AliasRoute,
    ChangeRequest,
    ChangeStatus,
    Deployment,
    HealthState,
    Model,
    Vendor,
)
from .permissions import access_for_user


def _check_actor(actor: Any) -> None:
    """Security: "missing" and "not allowed to see the registry" are the same 404."""
    if not access_for_user(actor).can_view:
        raise Http404


# --- Lists ---------------------------------------------------------------------------------


def vendor_list() -> QuerySet[Vendor]:
    return Vendor.objects.annotate(model_count=Count("models")).order_by("name", "pk")


def model_list() -> QuerySet[Model]:
    return (
        Model.objects.select_related("vendor")
        .annotate(deployment_count=Count("deployments"))
        .order_by("family", "version", "pk")
    )


def deployment_list() -> QuerySet[Deployment]:
    return Deployment.objects.select_related("model__vendor").order_by("name")


def _current_routes() -> Prefetch[Any]:
    return Prefetch(
        "current_revision__routes",
        queryset=AliasRoute.objects.select_related("deployment__model").order_by("-weight", "deployment_id"),
    )


def alias_list() -> QuerySet[Alias]:
    return Alias.objects.select_related("current_revision__created_by").prefetch_related(_current_routes())


# --- One object by id (invariant 3: missing and not allowed are the same 404) ---------------


def get_vendor_for_actor(*, actor: Any, vendor_id: int) -> Vendor:
    _check_actor(actor)
    vendor = Vendor.objects.filter(pk=vendor_id).first()
    if vendor is None:
        raise Http404
    return vendor


def get_model_for_actor(*, actor: Any, model_id: int) -> Model:
    _check_actor(actor)
    model = Model.objects.select_related("vendor").filter(pk=model_id).first()
    if model is None:
        raise Http404
    return model


def get_deployment_for_actor(*, actor: Any, deployment_id: int) -> Deployment:
    _check_actor(actor)
    deployment = Deployment.objects.select_related("model__vendor").filter(pk=deployment_id).first()
    if deployment is None:
        raise Http404
    return deployment


def get_alias_for_actor(*, actor: Any, alias_id: int) -> Alias:
    _check_actor(actor)
    alias = alias_list().filter(pk=alias_id).first()
    if alias is None:
        raise Http404
    return alias


# --- Views of one alias --------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRow:
    """A route with its share of traffic (weights are relative)."""

    deployment: Deployment
    weight: int
    percent: float


def route_rows(routes: list[AliasRoute]) -> list[RouteRow]:
    total = sum(r.weight for r in routes)
    return [
        RouteRow(
            deployment=r.deployment,
            weight=r.weight,
            percent=round(100.0 * r.weight / total, 1) if total else 0.0,
        )
        for r in routes
    ]


def alias_current_routes(alias: Alias) -> list[RouteRow]:
    if alias.current_revision is None:
        return []
    return route_rows(list(alias.current_revision.routes.all()))


def alias_revisions(alias: Alias) -> QuerySet[AliasRevision]:
    """Every revision of ``alias``, newest first, with its routes and author."""
    return (
        AliasRevision.objects.filter(alias=alias)
        .select_related("created_by", "rollback_of")
        .prefetch_related(
            Prefetch(
                "routes",
                queryset=AliasRoute.objects.select_related("deployment").order_by("-weight", "deployment_id"),
            )
        )
        .order_by("-number")
    )


def alias_route_candidates(alias: Alias) -> list[Deployment]:
    """Deployments that may serve ``alias`` (same kind); those in its routes first."""
    revision = alias.current_revision
    current = {r.deployment_id for r in revision.routes.all()} if revision else set()
    deployments = list(Deployment.objects.select_related("model").filter(model__kind=alias.kind))
    return sorted(deployments, key=lambda d: (d.pk not in current, d.name))


@dataclass(frozen=True)
class GrantRow:
    ministry: Ministry
    granted: bool


def alias_grant_rows(alias: Alias) -> list[GrantRow]:
    """Which active ministries may use ``alias``.

    Security: grants are tenant rows under row-level security, so each ministry's
    grant is read inside that ministry's own scope (one small query each); no
    unscoped access is needed.
    """
    rows = []
    for ministry in Ministry.objects.filter(active=True).order_by("id"):
        with ministry_scope(ministry_id=ministry.pk):
            granted = AliasGrant.objects.filter(alias=alias).exists()
        rows.append(GrantRow(ministry=ministry, granted=granted))
    return rows


def alias_audit_events(alias: Alias) -> QuerySet[AuditEvent]:
    """The audit trail of ``alias`` (creation, route changes, rollbacks, grants), newest first."""
    return (
        AuditEvent.objects.filter(target_type="alias", target_id=str(alias.pk))
        .select_related("actor", "ministry")
        .order_by("-id")
    )


# --- Health ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentHealthRow:
    deployment: Deployment
    circuit_open: bool


def deployment_health_rows(deployments: Iterable[Deployment]) -> list[DeploymentHealthRow]:
    """Deployments with this process's circuit-breaker state (the breaker is per process)."""
    return [DeploymentHealthRow(deployment=d, circuit_open=breaker.is_open(d.pk)) for d in deployments]


def enabled_deployments() -> QuerySet[Deployment]:
    return Deployment.objects.filter(enabled=True).order_by("pk")


class NoUsableDeployment(Exception):
    """Deployments are registered, but none is enabled and up."""


def inference_readiness() -> str:
    """The ``inference`` check of /readyz (one cheap aggregate query).

    Ready when at least one enabled deployment is not down; a platform with no
    deployment registered yet is ready too ("none registered"), so a fresh
    install can start. Raises :class:`NoUsableDeployment` otherwise.
    """
    counts = Deployment.objects.aggregate(
        total=Count("id"),
        usable=Count("id", filter=Q(enabled=True) & ~Q(health=HealthState.DOWN)),
    )
    if not counts["total"]:
        return "none registered"
    if not counts["usable"]:
        raise NoUsableDeployment(f"0 of {counts['total']} deployments enabled and up")
    return f"{counts['usable']} of {counts['total']} deployments usable"


# --- Four-eyes change requests ---------------------------------------------------------------


def change_requests_pending() -> QuerySet[ChangeRequest]:
    """Open requests, oldest first (the approvers' queue)."""
    return (
        ChangeRequest.objects.filter(status=ChangeStatus.PENDING)
        .select_related("model", "deployment__model", "alias", "proposed_by")
        .order_by("created_at", "id")
    )


def change_requests_decided(*, limit: int = 50) -> list[ChangeRequest]:
    """The most recent approvals and rejections, newest first."""
    return list(
        ChangeRequest.objects.exclude(status=ChangeStatus.PENDING)
        .select_related("model", "deployment", "alias", "proposed_by", "decided_by")
        .order_by("-decided_at", "-id")[:limit]
    )


def change_request_pending_count() -> int:
    return ChangeRequest.objects.filter(status=ChangeStatus.PENDING).count()


def get_change_request_for_actor(*, actor: Any, change_request_id: int) -> ChangeRequest:
    _check_actor(actor)
    request = (
        ChangeRequest.objects.select_related("model", "deployment", "alias", "proposed_by", "decided_by")
        .filter(pk=change_request_id)
        .first()
    )
    if request is None:
        raise Http404
    return request


def pending_change_for(target: Any) -> ChangeRequest | None:
    """The open request on ``target`` (at most one: a database constraint), for its page's banner."""
    field = {Model: "model", Deployment: "deployment", Alias: "alias"}.get(type(target))
    if field is None or target.pk is None:
        return None
    return (
        ChangeRequest.objects.filter(status=ChangeStatus.PENDING, **{field: target})
        .select_related("proposed_by")
        .first()
    )


@dataclass(frozen=True)
class PendingTargets:
    """Ids with an open request, for the "approval pending" badges on list pages."""

    models: frozenset[int]
    deployments: frozenset[int]
    aliases: frozenset[int]


def pending_targets() -> PendingTargets:
    rows = list(
        ChangeRequest.objects.filter(status=ChangeStatus.PENDING).values_list(
            "model_id", "deployment_id", "alias_id"
        )
    )
    return PendingTargets(
        models=frozenset(m for m, _d, _a in rows if m),
        deployments=frozenset(d for _m, d, _a in rows if d),
        aliases=frozenset(a for _m, _d, a in rows if a),
    )
