"""Writes of announcements."""

from __future__ import annotations

from django.db import transaction

from apps.accounts.models import User
from apps.tenancy.models import Ministry

from .models import Announcement


@transaction.atomic
def announcement_create(*, actor: User | None, ministry: Ministry, title: str, body: str) -> Announcement:
    """Post an announcement to ``ministry`` (must be the active scope)."""
    announcement = Announcement(ministry=ministry, author=actor, title=title, body=body)
    announcement.full_clean()
    announcement.save()
    return announcement
