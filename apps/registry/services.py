"""Writes to the registry. Every change is audited and invalidates the routing snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

from .models import Alias, AliasGrant, AliasRevision, AliasRoute, Deployment, HealthState, Model, Vendor
from .providers.base import HealthResult, ProviderTarget
from .providers.registry import get_provider_factory
from .snapshot import bump_version

MAX_ROUTES = 10
SECRET_REF_RE = re.compile(r"env:[A-Z_][A-Z0-9_]{0,127}")


def _after_commit_invalidate() -> None:
    # Despite the name: bumps the snapshot version *inside* the caller's transaction
    # (it commits with the change, in PostgreSQL; see apps/registry/snapshot.py).
    bump_version()


def _save(obj: Any, *, actor: Any, action: str, fields: dict[str, Any]) -> Any:
    for name, value in fields.items():
        setattr(obj, name, value)
    obj.full_clean()
    obj.save()
    audit_record(
        actor=actor, action=action, target_type=type(obj).__name__.lower(), target_id=obj.pk, data=fields
    )
    _after_commit_invalidate()
    return obj


@transaction.atomic
def vendor_save(*, actor: Any, vendor: Vendor | None = None, **fields: Any) -> Vendor:
    """Create (``vendor=None``) or update a vendor."""
    action = "registry.vendor.update" if vendor else "registry.vendor.create"
    return _save(vendor or Vendor(), actor=actor, action=action, fields=fields)  # type: ignore[no-any-return]


@transaction.atomic
def model_save(*, actor: Any, model: Model | None = None, **fields: Any) -> Model:
    """Create (``model=None``) or update a model entry."""
    action = "registry.model.update" if model else "registry.model.create"
    return _save(model or Model(), actor=actor, action=action, fields=fields)  # type: ignore[no-any-return]


def validate_secret_ref(value: str) -> None:
    """A deployment names *where* its API key lives (``env:VAR_NAME``), never the key itself.

    Security: anything else (a pasted key, a URL with credentials) is refused, so
    no secret can end up in the database, the audit log or a page.
    """
    if value and not SECRET_REF_RE.fullmatch(value):
        raise ValidationError(
            {
                "secret_ref": _(
                    "シークレット参照は「env:環境変数名」の形式で指定してください（例: env:VENDOR_API_KEY）。"
                    "APIキーそのものは入力しないでください。"
                )
            }
        )


@transaction.atomic
def deployment_save(*, actor: Any, deployment: Deployment | None = None, **fields: Any) -> Deployment:
    """Create (``deployment=None``) or update a deployment."""
    validate_secret_ref(fields.get("secret_ref", "") or "")
    action = "registry.deployment.update" if deployment else "registry.deployment.create"
    return _save(deployment or Deployment(), actor=actor, action=action, fields=fields)  # type: ignore[no-any-return]


@transaction.atomic
def alias_create(
    *,
    actor: Any,
    name: str,
    display_name_ja: str,
    display_name_en: str,
    kind: str = "chat",
    description: str = "",
) -> Alias:
    alias = Alias(
        name=name,
        display_name_ja=display_name_ja,
        display_name_en=display_name_en,
        kind=kind,
        description=description,
    )
    alias.full_clean()
    alias.save()
    audit_record(
        actor=actor,
        action="registry.alias.create",
        target_type="alias",
        target_id=alias.pk,
        data={"name": name},
    )
    _after_commit_invalidate()
    return alias


def _validate_routes(alias: Alias, routes: Sequence[tuple[Deployment, int]]) -> None:
    if not routes or len(routes) > MAX_ROUTES:
        raise ValidationError(_("経路は1〜%(n)d件で指定してください。") % {"n": MAX_ROUTES})
    if len({d.pk for d, _w in routes}) != len(routes):
        raise ValidationError(_("同じデプロイメントが重複しています。"))
    if any(w < 0 or w > 1000 for _d, w in routes) or sum(w for _d, w in routes) <= 0:
        raise ValidationError(_("重みは0〜1000で、合計が正になるよう指定してください。"))
    for deployment, _w in routes:
        if deployment.model.kind != alias.kind:
            raise ValidationError(
                _("%(dep)s はこのエイリアスの種別（%(kind)s）と異なるモデルです。")
                % {"dep": deployment.name, "kind": alias.kind}
            )


@transaction.atomic
def alias_set_routes(
    *,
    actor: Any,
    alias: Alias,
    routes: Sequence[tuple[Deployment, int]],
    reason: str,
    rollback_of: AliasRevision | None = None,
) -> AliasRevision:
    """Publish a new revision of ``alias`` (e.g. 90/10 canary, then 0/100 full).

    Takes effect in every process within the snapshot check interval, without a
    restart; in-flight streams finish on the deployment they started on.
    """
    if not reason.strip():
        raise ValidationError(_("変更理由を入力してください。"))
    alias = Alias.objects.select_for_update().get(pk=alias.pk)
    _validate_routes(alias, routes)
    last = alias.revisions.order_by("-number").first()
    revision = AliasRevision.objects.create(
        alias=alias,
        number=(last.number + 1 if last else 1),
        created_by=actor if getattr(actor, "pk", None) else None,
        reason=reason.strip()[:500],
        rollback_of=rollback_of,
    )
    AliasRoute.objects.bulk_create([AliasRoute(revision=revision, deployment=d, weight=w) for d, w in routes])
    alias.current_revision = revision
    alias.save(update_fields=["current_revision"])
    audit_record(
        actor=actor,
        action="registry.alias.rollback" if rollback_of else "registry.alias.routes",
        target_type="alias",
        target_id=alias.pk,
        data={"revision": revision.number, "routes": {d.name: w for d, w in routes}, "reason": reason},
    )
    _after_commit_invalidate()
    return revision


@transaction.atomic
def alias_rollback(*, actor: Any, alias: Alias, reason: str = "") -> AliasRevision:
    """One-step rollback: republish the routes of the revision before the current one."""
    alias = Alias.objects.select_for_update().get(pk=alias.pk)
    current = alias.current_revision
    if current is None:
        raise ValidationError(_("戻せる履歴がありません。"))
    previous = alias.revisions.filter(number__lt=current.number).order_by("-number").first()
    if previous is None:
        raise ValidationError(_("戻せる履歴がありません。"))
    routes = [(r.deployment, r.weight) for r in previous.routes.select_related("deployment__model")]
    return alias_set_routes(
        actor=actor,
        alias=alias,
        routes=routes,
        reason=reason or _("リビジョン%(n)dに戻す") % {"n": previous.number},
        rollback_of=previous,
    )


@transaction.atomic
def alias_grant(*, actor: Any, ministry: Ministry, alias: Alias) -> AliasGrant:
    """Allow ``ministry`` to use ``alias`` (idempotent)."""
    with ministry_scope(ministry_id=ministry.pk):
        grant, created = AliasGrant.objects.get_or_create(
            ministry=ministry,
            alias=alias,
            defaults={"granted_by": actor if getattr(actor, "pk", None) else None},
        )
    if created:
        audit_record(
            actor=actor,
            action="registry.alias.grant",
            target_type="alias",
            target_id=alias.pk,
            ministry_id=ministry.pk,
            data={"ministry": ministry.code},
        )
        _after_commit_invalidate()
    assert isinstance(grant, AliasGrant)
    return grant


@transaction.atomic
def alias_revoke(*, actor: Any, ministry: Ministry, alias: Alias) -> bool:
    with ministry_scope(ministry_id=ministry.pk):
        deleted, _n = AliasGrant.objects.filter(alias=alias).delete()
    if deleted:
        audit_record(
            actor=actor,
            action="registry.alias.revoke",
            target_type="alias",
            target_id=alias.pk,
            ministry_id=ministry.pk,
            data={"ministry": ministry.code},
        )
    _after_commit_invalidate()  # also on a retry: a revocation always re-invalidates every process
    return bool(deleted)


# --- Health --------------------------------------------------------------------------------
# Probing is a machine observation, not a human change: it is not audited, and only a change
# of state (which the router reads) invalidates the routing snapshot.

HEALTH_TIMEOUT_SECONDS = 8.0  # providers must return within their own timeout; this is a backstop
DEGRADED_LATENCY_MS = 2000.0  # answered, but slowly
HEALTH_CONCURRENCY = 16


def deployment_record_health(
    *, deployment: Deployment, health: str, detail: str = "", checked_at: datetime | None = None
) -> bool:
    """Store the outcome of a health probe; return whether the state changed.

    Not audited. The check time and detail are stored on every probe (with a
    queryset update, so ``updated_at`` keeps meaning "configuration changed");
    the snapshot is bumped after commit only when the state itself changed, so
    a probe every 30 s does not make every process rebuild its snapshot.
    """
    if health not in HealthState.values:
        raise ValueError(f"unknown health state {health!r}")
    checked_at = checked_at or timezone.now()
    detail = detail[:500]
    with transaction.atomic():
        previous = (
            Deployment.objects.select_for_update()
            .filter(pk=deployment.pk)
            .values_list("health", flat=True)
            .first()
        )
        if previous is None:  # deleted meanwhile
            return False
        Deployment.objects.filter(pk=deployment.pk).update(
            health=health, health_checked_at=checked_at, health_detail=detail
        )
        changed = previous != health
        if changed:
            _after_commit_invalidate()
    deployment.health, deployment.health_checked_at, deployment.health_detail = health, checked_at, detail
    return changed


def _provider_target(deployment: Deployment) -> ProviderTarget:
    api_key = ""
    if deployment.secret_ref.startswith("env:"):
        api_key = os.environ.get(deployment.secret_ref[4:], "")
    return ProviderTarget(
        deployment_id=deployment.pk,
        name=deployment.name,
        base_url=deployment.base_url,
        served_model_name=deployment.served_model_name,
        api_key=api_key,
        max_concurrency=deployment.max_concurrency,
    )


def _outcome(result: HealthResult) -> tuple[str, str]:
    latency = f"{result.latency_ms:.0f} ms"
    if not result.ok:
        return HealthState.DOWN, f"{result.detail or 'unhealthy'} ({latency})"
    if result.latency_ms > DEGRADED_LATENCY_MS:
        return HealthState.DEGRADED, f"slow: {latency}"
    return HealthState.HEALTHY, latency


async def _probe_all(deployments: list[Deployment]) -> list[tuple[str, str]]:
    semaphore = asyncio.Semaphore(HEALTH_CONCURRENCY)
    providers: list[Any] = []

    async def probe(deployment: Deployment) -> tuple[str, str]:
        try:
            factory = get_provider_factory(deployment.provider)
        except KeyError:
            return HealthState.DOWN, f"provider {deployment.provider!r} is not installed"
        async with semaphore:
            try:
                provider = factory(_provider_target(deployment))
                providers.append(provider)
                result = await asyncio.wait_for(provider.health(), timeout=HEALTH_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - health() must not raise; a broken plugin is "down"
                return HealthState.DOWN, type(exc).__name__
        return _outcome(result)

    try:
        return list(await asyncio.gather(*(probe(d) for d in deployments)))
    finally:
        # Close only after every probe finished: deployments on one server share a pooled client.
        for provider in providers:
            with contextlib.suppress(Exception):
                await provider.aclose()


def deployment_health_check(*, deployments: Iterable[Deployment]) -> dict[int, str]:
    """Run each deployment's provider ``health()`` (concurrently) and record the outcomes.

    Synchronous (a view, a task); from a thread with a running event loop it
    probes on a fresh loop in a helper thread.
    Returns ``{deployment_id: health state}``.
    """
    targets = list(deployments)
    if not targets:
        return {}
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: a sync view or a Celery task
        outcomes = asyncio.run(_probe_all(targets))
    else:  # called from a thread that already runs a loop: probe on a fresh loop in another thread
        with ThreadPoolExecutor(max_workers=1) as pool:
            outcomes = pool.submit(asyncio.run, _probe_all(targets)).result()
    states: dict[int, str] = {}
    for deployment, (state, detail) in zip(targets, outcomes, strict=True):
        deployment_record_health(deployment=deployment, health=state, detail=detail)
        states[deployment.pk] = str(state)
    return states
