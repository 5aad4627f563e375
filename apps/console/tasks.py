"""Background work of the console. Tenant tasks take ``ministry_id`` as a keyword."""

from __future__ import annotations

from apps.tenancy.tasks import TenantTask
from gennai.celery import app

from .services import AnnouncementDigest, announcement_digest_refresh


@app.task(base=TenantTask, name="console.announcement_digest_refresh")
def announcement_digest_refresh_task(*, ministry_id: int, limit: int = 10) -> AnnouncementDigest:
    """Rebuild ministry ``ministry_id``'s announcement digest in the cache.

    ``TenantTask`` enters ``ministry_scope(ministry_id=...)`` (ORM scope plus
    ``SET LOCAL gennai.ministry_id``) before this body runs, so the service sees
    that ministry's rows and nothing else. Queue it after commit, e.g.
    ``transaction.on_commit(lambda: announcement_digest_refresh_task.delay(ministry_id=m.pk))``.
    """
    return announcement_digest_refresh(limit=limit)
