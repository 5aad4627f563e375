"""Writes of the use-case builder: create/edit/share/propose apps, favourites, import/export.

Every human change is audited (:func:`apps.audit.services.audit_record`). Definitions are
validated by :func:`apps.aiapps.definition.clean_definition` whether they come from the form or
from an imported file; ids in a file are never used.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.documents.selectors import get_workspace_for_actor
from apps.tenancy.models import Membership, Role
from apps.tenancy.scope import current_ministry_id, ministry_scope

from .definition import DEFINITION_KEYS, clean_definition
from .models import AppFavourite, CatalogueStatus, MinistryApp, PlatformApp, Proposal, Visibility
from .selectors import get_app_for_actor, get_ministry_app_for_actor

EXPORT_FORMAT = "gennai.aiapp/1"


def _workspace_id(*, actor: Any, workspace_id: Any) -> int | None:
    """Security: an attached workspace must be one the actor is a member of (404 otherwise)."""
    if workspace_id in (None, "", 0, "0"):
        return None
    try:
        wanted = int(workspace_id)
    except (TypeError, ValueError) as exc:
        raise ValidationError(_("ワークスペースが正しくありません。")) from exc
    return get_workspace_for_actor(actor=actor, workspace_id=wanted).pk


def app_create(*, actor: Any, data: dict[str, Any], workspace_id: Any = None) -> MinistryApp:
    """A new private app of the actor in the active ministry."""
    cleaned = clean_definition(data)
    with transaction.atomic():
        app: MinistryApp = MinistryApp.objects.create(
            owner=actor, workspace_id=_workspace_id(actor=actor, workspace_id=workspace_id), **cleaned
        )
        audit_record(actor=actor, action="aiapp.create", target_type="aiapps.MinistryApp", target_id=app.pk)
    return app


def app_update(*, actor: Any, app_id: int, data: dict[str, Any], workspace_id: Any = None) -> MinistryApp:
    """Edit one of the actor's own apps (404 for anyone else's)."""
    cleaned = clean_definition(data)
    with transaction.atomic():
        app = get_ministry_app_for_actor(actor=actor, app_id=app_id, editable=True)
        for key, value in cleaned.items():
            setattr(app, key, value)
        app.workspace_id = _workspace_id(actor=actor, workspace_id=workspace_id)
        app.save()
        audit_record(actor=actor, action="aiapp.update", target_type="aiapps.MinistryApp", target_id=app.pk)
    return app


def app_set_visibility(*, actor: Any, app_id: int, visibility: str) -> MinistryApp:
    """Share an app with the ministry, or make it private again (owner only)."""
    if visibility not in Visibility.values:
        raise ValidationError(_("公開範囲が正しくありません。"))
    with transaction.atomic():
        app = get_ministry_app_for_actor(actor=actor, app_id=app_id, editable=True)
        app.visibility = visibility
        app.save(update_fields=["visibility", "updated_at"])
        audit_record(
            actor=actor,
            action="aiapp.visibility",
            target_type="aiapps.MinistryApp",
            target_id=app.pk,
            data={"visibility": visibility},
        )
    return app


def app_delete(*, actor: Any, app_id: int) -> None:
    with transaction.atomic():
        app = get_ministry_app_for_actor(actor=actor, app_id=app_id, editable=True)
        audit_record(actor=actor, action="aiapp.delete", target_type="aiapps.MinistryApp", target_id=app.pk)
        app.delete()


def app_propose(*, actor: Any, app_id: int) -> PlatformApp:
    """Propose one of the actor's apps for the platform catalogue.

    The definition is copied now into a ``proposed`` :class:`PlatformApp` (what the platform
    admin reviews is exactly what was proposed). The attached workspace is not copied: it
    belongs to the ministry, and a catalogue app lets each user pick their own.
    """
    with transaction.atomic():
        app = get_ministry_app_for_actor(actor=actor, app_id=app_id, editable=True)
        if PlatformApp.objects.filter(
            source_app_id=app.pk, source_ministry_id=app.ministry_id, status=CatalogueStatus.PROPOSED
        ).exists():
            raise ValidationError(_("このアプリは既に提案済みです。"))
        proposal = PlatformApp.objects.create(
            key=f"m{app.ministry_id}-{app.pk}-{uuid.uuid4().hex[:8]}",
            status=CatalogueStatus.PROPOSED,
            source_app_id=app.pk,
            source_ministry_id=app.ministry_id,
            proposed_by=actor,
            position=1000,
            kind=app.kind,
            **{k: getattr(app, k) for k in DEFINITION_KEYS},
        )
        app.proposal = Proposal.PROPOSED
        app.save(update_fields=["proposal", "updated_at"])
        audit_record(
            actor=actor,
            action="aiapp.propose",
            target_type="aiapps.MinistryApp",
            target_id=app.pk,
            data={"platform_app_id": proposal.pk},
        )
    return proposal


def _require_platform_admin(actor: Any) -> None:
    """Security: platform roles come from realm roles, copied into every membership of the user."""
    if getattr(actor, "pk", None) is None or not getattr(actor, "is_active", False):
        raise PermissionDenied(_("プラットフォーム管理者の権限が必要です。"))
    if not Membership.objects.filter(
        user_id=actor.pk, ministry__active=True, roles__contains=[Role.PLATFORM_ADMIN]
    ).exists():
        raise PermissionDenied(_("プラットフォーム管理者の権限が必要です。"))


def proposal_decide(*, actor: Any, platform_app_id: int, approve: bool) -> PlatformApp:
    """A platform admin approves (publishes in the catalogue) or rejects a proposal; audited.

    The decision is written back to the proposing ministry's app (``MinistryApp.proposal``), so
    its owner sees 掲載済み / 見送り on the app's page. Security: that one status column is the only
    write into the ministry's rows, made inside *that* ministry's scope (ORM filter and RLS) and
    only to the app the proposal was copied from, while it is still marked as proposed.
    """
    _require_platform_admin(actor)
    with transaction.atomic():
        app = (
            PlatformApp.objects.select_for_update()
            .filter(pk=platform_app_id, status=CatalogueStatus.PROPOSED)
            .first()
        )
        if app is None:
            raise ValidationError(_("審査待ちの提案が見つかりません。"))
        app.status = CatalogueStatus.APPROVED if approve else CatalogueStatus.REJECTED
        app.approved_by = actor if approve else None
        app.save(update_fields=["status", "approved_by", "updated_at"])
        if app.source_ministry_id and app.source_app_id:
            with ministry_scope(ministry_id=int(app.source_ministry_id)):
                MinistryApp.objects.filter(pk=app.source_app_id, proposal=Proposal.PROPOSED).update(
                    proposal=Proposal.APPROVED if approve else Proposal.REJECTED
                )
        audit_record(
            actor=actor,
            action="aiapp.catalogue_approve" if approve else "aiapp.catalogue_reject",
            target_type="aiapps.PlatformApp",
            target_id=app.pk,
            data={"source_ministry_id": app.source_ministry_id, "source_app_id": app.source_app_id},
        )
    return app


def favourite_toggle(*, actor: Any, ref: str) -> bool:
    """Star or unstar an app the actor can see; returns whether it is a favourite now."""
    app = get_app_for_actor(actor=actor, ref=ref)
    field = "platform_app" if isinstance(app, PlatformApp) else "ministry_app"
    with transaction.atomic():
        deleted, _rows = AppFavourite.objects.filter(user_id=actor.pk, **{field: app}).delete()
        if deleted:
            return False
        AppFavourite.objects.create(user=actor, **{field: app})
    return True


# --- JSON import / export -------------------------------------------------------------


def app_export(*, app: PlatformApp | MinistryApp) -> dict[str, Any]:
    """The portable definition (no ids, owner, ministry or workspace)."""
    data = {"format": EXPORT_FORMAT, "kind": app.kind}
    data.update({k: getattr(app, k) for k in DEFINITION_KEYS})
    return data


def app_import(*, actor: Any, raw: bytes | str) -> MinistryApp:
    """A new private app of the actor from an exported file, validated like the builder form.

    Security: only the definition keys are read; ids, owners, visibility or a workspace in the
    file are ignored (the new app is private, owned by the actor, in the actor's ministry).
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(_("JSONファイルを読み込めませんでした。")) from exc
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ValidationError(
            _("源内のアプリ定義ファイル（%(format)s）ではありません。") % {"format": EXPORT_FORMAT}
        )
    kind = data.get("kind", "prompt")
    if kind not in ("prompt", "kobun", "grounded"):
        raise ValidationError(_("アプリの種類が正しくありません。"))
    cleaned = clean_definition({k: data.get(k) for k in DEFINITION_KEYS}, kind=kind)
    if current_ministry_id() is None:
        raise PermissionDenied("import runs inside the actor's ministry scope")
    with transaction.atomic():
        app: MinistryApp = MinistryApp.objects.create(owner=actor, kind=kind, **cleaned)
        audit_record(actor=actor, action="aiapp.import", target_type="aiapps.MinistryApp", target_id=app.pk)
    return app
