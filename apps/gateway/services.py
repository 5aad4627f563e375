"""Writes of API keys (audited) and the end-of-request bookkeeping of ``/v1``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.quotas.services import usage_record_create
from apps.registry.snapshot import get_snapshot
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

from . import keys
from .models import ApiKey

MAX_KEYS_PER_MINISTRY = 200


def _clean_aliases(aliases: Sequence[str]) -> list[str]:
    names = sorted({a.strip() for a in aliases if a and a.strip()})
    unknown = [n for n in names if n not in get_snapshot().aliases]
    if unknown:
        raise ValidationError(_("存在しないモデル名です: %(names)s") % {"names": ", ".join(unknown)})
    return names


@transaction.atomic
def api_key_create(
    *,
    actor: Any,
    ministry: Ministry,
    name: str,
    aliases: Sequence[str] = (),
    max_level: int = 1,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for ``ministry``; returns ``(key, plaintext)``. Show the plaintext once.

    ``aliases`` narrows what the key may use (empty = all the ministry allows);
    ``max_level`` (1–3) caps the 機密性 its requests may declare.
    """
    name = name.strip()
    if not name:
        raise ValidationError(_("名称を入力してください。"))
    if int(max_level) not in (1, 2, 3):
        raise ValidationError(_("機密性は1〜3で指定してください。"))
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError(_("有効期限は未来の日時を指定してください。"))
    if ApiKey.objects.filter(ministry=ministry, revoked_at__isnull=True).count() >= MAX_KEYS_PER_MINISTRY:
        raise ValidationError(_("有効なAPIキーが上限に達しています。"))
    alias_names = _clean_aliases(aliases)
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
                    max_level=int(max_level),
                    expires_at=expires_at,
                    created_by=actor if getattr(actor, "pk", None) else None,
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
            "max_level": key.max_level,
            "expires_at": expires_at,
        },
    )
    return key, plaintext


@transaction.atomic
def api_key_revoke(*, actor: Any, key: ApiKey) -> ApiKey:
    """Revoke ``key`` (idempotent); every process stops accepting it within about a second."""
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        action="gateway.api_key.revoke",
        target_type="api_key",
        target_id=key.pk,
        ministry_id=key.ministry_id,
        data={"name": key.name, "prefix": key.display_prefix},
    )
    transaction.on_commit(keys.invalidate)
    return key


def request_finish(*, ministry_id: int, api_key_id: int | None, **usage: Any) -> None:
    """End-of-request bookkeeping: one usage row, and ``last_used_at`` at most once a minute.

    Runs in its own ministry scope (the request's scope is long gone when a stream ends).
    """
    with ministry_scope(ministry_id=ministry_id):
        usage_record_create(api_key_id=api_key_id, **usage)
        if api_key_id is not None and keys.touch_due(api_key_id):
            ApiKey.objects.filter(pk=api_key_id).update(last_used_at=timezone.now())
