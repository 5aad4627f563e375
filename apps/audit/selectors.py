"""Reads of the audit log: who may read which ministry's events, filters, JSONL lines.

The audit log is platform data (``AuditEvent`` is not a ``TenantModel``: one chain
for all ministries, so deleting or reordering anything anywhere is detectable).
Its ministry boundary is therefore drawn here, in the selectors, from the
caller's membership and never from request parameters: ministry admins and
ministry auditors read exactly their own ministry; only the platform-wide roles
(``auditor``, ``platform_admin``) may read other ministries, and those reads are
themselves audited by the caller (:func:`apps.audit.services.audit_cross_ministry_read`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from apps.tenancy.models import Membership, Role

from .models import AuditEvent

#: Roles that read their own ministry's audit trail.
MINISTRY_READERS = (Role.MINISTRY_ADMIN.value, Role.MINISTRY_AUDITOR.value)
#: Platform-wide roles that read every ministry's trail (each such read is audited).
PLATFORM_READERS = (Role.AUDITOR.value, Role.PLATFORM_ADMIN.value)


@dataclass(frozen=True)
class AuditScope:
    """What a membership may read: its own ministry, or every ministry (``platform``)."""

    own_ministry_id: int
    platform: bool


def audit_scope_for(*, membership: Membership | None) -> AuditScope | None:
    """The caller's audit scope, or ``None`` if they may not read the audit log at all.

    Security: a platform role wins over a ministry role (it reads more, and every
    read outside the own ministry is audited); staff and procurement officers get
    ``None``.
    """
    if membership is None:
        return None
    if any(membership.has_role(r) for r in PLATFORM_READERS):
        return AuditScope(own_ministry_id=membership.ministry_id, platform=True)
    if any(membership.has_role(r) for r in MINISTRY_READERS):
        return AuditScope(own_ministry_id=membership.ministry_id, platform=False)
    return None


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit browser and exports. ``end`` is inclusive (a whole day)."""

    action: str = ""  # prefix: "gateway." matches every gateway event
    actor: str = ""  # part of the actor's user name
    start: date | None = None
    end: date | None = None


def period_bounds(*, start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """``[start 00:00, end+1 00:00)`` in the platform's time zone (Asia/Tokyo)."""
    tz = timezone.get_default_timezone()
    lower = datetime.combine(start, time.min, tzinfo=tz) if start else None
    upper = datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz) if end else None
    return lower, upper


def _filtered(qs: QuerySet[AuditEvent], filters: AuditFilter) -> QuerySet[AuditEvent]:
    if filters.action:
        qs = qs.filter(action__startswith=filters.action)
    if filters.actor:
        qs = qs.filter(actor_label__icontains=filters.actor)
    lower, upper = period_bounds(start=filters.start, end=filters.end)
    if lower is not None:
        qs = qs.filter(created_at__gte=lower)
    if upper is not None:
        qs = qs.filter(created_at__lt=upper)
    return qs


def audit_event_list(
    *, scope: AuditScope, filters: AuditFilter, ministry_id: int | None = None
) -> QuerySet[AuditEvent]:
    """The events ``scope`` may read, newest first.

    Security: a ministry-scoped caller gets its own ministry whatever
    ``ministry_id`` says (the parameter is honoured only for platform roles).
    A platform reader without ``ministry_id`` reads everything, including
    platform-level events (no ministry: registry changes, unscoped access).
    """
    qs = AuditEvent.objects.select_related("ministry")
    if not scope.platform:
        qs = qs.filter(ministry_id=scope.own_ministry_id)
    elif ministry_id is not None:
        qs = qs.filter(ministry_id=ministry_id)
    return _filtered(qs, filters).order_by("-id")


def audit_reads_outside_own_ministry(*, scope: AuditScope, ministry_id: int | None) -> bool:
    """Whether this read shows events of a ministry other than the caller's own."""
    return scope.platform and ministry_id != scope.own_ministry_id


def audit_event_export(*, ministry_id: int, filters: AuditFilter) -> QuerySet[AuditEvent]:
    """One ministry's events for an export, oldest first (the chain's order)."""
    qs = AuditEvent.objects.select_related("ministry").filter(ministry_id=ministry_id)
    return _filtered(qs, filters).order_by("id")


def audit_action_names(*, scope: AuditScope) -> list[str]:
    """Distinct action names the caller can filter on (its own ministry's, or all)."""
    qs = (
        AuditEvent.objects.all()
        if scope.platform
        else AuditEvent.objects.filter(ministry_id=scope.own_ministry_id)
    )
    return list(qs.order_by("action").values_list("action", flat=True).distinct()[:500])


def audit_event_as_dict(event: AuditEvent) -> dict[str, Any]:
    """The exported form of one event: everything that is hashed, plus both hashes.

    With ``prev_hash`` and ``hash`` a reader can check each line's own digest
    (sha256 of ``prev_hash`` + the canonical JSON, see docs/admin.md); the links between lines are
    checked by ``manage.py audit_verify`` on the whole chain, because a
    per-ministry export leaves out the other ministries' events in between.
    """
    return {
        "id": event.pk,
        "created_at": event.created_at.isoformat(),
        "ministry": event.ministry.code if event.ministry is not None else None,
        "ministry_id": event.ministry_id,
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "data": event.data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def audit_jsonl_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """JSON Lines, one event per line (UTF-8, Japanese kept as is)."""
    for event in events:
        yield json.dumps(audit_event_as_dict(event), ensure_ascii=False, sort_keys=True, default=str) + "\n"
