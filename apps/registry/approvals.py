"""Four-eyes approval of the registry changes that widen what data may go where.

Writes of the approval flow (reads are in :mod:`.selectors`). Which changes
need a second person (decided in :mod:`.services` when a human proposes them):

* raising a model's or a deployment's clearance to 機密性2 or 3, above its
  current value (a new entry counts as coming from 機密性1);
* routing an alias to a deployment outside the on-prem zone that had no traffic
  in the current revision (a new route, or a weight raised from 0).

Such a change is not applied: a :class:`ChangeRequest` is created. Another
procurement officer or platform admin — never the proposer, and never a role
without registry edit rights — approves it, and the change is applied in the
same transaction; or anyone with edit rights rejects it (the proposer too:
that is a withdrawal). Proposal, approval and rejection are audited in the
hash-chained log. System actors (``actor=None``: management commands and
migrations, run by operators who already hold the platform's credentials) apply
directly and are audited as ``system``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record

from . import services
from .models import Alias, ChangeKind, ChangeRequest, ChangeStatus, Deployment, Model
from .permissions import access_for_user

#: A clearance at or above this level may only be raised with a second person's approval.
APPROVAL_LEVEL = 2


def is_human(actor: Any) -> bool:
    """A signed-in person (as opposed to ``actor=None``, the system)."""
    return getattr(actor, "pk", None) is not None


def clearance_raise_needs_approval(*, current: int | None, new: int) -> bool:
    """Raising to 機密性2/3 above the current value (``current=None``: a new entry, counted as 1)."""
    return new >= APPROVAL_LEVEL and new > (current or 1)


def _target_fields(target: Model | Deployment | Alias) -> dict[str, Any]:
    if isinstance(target, Model):
        return {"model": target}
    if isinstance(target, Deployment):
        return {"deployment": target}
    return {"alias": target}


def _audit(*, actor: Any, action: str, request: ChangeRequest, **extra: Any) -> None:
    target = request.target
    audit_record(
        actor=actor,
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=target.pk,
        data={"change_request": request.pk, "kind": request.kind, "payload": request.payload, **extra},
    )


def change_request_propose(
    *, actor: Any, kind: str, target: Model | Deployment | Alias, payload: dict[str, Any], reason: str
) -> ChangeRequest:
    """Record a proposal (must run inside the caller's transaction); audited."""
    if not reason.strip():
        raise ValidationError(
            {"reason": _("承認が必要な変更です。承認者が判断できるよう、変更理由を入力してください。")}
        )
    request = ChangeRequest(
        kind=kind, payload=payload, reason=reason.strip()[:500], proposed_by=actor, **_target_fields(target)
    )
    try:
        with transaction.atomic():  # a savepoint: the duplicate check must not poison the caller
            request.save()
    except IntegrityError:
        raise ValidationError(
            _("この対象には承認待ちの変更依頼がすでにあります。先にその依頼を承認または却下してください。")
        ) from None
    _audit(actor=actor, action="registry.change.propose", request=request, reason=request.reason)
    return request


def _check_decider(*, actor: Any, request: ChangeRequest, approving: bool) -> None:
    """Security: only registry editors decide; the proposer can never approve their own request."""
    if not access_for_user(actor).can_edit:
        raise PermissionDenied(_("変更依頼を承認・却下できるのは調達担当またはプラットフォーム管理者です。"))
    if approving and request.proposed_by_id == getattr(actor, "pk", None):
        raise PermissionDenied(_("自分が提案した変更依頼は承認できません。別の担当者の承認が必要です。"))


def _locked_pending(request: ChangeRequest) -> ChangeRequest:
    locked = ChangeRequest.objects.select_for_update().get(pk=request.pk)
    if locked.status != ChangeStatus.PENDING:
        raise ValidationError(_("この変更依頼はすでに処理されています。"))
    return locked


def _stale() -> ValidationError:
    return ValidationError(
        _(
            "提案後に対象が変更されたため、この依頼はそのまま適用できません。却下して、改めて提案してください。"
        )
    )


def _required(target_id: int | None) -> int:
    assert target_id is not None  # the one-target constraint guarantees it for the request's kind
    return target_id


def _apply(request: ChangeRequest, *, approver: Any) -> None:
    payload = request.payload
    if request.kind == ChangeKind.MODEL_CLEARANCE:
        model = Model.objects.select_for_update().get(pk=_required(request.model_id))
        if int(model.clearance) != int(payload["from"]):
            raise _stale()
        services.apply_approved_save(
            actor=approver, obj=model, action="registry.model.update", fields={"clearance": payload["to"]}
        )
    elif request.kind == ChangeKind.DEPLOYMENT_CLEARANCE:
        deployment = Deployment.objects.select_for_update().get(pk=_required(request.deployment_id))
        if int(deployment.clearance) != int(payload["from"]):
            raise _stale()
        # Security: the raise was approved for the host, server and model shown when proposed.
        if "destination" in payload and services.destination_of(deployment) != payload["destination"]:
            raise _stale()
        services.apply_approved_save(
            actor=approver,
            obj=deployment,
            action="registry.deployment.update",
            fields={"clearance": payload["to"]},
        )
    elif request.kind == ChangeKind.ALIAS_ROUTES:
        alias = Alias.objects.select_for_update().get(pk=_required(request.alias_id))
        current = alias.current_revision.number if alias.current_revision else 0
        if current != int(payload["base_revision"]):
            raise _stale()
        deployments = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("model")
            .in_bulk([int(d) for d, _w in payload["routes"]])
        )
        # Security: each off-prem deployment must still point where it did when proposed.
        for pk, destination in (payload.get("destinations") or {}).items():
            found = deployments.get(int(pk))
            if found is None or services.destination_of(found) != destination:
                raise _stale()
        routes = [(deployments[int(d)], int(w)) for d, w in payload["routes"]]
        services.publish_routes(
            actor=approver,
            author=request.proposed_by,
            alias=alias,
            routes=routes,
            reason=request.reason,
            rollback_of_id=payload.get("rollback_of"),
            change_request=request.pk,
        )
    else:  # pragma: no cover - the choices are closed
        raise ValidationError(f"unknown change kind {request.kind!r}")


@transaction.atomic
def change_request_approve(*, actor: Any, change_request: ChangeRequest, note: str = "") -> ChangeRequest:
    """Approve and apply in one transaction (four-eyes); audited.

    Security: the approver must hold registry edit rights and must not be the
    proposer (also a database constraint). A request whose target changed since
    it was proposed (its clearance, the alias's revision, or where a deployment
    sends requests: host, provider, served model, model, zone) is refused, so
    nobody approves something other than what they saw.
    """
    _check_decider(actor=actor, request=change_request, approving=True)
    request = _locked_pending(change_request)
    _apply(request, approver=actor)
    request.status = ChangeStatus.APPLIED
    request.decided_by = actor
    request.decided_at = timezone.now()
    request.decision_note = note.strip()[:500]
    request.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
    _audit(actor=actor, action="registry.change.approve", request=request, note=request.decision_note)
    return request


@transaction.atomic
def change_request_reject(*, actor: Any, change_request: ChangeRequest, note: str = "") -> ChangeRequest:
    """Reject (or, by the proposer, withdraw) a pending request; nothing is applied. Audited."""
    _check_decider(actor=actor, request=change_request, approving=False)
    request = _locked_pending(change_request)
    request.status = ChangeStatus.REJECTED
    request.decided_by = actor
    request.decided_at = timezone.now()
    request.decision_note = note.strip()[:500]
    request.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
    _audit(actor=actor, action="registry.change.reject", request=request, note=request.decision_note)
    return request
