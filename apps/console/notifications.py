"""Reads and writes of in-app notifications (:class:`~apps.console.models.Notification`).

A notification belongs to one recipient: lists are filtered on the actor, and
one is fetched by id only through :func:`get_notification_for_actor` (another
person's notice, or another ministry's — RLS and the scoped manager — is a
404 like a missing id). Rows are created only by :mod:`apps.quotas.alerts`.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from .notification_models import Notification

UNREAD_SHOWN = 5


def notification_list_unread(*, actor: Any, limit: int = UNREAD_SHOWN) -> list[Notification]:
    """The actor's newest unread notices in the active ministry (the sidebar shows a few)."""
    if getattr(actor, "pk", None) is None:
        return []
    rows: QuerySet[Notification] = Notification.objects.filter(recipient_id=actor.pk, read_at__isnull=True)
    return list(rows.order_by("-created_at", "-id")[:limit])


def get_notification_for_actor(*, actor: Any, notification_id: int) -> Notification:
    """Security: only the recipient may see or dismiss a notice; anyone else gets 404."""
    notice: Notification | None = Notification.objects.filter(
        pk=notification_id, recipient_id=actor.pk
    ).first()
    if notice is None:
        raise Http404
    return notice


def notification_mark_read(*, actor: Any, notification_id: int) -> Notification:
    """Dismiss one notice of the actor (not audited: it changes nothing but the reader's own view)."""
    notice = get_notification_for_actor(actor=actor, notification_id=notification_id)
    if notice.read_at is None:
        notice.read_at = timezone.now()
        notice.save(update_fields=["read_at"])
    return notice
