"""Writes to the registry. Every change is audited and invalidates the routing snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

from .models import Alias, AliasGrant, AliasRevision, AliasRoute, Deployment, Model, Vendor
from .snapshot import bump_version

MAX_ROUTES = 10


def _after_commit_invalidate() -> None:
    transaction.on_commit(bump_version)


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


@transaction.atomic
def deployment_save(*, actor: Any, deployment: Deployment | None = None, **fields: Any) -> Deployment:
    """Create (``deployment=None``) or update a deployment."""
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
        _after_commit_invalidate()
    return bool(deleted)
