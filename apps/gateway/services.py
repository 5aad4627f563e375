"""Writes of API keys (audited) and the end-of-request bookkeeping of ``/v1``.

Every write that changes what a key may do bumps the ``gateway.api_keys``
version inside its transaction (:func:`apps.gateway.keys.invalidate`), so every
process stops honouring the old facts within ``check_seconds()`` (0.5 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.quotas.services import usage_record_create
from apps.registry.router import allowed_aliases
from apps.tenancy.models import Membership, Ministry, Role
from apps.tenancy.scope import ministry_scope

from . import keys
from .directory import CreatorDirectory
from .models import ApiKey, RevokeReason

MAX_KEYS_PER_MINISTRY = 200
_KEY_CREATE_LOCK = 0x676B_6579  # "gkey": pg_advisory_xact_lock(class, ministry id) of key creation


def max_lifetime() -> timedelta:
    """The longest lifetime a new key may have (``GENNAI_API_KEY_MAX_LIFETIME_DAYS``, default 90 days)."""
    return timedelta(days=int(getattr(settings, "GENNAI_API_KEY_MAX_LIFETIME_DAYS", 90)))


def _clean_aliases(*, ministry: Ministry, aliases: Sequence[str]) -> list[str]:
    """The requested aliases, each of which ``ministry`` is granted.

    Security: checked against the ministry's own grants only. An alias that
    exists but is not granted gets exactly the same answer as one that does not
    exist, so key creation is no oracle for other ministries' models.
    """
    names = sorted({a.strip() for a in aliases if a and a.strip()})
    if not names:
        return names
    with ministry_scope(ministry_id=ministry.pk):  # grants are read under the ministry's RLS
        granted = {alias.name for alias in allowed_aliases()}
    unknown = [n for n in names if n not in granted]
    if unknown:
        raise ValidationError(
            _("この府省庁で利用できないモデル名です: %(names)s") % {"names": ", ".join(unknown)}
        )
    return names


def _clean_workspaces(*, ministry: Ministry, workspace_ids: Sequence[int], max_level: int) -> list[int]:
    """The requested ``/v1/search`` workspace ids, each a shared workspace of ``ministry`` the key may read.

    Security: looked up under ``ministry``'s scope (ORM filter and RLS), so an id of
    another ministry's workspace is indistinguishable from a missing one and is
    refused, never stored. Personal workspaces (a key is not a person) and
    workspaces above the key's ``max_level`` are refused too: the search would
    never return them, and a key whose list silently matched nothing would look
    like a working key to the admin who made it.
    """
    from apps.documents.models import Workspace, WorkspaceKind

    ids = sorted({int(i) for i in workspace_ids})
    if not ids:
        return ids
    with ministry_scope(ministry_id=ministry.pk):
        levels = dict(
            Workspace.objects.filter(pk__in=ids, kind=WorkspaceKind.SHARED, deleting=False).values_list(
                "pk", "level"
            )
        )
    unknown = [i for i in ids if i not in levels]
    if unknown:
        raise ValidationError(
            _("この府省庁の共有ワークスペースではありません: %(ids)s") % {"ids": ", ".join(map(str, unknown))}
        )
    too_high = [i for i in ids if levels[i] > int(max_level)]
    if too_high:
        raise ValidationError(
            _("キーの機密性の上限を超えるワークスペースです: %(ids)s")
            % {"ids": ", ".join(map(str, too_high))}
        )
    return ids


def _clean_creator(*, actor: Any, ministry: Ministry) -> Any:
    """The key's creator: ``None`` for a platform operator (``actor=None``), else ``actor``.

    Security: a key lives only while its creator holds ``ministry_admin`` *from the
    IdP* in the key's ministry (:func:`apps.gateway.keys.check_key` refuses it
    otherwise), so only such a person may issue one. Checked here, where every
    caller passes, not only in the views: a staff member, an auditor, another
    ministry's admin, a deactivated account or an admin by local grant (the
    console shows them the page) is refused before anything is stored, instead
    of receiving a plaintext that is dead on arrival; and an actor that is not a
    saved user can no longer make a ``platform_issued`` key, which no creator check
    would ever revoke.
    """
    if actor is None:
        return None
    user_id = getattr(actor, "pk", None)
    is_sso_admin = (
        user_id is not None
        and Membership.objects.filter(
            user_id=user_id,
            ministry_id=ministry.pk,
            user__is_active=True,
            roles__contains=[Role.MINISTRY_ADMIN],
        ).exists()
    )
    if not is_sso_admin:
        raise ValidationError(
            _(
                "APIキーを発行できるのは、IdP（SSO）でこの府省庁の管理者の役割を持つ人だけです。"
                "ローカルで付与された役割では発行できません。"
            )
        )
    return actor


def _clean_expiry(expires_at: datetime | None) -> datetime:
    """Security: every key expires, in the future and within the maximum lifetime."""
    if expires_at is None:
        raise ValidationError(_("有効期限を指定してください。"))
    now = timezone.now()
    if expires_at <= now:
        raise ValidationError(_("有効期限は未来の日時を指定してください。"))
    if expires_at > now + max_lifetime():
        raise ValidationError(
            _("有効期限は作成から%(days)d日以内で指定してください。") % {"days": max_lifetime().days}
        )
    return expires_at


@transaction.atomic
def api_key_create(
    *,
    actor: Any,
    ministry: Ministry,
    name: str,
    expires_at: datetime | None,
    aliases: Sequence[str] = (),
    max_level: int = 1,
    workspace_ids: Sequence[int] = (),
) -> tuple[ApiKey, str]:
    """Create a key for ``ministry``; returns ``(key, plaintext)``. Show the plaintext once.

    ``expires_at`` is required (at most :func:`max_lifetime` ahead); ``aliases``
    narrows what the key may use (empty = all the ministry allows) and must all
    be granted to the ministry; ``max_level`` (1–3) caps the 機密性 its requests
    may declare; ``workspace_ids`` limits ``/v1/search`` to those shared
    workspaces of ``ministry`` (empty = not limited, see
    :attr:`ApiKey.allowed_workspace_ids`). ``actor=None`` means a platform operator at the command line:
    the key is ``platform_issued`` and has no ministry-admin creator to outlive; any other actor
    must hold ``ministry_admin`` from the IdP in ``ministry`` (:func:`_clean_creator`).
    """
    creator = _clean_creator(actor=actor, ministry=ministry)
    name = name.strip()
    if not name:
        raise ValidationError(_("名称を入力してください。"))
    if int(max_level) not in (1, 2, 3):
        raise ValidationError(_("機密性は1〜3で指定してください。"))
    expires_at = _clean_expiry(expires_at)
    # One creation per ministry at a time until the commit: two admins creating keys at once
    # both counted the live keys before either inserted, and together passed the cap.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_KEY_CREATE_LOCK, ministry.pk])
    if ApiKey.objects.filter(ministry=ministry, revoked_at__isnull=True).count() >= MAX_KEYS_PER_MINISTRY:
        raise ValidationError(_("有効なAPIキーが上限に達しています。"))
    alias_names = _clean_aliases(ministry=ministry, aliases=aliases)
    workspaces = _clean_workspaces(ministry=ministry, workspace_ids=workspace_ids, max_level=int(max_level))
    for _attempt in range(3):
        plaintext, prefix = keys.generate_key()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    ministry=ministry,
                    name=name[:100],
                    prefix=prefix,
                    key_hash=keys.hash_key(plaintext),
                    allowed_aliases=alias_names,
                    allowed_workspace_ids=workspaces,
                    max_level=int(max_level),
                    expires_at=expires_at,
                    created_by=creator,
                    platform_issued=creator is None,
                )
            break
        except IntegrityError:  # prefix collision (≈ 1 in 2**48): draw again
            continue
    else:  # pragma: no cover - three collisions in a row
        raise RuntimeError("could not allocate a unique API key prefix")
    audit_record(
        actor=actor,
        action="gateway.api_key.create",
        target_type="api_key",
        target_id=key.pk,
        ministry_id=ministry.pk,
        data={
            "name": key.name,
            "prefix": key.display_prefix,
            "aliases": alias_names,
            "workspace_ids": workspaces,
            "max_level": key.max_level,
            "expires_at": expires_at,
            "platform_issued": key.platform_issued,
        },
    )
    return key, plaintext


@transaction.atomic
def api_key_set_workspaces(*, actor: Any, key: ApiKey, workspace_ids: Sequence[int]) -> ApiKey:
    """Change the ``/v1/search`` workspaces of a live key (empty = every shared workspace); audited.

    Security: the same checks as at creation (:func:`_clean_workspaces`: shared
    workspaces of the key's own ministry, at most the key's ``max_level``); a
    revoked key is not edited. The caller looked the key up for the acting
    membership (another ministry's key is a 404 before this runs). The search
    reads the list from the database on every request, and the key cache is
    invalidated too (every process within ``check_seconds()``).
    """
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is not None:
        raise ValidationError(_("失効したキーは変更できません。"))
    ministry = Ministry.objects.get(pk=key.ministry_id)
    workspaces = _clean_workspaces(
        ministry=ministry, workspace_ids=workspace_ids, max_level=int(key.max_level)
    )
    before = sorted(key.allowed_workspace_ids)
    if workspaces != before:
        key.allowed_workspace_ids = workspaces
        key.save(update_fields=["allowed_workspace_ids"])
        audit_record(
            actor=actor,
            action="gateway.api_key.workspaces_change",
            target_type="api_key",
            target_id=key.pk,
            ministry_id=key.ministry_id,
            data={"name": key.name, "prefix": key.display_prefix, "before": before, "after": workspaces},
        )
        keys.invalidate()
    return key


@transaction.atomic
def api_key_revoke(*, actor: Any, key: ApiKey) -> ApiKey:
    """Revoke ``key``; every process stops accepting it within ``check_seconds()`` (0.5 s).

    Idempotent for the record (one audit event), but a retry invalidates every
    process's cache again: a revoke that was lost anywhere is repaired by retrying it.
    """
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.revoked_reason = RevokeReason.ADMIN
        key.save(update_fields=["revoked_at", "revoked_reason"])
        audit_record(
            actor=actor,
            action="gateway.api_key.revoke",
            target_type="api_key",
            target_id=key.pk,
            ministry_id=key.ministry_id,
            data={"name": key.name, "prefix": key.display_prefix},
        )
    keys.invalidate()
    return key


@transaction.atomic
def api_keys_revoke_for_lost_admin(*, user_id: int, ministry_id: int) -> list[ApiKey]:
    """Revoke the keys ``user_id`` created in ``ministry_id`` unless they are still its admin there.

    Called whenever a membership is saved or deleted (:mod:`apps.gateway.signals`),
    i.e. in the transaction that removes the role. Security: the creator has seen
    the plaintext, so a key must not outlive its creator's authority; it is
    revoked (not handed to another admin), audited with the reason, and every
    process forgets it within ``check_seconds()``. The key check also refuses a
    key whose creator is no longer admin (:func:`apps.gateway.keys.check_key`),
    so even a role change that bypassed this hook is bounded by ``max_age_seconds()``.
    """
    still_admin = Membership.objects.filter(
        user_id=user_id,
        ministry_id=ministry_id,
        user__is_active=True,
        roles__contains=[Role.MINISTRY_ADMIN],
    ).exists()
    if still_admin:
        return []
    return api_keys_revoke_for_creator(user_id=user_id, ministry_id=ministry_id)


@transaction.atomic
def api_keys_revoke_for_creator(
    *, user_id: int, ministry_id: int | None = None, source: str = "membership"
) -> list[ApiKey]:
    """Revoke every active key ``user_id`` created (in ``ministry_id``, or everywhere); audited.

    ``source`` says how we learned that the creator lost the role (``membership``:
    a membership change here; ``identity_provider``: the periodic re-check).
    """
    active = ApiKey.objects.select_for_update().filter(created_by_id=user_id, revoked_at__isnull=True)
    if ministry_id is not None:
        active = active.filter(ministry_id=ministry_id)
    revoked = list(active)
    if not revoked:
        return []
    now = timezone.now()
    for key in revoked:
        key.revoked_at = now
        key.revoked_reason = RevokeReason.CREATOR_NOT_ADMIN
        key.save(update_fields=["revoked_at", "revoked_reason"])
        audit_record(
            actor=None,
            action="gateway.api_key.revoke_creator_not_admin",
            target_type="api_key",
            target_id=key.pk,
            ministry_id=key.ministry_id,
            data={"name": key.name, "prefix": key.display_prefix, "creator_id": user_id, "source": source},
        )
    keys.invalidate()
    return revoked


def api_keys_recheck_creators(*, directory: CreatorDirectory) -> list[ApiKey]:
    """Revoke the active keys whose creator the identity provider no longer makes the ministry's admin.

    Security: closes the gap of a creator who is demoted or disabled in the IdP
    and never signs in again (so no membership change ever reaches us). One
    directory question per creator; an answer of ``None`` ("cannot tell")
    leaves that creator's keys alone. Platform-issued keys have no creator to ask.
    """
    now = timezone.now()
    rows = (
        ApiKey.objects.filter(
            revoked_at__isnull=True, platform_issued=False, expires_at__gt=now, created_by__isnull=False
        )
        .values_list("created_by_id", "created_by__subject", "ministry_id", "ministry__code")
        .distinct()
    )
    answers: dict[str, frozenset[str] | None] = {}
    revoked: list[ApiKey] = []
    for user_id, subject, ministry_id, code in rows:
        if not subject:
            continue
        if subject not in answers:
            answers[subject] = directory.admin_ministry_codes(subject)
        admin_in = answers[subject]
        if admin_in is not None and code not in admin_in:
            revoked += api_keys_revoke_for_creator(
                user_id=user_id, ministry_id=ministry_id, source="identity_provider"
            )
    return revoked


def ministry_keys_invalidate() -> None:
    """A ministry was activated or deactivated: every process re-reads key facts (in its transaction)."""
    keys.invalidate()


def request_finish(*, ministry_id: int, api_key_id: int | None, **usage: Any) -> None:
    """End-of-request bookkeeping: one usage row, and ``last_used_at`` at most once a minute.

    Runs in its own ministry scope (the request's scope is long gone when a stream ends).
    """
    with ministry_scope(ministry_id=ministry_id):
        usage_record_create(api_key_id=api_key_id, **usage)
        if api_key_id is not None and keys.touch_due(api_key_id):
            ApiKey.objects.filter(pk=api_key_id).update(last_used_at=timezone.now())
