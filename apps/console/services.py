"""Writes of announcements, and the per-ministry announcement digest."""

from __future__ import annotations

from typing import TypedDict

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ScopeError, current_ministry_id

from .models import Announcement


@transaction.atomic
def announcement_create(*, actor: User | None, ministry: Ministry, title: str, body: str) -> Announcement:
    """Post an announcement to ``ministry`` (must be the active scope)."""
    announcement = Announcement(ministry=ministry, author=actor, title=title, body=body)
    announcement.full_clean()
    announcement.save()
    return announcement


# --- Announcement digest (background, per ministry) -------------------------

ANNOUNCEMENT_DIGEST_CACHE_SECONDS = 60 * 60


class AnnouncementDigestItem(TypedDict):
    """One announcement in a digest: id, title and ISO 8601 creation time."""

    id: int
    title: str
    created_at: str


class AnnouncementDigest(TypedDict):
    """What :func:`announcement_digest_refresh` stores and returns."""

    ministry_id: int
    total: int
    latest: list[AnnouncementDigestItem]
    generated_at: str


def announcement_digest_cache_key(ministry_id: int) -> str:
    """Cache key of ``ministry_id``'s digest: one key per ministry, never shared."""
    return f"gennai:console:announcement-digest:{ministry_id}"


def announcement_digest_refresh(*, limit: int = 10) -> AnnouncementDigest:
    """Summarise the active ministry's announcements and cache the summary.

    Runs in the active ministry scope (e.g. from the ``announcement_digest_refresh``
    Celery task), so the count and titles are those of that ministry only: the
    scoped manager filters the query and RLS filters it again in the database.
    The digest goes to the Django cache under :func:`announcement_digest_cache_key`
    for the home page and is also returned.

    Raises :class:`~apps.tenancy.scope.ScopeError` without an active scope.
    """
    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("announcement_digest_refresh needs an active ministry scope")
    latest = Announcement.objects.order_by("-created_at", "-id").values("id", "title", "created_at")[:limit]
    digest: AnnouncementDigest = {
        "ministry_id": ministry_id,
        "total": Announcement.objects.count(),
        "latest": [
            {"id": row["id"], "title": row["title"], "created_at": row["created_at"].isoformat()}
            for row in latest
        ],
        "generated_at": timezone.now().isoformat(),
    }
    cache.set(announcement_digest_cache_key(ministry_id), digest, ANNOUNCEMENT_DIGEST_CACHE_SECONDS)
    return digest
