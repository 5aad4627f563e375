"""Writing and verifying the audit chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEvent

GENESIS = "0" * 64
_LOCK_KEY = 0x6A75_6469  # pg_advisory_xact_lock key serialising chain appends


def _digest(prev_hash: str, payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _payload(event: AuditEvent) -> dict[str, Any]:
    return {
        # UTC ISO 8601 with microseconds: the same text before saving and after reading back.
        "created_at": event.created_at.astimezone(UTC).isoformat(),
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "ministry_id": event.ministry_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "data": event.data,
    }


@transaction.atomic
def audit_record(
    *,
    actor: Any,
    action: str,
    target_type: str,
    target_id: str | int = "",
    ministry_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain (serialised by a transaction-level advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    event = AuditEvent(
        created_at=timezone.now(),
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=str(getattr(actor, "username", "") or "system")[:150],
        ministry_id=ministry_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        data=json.loads(json.dumps(data or {}, default=str)),
        prev_hash=last or GENESIS,
    )
    event.hash = _digest(event.prev_hash, _payload(event))
    event.save()
    return event


@dataclass(frozen=True)
class ChainReport:
    """Result of walking the audit chain."""

    intact: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def audit_verify() -> ChainReport:
    """Walk the whole chain in id order and report the first event that does not fit.

    Security: an event whose stored ``hash`` is not the digest of its own content
    was edited; an event whose ``prev_hash`` is not the previous event's hash sits
    after a deleted, inserted or reordered event. Either way the chain stops
    proving anything from there on, so the walk stops at the first bad event.
    """
    prev = GENESIS
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator():
        if event.prev_hash != prev:
            return ChainReport(
                False,
                checked,
                event.pk,
                "prev_hash does not match the previous event (removed or reordered?)",
            )
        if event.hash != _digest(prev, _payload(event)):
            return ChainReport(False, checked, event.pk, "content does not match its hash (edited?)")
        prev = event.hash
        checked += 1
    return ChainReport(True, checked)


def audit_verify_chain() -> tuple[bool, int | None]:
    """Walk the chain; return (intact, id of the first bad event or None)."""
    report = audit_verify()
    return report.intact, report.first_bad_id


CROSS_MINISTRY_AUDIT_READ = "audit.cross_ministry_read"
CROSS_MINISTRY_USAGE_READ = "usage.cross_ministry_read"
AUDIT_EXPORT = "audit.export"


def audit_cross_ministry_read(
    *, actor: Any, action: str, own_ministry_id: int | None, ministry_id: int | None, data: dict[str, Any]
) -> AuditEvent:
    """Record that a platform role read another ministry's data (or every ministry's).

    Security: every cross-ministry read is itself on the chain (DESIGN §1). The
    event belongs to the ministry that was read (``None``: all of them), so that
    ministry's own admins and auditors see who looked at their trail.
    """
    return audit_record(
        actor=actor,
        action=action,
        target_type="ministry",
        target_id=ministry_id if ministry_id is not None else "*",
        ministry_id=ministry_id,
        data={"reader_ministry_id": own_ministry_id, **data},
    )


def audit_export_record(
    *, actor: Any, ministry_id: int, start: Any, end: Any, via: str, filters: dict[str, Any] | None = None
) -> AuditEvent:
    """Record an export of ``ministry_id``'s audit trail (``via``: ``console`` or ``command``)."""
    return audit_record(
        actor=actor,
        action=AUDIT_EXPORT,
        target_type="ministry",
        target_id=ministry_id,
        ministry_id=ministry_id,
        data={"start": start, "end": end, "via": via, **(filters or {})},
    )
