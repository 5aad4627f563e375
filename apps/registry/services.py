"""Writes to the registry. Every change is audited and invalidates the routing snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

from . import approvals, egress
from .egress import EgressRefused, current_policy
from .models import (
    Alias,
    AliasGrant,
    AliasRevision,
    AliasRoute,
    ChangeKind,
    ChangeRequest,
    Deployment,
    DeploymentZone,
    HealthState,
    Model,
    ModelStatus,
    Vendor,
)
from .providers.base import HealthResult
from .providers.registry import get_provider_factory
from .router import provider_target
from .secrets import SecretRefError, parse_secret_ref
from .snapshot import bump_version

MAX_ROUTES = 10


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


def _hold_clearance_raise(
    *, actor: Any, current: int | None, fields: dict[str, Any], reason: str
) -> int | None:
    """Four-eyes: take a clearance raise out of ``fields`` and return it (or None if none is held).

    Security: a person raising a clearance to 機密性2/3 saves everything else,
    keeps the current clearance (a new entry gets 機密性1) and gets a pending
    :class:`ChangeRequest` instead; see :mod:`.approvals`.
    """
    if "clearance" not in fields or fields["clearance"] in (None, "") or not approvals.is_human(actor):
        return None
    new = int(fields["clearance"])
    if not approvals.clearance_raise_needs_approval(current=current, new=new):
        return None
    if not reason.strip():
        raise ValidationError(
            {"reason": _("機密性の引き上げには承認が必要です。承認者向けに変更理由を入力してください。")}
        )
    fields["clearance"] = current or 1
    return new


def _stored(model_class: Any, obj: Any, *names: str) -> dict[str, Any] | None:
    """The row's committed values, locked for this transaction (None for a new entry).

    Security: the four-eyes and zone rules compare against these, never against
    ``obj``'s attributes: a ModelForm has already written the submitted values
    onto the instance it edits, so ``obj.clearance`` may be the proposed value.
    """
    if obj is None or obj.pk is None:
        return None
    row: dict[str, Any] | None = (
        model_class.objects.select_for_update().filter(pk=obj.pk).values(*names).first()
    )
    return row


def apply_approved_save(*, actor: Any, obj: Model | Deployment, action: str, fields: dict[str, Any]) -> Any:
    """Apply an approved change (called by :mod:`.approvals` inside its transaction)."""
    return _save(obj, actor=actor, action=action, fields=fields)


@transaction.atomic
def model_save(*, actor: Any, model: Model | None = None, reason: str = "", **fields: Any) -> Model:
    """Create (``model=None``) or update a model entry.

    A raise of the clearance to 機密性2/3 by a person is not applied but proposed
    (four-eyes, :mod:`.approvals`); ``reason`` is then required.
    """
    stored = _stored(Model, model, "clearance")
    held = _hold_clearance_raise(
        actor=actor, current=int(stored["clearance"]) if stored else None, fields=fields, reason=reason
    )
    action = "registry.model.update" if model else "registry.model.create"
    obj: Model = _save(model or Model(), actor=actor, action=action, fields=fields)
    if held is not None:
        approvals.change_request_propose(
            actor=actor,
            kind=ChangeKind.MODEL_CLEARANCE,
            target=obj,
            payload={"from": int(obj.clearance), "to": held},
            reason=reason,
        )
    return obj


def validate_secret_ref(value: str) -> None:
    """A deployment names *where* its API key lives, never the key itself (service layer).

    Security: only ``env:GENNAI_UPSTREAM_<NAME>`` or ``file:<name>`` under the
    secrets directory (:mod:`.secrets`); anything else — another environment
    variable such as ``DATABASE_URL``, a path, a pasted key — is refused, so no
    platform credential can be reached and no key ends up in the database.
    """
    try:
        if value:
            parse_secret_ref(value)
    except SecretRefError as exc:
        raise ValidationError({"secret_ref": exc.message}, code=f"secret_ref_{exc.code}") from None


#: The deployment fields that decide where its requests go, and which model answers them.
DESTINATION_FIELDS = ("provider", "base_url", "served_model_name", "model_id")


def destination_of(deployment: Deployment) -> dict[str, Any]:
    """Where ``deployment`` sends requests (and its zone), as stored in a change request's payload.

    Security (four-eyes): an approver approves a clearance or an off-prem route for *this*
    destination; :mod:`.approvals` refuses the request as stale when it changed since.
    """
    return {
        "provider": deployment.provider,
        "base_url": deployment.base_url,
        "served_model_name": deployment.served_model_name,
        "model_id": deployment.model_id,
        "zone": deployment.zone,
    }


def _destination_changes(stored: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    """The form fields among ``fields`` that move the deployment to another host, server or model."""
    changed = [
        name
        for name in ("provider", "base_url", "served_model_name")
        if name in fields and fields[name] is not None and fields[name] != stored[name]
    ]
    model = fields.get("model", fields.get("model_id"))
    if model is not None and int(getattr(model, "pk", model)) != int(stored["model_id"]):
        changed.append("model")
    return changed


def _is_routed(deployment: Deployment) -> bool:
    """Does ``deployment`` carry traffic in some alias's current revision?"""
    return AliasRoute.objects.filter(
        deployment=deployment, weight__gt=0, revision__alias__current_revision=models.F("revision")
    ).exists()


def _refuse_mislabelled_onprem(*, stored: dict[str, Any] | None, fields: dict[str, Any], zone: str) -> None:
    """Security: a deployment is labelled on-prem only if its host is an on-prem host.

    Routing an alias to an on-prem deployment needs no second approval, so a
    self-declared label would let one person send traffic to an allowlisted
    external host without it. Checked when a deployment is created or its zone
    or URL changes (``GENNAI_UPSTREAM_ONPREM_HOSTS``, :func:`egress.onprem_policy`).
    """
    base_url = fields.get("base_url", stored["base_url"] if stored else "")
    if stored is not None and zone == stored["zone"] and base_url == stored["base_url"]:
        return
    try:
        current_policy().check_url(base_url)
    except EgressRefused:
        return  # not an allowed upstream at all: the URL validator refuses it, with its own message
    if zone == DeploymentZone.ON_PREM and base_url and not egress.onprem_policy().lists_url(base_url):
        raise ValidationError(
            {
                "zone": _(
                    "この接続先はオンプレミスの登録先（GENNAI_UPSTREAM_ONPREM_HOSTS）にありません。"
                    "ガバメントクラウドまたは外部APIを選んでください。"
                )
            }
        )


@transaction.atomic
def deployment_save(
    *, actor: Any, deployment: Deployment | None = None, reason: str = "", **fields: Any
) -> Deployment:
    """Create (``deployment=None``) or update a deployment.

    Security: the secret reference and the URL are validated here as well as in
    the form (the URL by the model's validator, against the egress allowlist);
    a person's clearance raise to 機密性2/3 is proposed, not applied; and a
    deployment that carries traffic cannot be moved out of the on-prem zone
    (that would route an alias off-prem without the approval routing needs).
    """
    validate_secret_ref(fields.get("secret_ref", "") or "")
    stored = _stored(Deployment, deployment, "clearance", "zone", *DESTINATION_FIELDS)
    zone = fields.get("zone", stored["zone"] if stored else DeploymentZone.ON_PREM)
    clearance = fields.get("clearance", stored["clearance"] if stored else None)
    if zone == DeploymentZone.EXTERNAL and clearance is not None and clearance != "" and int(clearance) > 1:
        # Checked before a raise is held back, so nobody is asked to approve the impossible.
        raise ValidationError(
            {"clearance": _("外部API・商用クラウドのデプロイメントは機密性1までしか扱えません。")}
        )
    _refuse_mislabelled_onprem(stored=stored, fields=fields, zone=zone)
    if (
        deployment is not None
        and stored is not None
        and zone != DeploymentZone.ON_PREM
        and stored["zone"] == DeploymentZone.ON_PREM
        and _is_routed(deployment)
    ):
        raise ValidationError(
            {
                "zone": _(
                    "経路で使われているデプロイメントはオンプレミス外へ移せません。"
                    "経路から外すか、新しいデプロイメントとして登録してください。"
                )
            }
        )
    if deployment is not None and stored is not None and approvals.is_human(actor):
        _refuse_unapproved_move(deployment, stored=stored, fields=fields, clearance=clearance)
    held = _hold_clearance_raise(
        actor=actor, current=int(stored["clearance"]) if stored else None, fields=fields, reason=reason
    )
    action = "registry.deployment.update" if deployment else "registry.deployment.create"
    obj: Deployment = _save(deployment or Deployment(), actor=actor, action=action, fields=fields)
    if held is not None:
        approvals.change_request_propose(
            actor=actor,
            kind=ChangeKind.DEPLOYMENT_CLEARANCE,
            target=obj,
            payload={"from": int(obj.clearance), "to": held, "destination": destination_of(obj)},
            reason=reason,
        )
    return obj


def _refuse_unapproved_move(
    deployment: Deployment, *, stored: dict[str, Any], fields: dict[str, Any], clearance: Any
) -> None:
    """Security (four-eyes): a person may not move an approved destination somewhere else.

    A clearance of 機密性2/3 and a live off-prem route were approved for the deployment's host,
    server and model. Changing ``base_url``, ``provider``, ``served_model_name`` or ``model`` would
    send that data elsewhere without a second person, so it is refused: for a deployment that
    keeps 機密性2/3 (lowering it to 1 in the same save is allowed, and raising it again is a
    change request), and for an off-prem deployment that carries traffic (register a new
    deployment: routing to it needs approval).
    """
    moved = _destination_changes(stored, fields)
    if not moved:
        return
    keeps = int(clearance) if clearance not in (None, "") else int(stored["clearance"])
    if int(stored["clearance"]) >= approvals.APPROVAL_LEVEL and keeps >= approvals.APPROVAL_LEVEL:
        raise ValidationError(
            {
                moved[0]: _(
                    "機密性2以上のデプロイメントの接続先（URL・プロバイダ・モデル）は変更できません。"
                    "機密性を1に下げて保存してから改めて引き上げを依頼するか、新しいデプロイメントとして登録してください。"
                )
            }
        )
    if stored["zone"] != DeploymentZone.ON_PREM and _is_routed(deployment):
        raise ValidationError(
            {
                moved[0]: _(
                    "経路で使われているオンプレミス外のデプロイメントの接続先（URL・プロバイダ・モデル）は変更できません。"
                    "新しいデプロイメントとして登録してください（経路への追加は承認後に反映されます）。"
                )
            }
        )


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
    for deployment, weight in routes:
        if deployment.model.kind != alias.kind:
            raise ValidationError(
                _("%(dep)s はこのエイリアスの種別（%(kind)s）と異なるモデルです。")
                % {"dep": deployment.name, "kind": alias.kind}
            )
        if weight > 0 and deployment.model.status == ModelStatus.RETIRED:
            raise ValidationError(
                _("%(dep)s のモデルは廃止されているため、経路に重みを付けられません。")
                % {"dep": deployment.name}
            )


def _offprem_gaining_traffic(alias: Alias, routes: Sequence[tuple[Deployment, int]]) -> list[Deployment]:
    """Deployments outside the on-prem zone that get traffic they do not have in the current revision."""
    current: dict[int, int] = {}
    if alias.current_revision is not None:
        current = dict(alias.current_revision.routes.values_list("deployment_id", "weight"))
    return [d for d, w in routes if w > 0 and d.zone != DeploymentZone.ON_PREM and current.get(d.pk, 0) <= 0]


def publish_routes(
    *,
    actor: Any,
    alias: Alias,
    routes: Sequence[tuple[Deployment, int]],
    reason: str,
    author: Any = None,
    rollback_of_id: int | None = None,
    change_request: int | None = None,
) -> AliasRevision:
    """Write the revision (alias row already locked by the caller); audited, snapshot bumped.

    ``author`` is who proposed the routes when ``actor`` approves them for someone else.
    """
    _validate_routes(alias, routes)
    author = author if author is not None else actor
    last = alias.revisions.order_by("-number").first()
    revision = AliasRevision.objects.create(
        alias=alias,
        number=(last.number + 1 if last else 1),
        created_by=author if getattr(author, "pk", None) else None,
        reason=reason.strip()[:500],
        rollback_of_id=rollback_of_id,
    )
    AliasRoute.objects.bulk_create([AliasRoute(revision=revision, deployment=d, weight=w) for d, w in routes])
    alias.current_revision = revision
    alias.save(update_fields=["current_revision"])
    data: dict[str, Any] = {
        "revision": revision.number,
        "routes": {d.name: w for d, w in routes},
        "reason": reason,
    }
    if change_request is not None:
        data["change_request"] = change_request
    audit_record(
        actor=actor,
        action="registry.alias.rollback" if rollback_of_id else "registry.alias.routes",
        target_type="alias",
        target_id=alias.pk,
        data=data,
    )
    _after_commit_invalidate()
    return revision


@transaction.atomic
def alias_set_routes(
    *,
    actor: Any,
    alias: Alias,
    routes: Sequence[tuple[Deployment, int]],
    reason: str,
    rollback_of: AliasRevision | None = None,
) -> AliasRevision | ChangeRequest:
    """Publish a new revision of ``alias`` (e.g. 90/10 canary, then 0/100 full).

    Takes effect in every process within the snapshot check interval, without a
    restart; in-flight streams finish on the deployment they started on.

    Security (four-eyes): when a person gives traffic to a deployment outside
    the on-prem zone that has none in the current revision, nothing is
    published; a pending :class:`ChangeRequest` is returned instead, to be
    approved by someone else (:mod:`.approvals`).
    """
    if not reason.strip():
        raise ValidationError(_("変更理由を入力してください。"))
    alias = Alias.objects.select_for_update().get(pk=alias.pk)
    _validate_routes(alias, routes)
    offprem = _offprem_gaining_traffic(alias, routes)
    if offprem and approvals.is_human(actor):
        return approvals.change_request_propose(
            actor=actor,
            kind=ChangeKind.ALIAS_ROUTES,
            target=alias,
            payload={
                "base_revision": alias.current_revision.number if alias.current_revision else 0,
                "routes": [[d.pk, w] for d, w in routes],
                "summary": ", ".join(f"{d.name} {w}" for d, w in routes),
                "offprem": [d.name for d in offprem],
                "destinations": {str(d.pk): destination_of(d) for d in offprem},
                "rollback_of": rollback_of.pk if rollback_of else None,
            },
            reason=reason,
        )
    return publish_routes(
        actor=actor,
        alias=alias,
        routes=routes,
        reason=reason,
        rollback_of_id=rollback_of.pk if rollback_of else None,
    )


@transaction.atomic
def alias_rollback(*, actor: Any, alias: Alias, reason: str = "") -> AliasRevision | ChangeRequest:
    """One-step rollback: republish the routes of the revision before the current one.

    Goes through the same four-eyes rule as any route change (a rollback that
    brings back an off-prem route needs approval).
    """
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


def _refusal(deployment: Deployment) -> str:
    """Why the probe must not even start (egress or secret reference refused), or "".

    Security: checked before a provider is built, so a deployment row that
    bypassed the service (written before these rules, or in the database) makes
    the Celery probe neither connect nor resolve a key. The provider and its
    transport check again (connect time, resolved address).
    """
    try:
        current_policy().check_url(deployment.base_url)
    except EgressRefused as exc:
        return f"upstream host refused ({exc.code})"
    try:
        if deployment.secret_ref:
            parse_secret_ref(deployment.secret_ref)
    except SecretRefError as exc:
        return f"secret reference refused ({exc.code})"
    return ""


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
        refused = _refusal(deployment)
        if refused:
            return HealthState.DOWN, refused
        try:
            factory = get_provider_factory(deployment.provider)
        except KeyError:
            return HealthState.DOWN, f"provider {deployment.provider!r} is not installed"
        async with semaphore:
            try:
                provider = factory(provider_target(deployment))
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


@transaction.atomic
def local_server_register(
    *,
    vendor: dict[str, Any],
    model: dict[str, Any],
    deployment_name: str,
    base_url: str,
    served_model_name: str,
    max_concurrency: int,
    alias: dict[str, Any],
    reason: str,
) -> tuple[Alias, Deployment]:
    """Register a local OpenAI-compatible server behind an alias, idempotently (used by `make run`).

    Vendor, model and alias are created when missing (matched by name); the
    deployment is created, or its URL and served name updated; an alias that has
    no routes yet gets one route to it; every active ministry is granted the
    alias. A system action (``actor=None``), audited as such by the services.
    """
    found_vendor = Vendor.objects.filter(name=vendor["name"]).first() or vendor_save(actor=None, **vendor)
    found_model = Model.objects.filter(name=model["name"]).first() or model_save(
        actor=None, vendor=found_vendor, clearance=2, status="active", **model
    )
    deployment = Deployment.objects.filter(name=deployment_name).first()
    fields: dict[str, Any] = {"base_url": base_url, "served_model_name": served_model_name}
    if deployment is None:
        deployment = deployment_save(
            actor=None,
            model=found_model,
            name=deployment_name,
            provider="openai_compatible",
            clearance=2,
            max_concurrency=max_concurrency,
            **fields,
        )
    elif any(getattr(deployment, k) != v for k, v in fields.items()):
        deployment = deployment_save(actor=None, deployment=deployment, **fields)
    found_alias = Alias.objects.filter(name=alias["name"]).first() or alias_create(actor=None, **alias)
    if found_alias.current_revision is None:
        alias_set_routes(actor=None, alias=found_alias, routes=[(deployment, 100)], reason=reason)
    for ministry in Ministry.objects.filter(active=True):
        alias_grant(actor=None, ministry=ministry, alias=found_alias)
    return found_alias, deployment
