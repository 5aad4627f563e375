"""An immutable in-process copy of the registry, refreshed when its version changes.

The hot path (every chat request) must not query the registry tables: it reads
this snapshot. Every registry service calls :func:`bump_version` inside its
transaction, which moves the ``registry`` version in PostgreSQL
(:mod:`apps.tenancy.versions`); each process re-reads that version at most every
``check_seconds()`` (0.5 s) and rebuilds when it moved, so an alias swap, a lowered
clearance or a revoked grant reaches every web process within a second, without
a restart, and a Redis flush or failover cannot lose it. A snapshot older than
``max_age_seconds()`` is rebuilt regardless.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import F

from apps.tenancy import versions
from apps.tenancy.scope import ScopeError, current_ministry_id

from .models import Alias, AliasRoute, Deployment, HealthState, Model

VERSION_NAME = versions.REGISTRY


@dataclass(frozen=True)
class DeploymentInfo:
    id: int
    name: str
    provider: str
    base_url: str
    served_model_name: str
    secret_ref: str
    max_concurrency: int
    clearance: int  # effective: min(zone, model)
    enabled: bool
    healthy: bool
    model_name: str
    context_window: int
    model_status: str = "active"  # a retired model's deployments are never routed (router.routable)
    # Pricing (apps.quotas.pricing): the model's yen per 1M tokens, and the
    # deployment's GPU-hour price, GPUs occupied and measured throughput.
    price_input_per_1m: Decimal = Decimal(0)
    price_output_per_1m: Decimal = Decimal(0)
    gpu_hour_yen: Decimal | None = None
    gpu_count: Decimal = Decimal(1)
    throughput_tokens_per_s: int | None = None
    # on_prem | gov_cloud | external: admission's Redis-down policy (apps.quotas.admission).
    zone: str = "on_prem"


@dataclass(frozen=True)
class ModelPrice:
    """A model's per-token prices, for calls recorded by model name without a deployment."""

    price_input_per_1m: Decimal
    price_output_per_1m: Decimal


@dataclass(frozen=True)
class RouteInfo:
    deployment_id: int
    weight: int


@dataclass(frozen=True)
class AliasInfo:
    id: int
    name: str
    display_name_ja: str
    display_name_en: str
    kind: str
    revision_id: int | None
    revision_number: int
    routes: tuple[RouteInfo, ...]


@dataclass(frozen=True)
class Snapshot:
    version: int  # the ``registry`` version, read before the tables (never newer than the data)
    aliases: dict[str, AliasInfo]
    deployments: dict[int, DeploymentInfo]
    # Per-ministry allowlists, filled lazily inside each ministry's own scope
    # (AliasGrant is under RLS, so one ministry's request can only load its own).
    grants: dict[int, frozenset[int]] = field(default_factory=dict)
    model_prices: dict[str, ModelPrice] = field(default_factory=dict)  # by Model.name

    def granted_alias_ids(self, ministry_id: int) -> frozenset[int]:
        """Alias ids ``ministry_id`` may use; must be called inside that ministry's scope."""
        cached = self.grants.get(ministry_id)
        if cached is None:
            # Security: RLS would show another ministry's grants as none; refuse to
            # cache such a wrong (empty) answer under that ministry's id.
            if current_ministry_id() != ministry_id:
                raise ScopeError("grants must be loaded inside the ministry's own scope")
            from .models import AliasGrant

            cached = frozenset(
                AliasGrant.objects.filter(ministry_id=ministry_id).values_list("alias_id", flat=True)
            )
            self.grants[ministry_id] = cached
        return cached


def _build(version: int) -> Snapshot:
    deployments = {
        d.pk: DeploymentInfo(
            id=d.pk,
            name=d.name,
            provider=d.provider,
            base_url=d.base_url,
            served_model_name=d.served_model_name,
            secret_ref=d.secret_ref,
            max_concurrency=d.max_concurrency,
            clearance=d.effective_clearance,
            enabled=d.enabled,
            healthy=d.health != HealthState.DOWN,
            model_name=d.model.name,
            context_window=d.model.context_window,
            model_status=d.model.status,
            price_input_per_1m=d.model.price_input_per_1m,
            price_output_per_1m=d.model.price_output_per_1m,
            gpu_hour_yen=d.gpu_hour_yen,
            gpu_count=d.gpu_count,
            throughput_tokens_per_s=d.throughput_tokens_per_s,
            zone=d.zone,
        )
        for d in Deployment.objects.select_related("model")
    }
    model_prices = {
        m.name: ModelPrice(m.price_input_per_1m, m.price_output_per_1m)
        for m in Model.objects.only("name", "price_input_per_1m", "price_output_per_1m")
    }
    routes: dict[int, list[RouteInfo]] = {}
    for route in AliasRoute.objects.filter(revision__alias__current_revision=F("revision")):
        routes.setdefault(route.revision_id, []).append(RouteInfo(route.deployment_id, route.weight))
    aliases = {}
    for alias in Alias.objects.select_related("current_revision"):
        revision = alias.current_revision
        aliases[alias.name] = AliasInfo(
            id=alias.pk,
            name=alias.name,
            display_name_ja=alias.display_name_ja,
            display_name_en=alias.display_name_en,
            kind=alias.kind,
            revision_id=revision.pk if revision else None,
            revision_number=revision.number if revision else 0,
            routes=tuple(sorted(routes.get(revision.pk, []), key=lambda r: r.deployment_id))
            if revision
            else (),
        )
    return Snapshot(version=version, aliases=aliases, deployments=deployments, model_prices=model_prices)


class _Holder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: Snapshot | None = None
        self.checked_at = 0.0
        self.built_at = 0.0


_holder = _Holder()


def current_version() -> int:
    """The committed ``registry`` version (a database read)."""
    return versions.read_version(VERSION_NAME)


def get_snapshot() -> Snapshot:
    """The current registry snapshot (synchronous: may read the version and rebuild).

    Rebuilt when the version in PostgreSQL moved (checked at most every
    ``check_seconds()``) or when it is older than ``max_age_seconds()``.
    """
    now = time.monotonic()
    snap = _holder.snapshot
    if (
        snap is not None
        and now - _holder.checked_at < versions.check_seconds()
        and now - _holder.built_at < versions.max_age_seconds()
    ):
        return snap
    # Read the version before the tables: a snapshot is never tagged newer than its data.
    version = current_version()
    with _holder.lock:
        current = _holder.snapshot
        if (
            current is None
            or current.version != version
            or now - _holder.built_at >= versions.max_age_seconds()
        ):
            current = _build(version)
            _holder.snapshot = current
            _holder.built_at = now
        _holder.checked_at = now
        return current


def _drop_local() -> None:
    _holder.snapshot = None


def bump_version() -> None:
    """Invalidate every process's snapshot: call inside the transaction that changes the registry.

    The new version commits with the change (so it survives a Redis flush and
    cannot be lost between commit and announcement); this process also drops its
    own snapshot after commit, so it reads its own writes at once. Safe to call
    again for the same change (a retry invalidates again).
    """
    versions.bump_version(VERSION_NAME)
    transaction.on_commit(_drop_local)


def reset_for_tests() -> None:
    _holder.snapshot = None
    _holder.checked_at = 0.0
    _holder.built_at = 0.0
