"""Reads of announcements (always within the active ministry scope)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from apps.accounts.models import User

from .models import Announcement


def announcement_list(*, limit: int = 20) -> QuerySet[Announcement]:
    """Latest announcements of the active ministry."""
    return Announcement.objects.all()[:limit]


def get_announcement_for_actor(*, actor: User, announcement_id: int) -> Announcement:
    """Security: "missing" and "another ministry's" are the same 404.

    The scoped manager already limits the query to the actor's ministry and RLS
    limits it again in the database.
    """
    announcement: Announcement | None = Announcement.objects.filter(pk=announcement_id).first()
    if announcement is None or not actor.is_authenticated:
        raise Http404
    return announcement
