"""Alerts to the platform admins: things only the platform team can fix.

Used by background jobs that find something wrong with the platform as a whole
(the audit chain broken: :func:`apps.audit.tasks.audit_verify_task`; the usage
ledger's partition upkeep failing: :func:`apps.quotas.tasks.usage_partitions_maintain_task`).
Same pattern as the budget alerts (:mod:`apps.quotas.alerts`): an in-app
:class:`~apps.console.models.Notification` per recipient and an e-mail in
Japanese and English through Django's mail backend, each at most once per
``(kind, key)`` (the notification's unique ``dedupe_key``), so a daily job that
keeps failing alerts once a day, not once per retry.

Recipients: every active user holding ``platform_admin`` in any membership (the
role is realm-wide and copied into each of their memberships). A notification is
a ministry's row, so each lands in the recipient's first ministry (lowest id),
inside that ministry's scope.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from apps.tenancy.models import Membership, Role
from apps.tenancy.scope import ministry_scope

logger = logging.getLogger("gennai.console")


def platform_admin_homes() -> list[tuple[Any, int]]:
    """(user, ministry id) of every active platform admin, the ministry being their first one."""
    homes: dict[int, tuple[Any, int]] = {}
    rows = (
        Membership.objects.filter(roles__contains=[Role.PLATFORM_ADMIN.value], user__is_active=True)
        .select_related("user")
        .order_by("user_id", "ministry_id")
    )
    for membership in rows:
        homes.setdefault(membership.user_id, (membership.user, membership.ministry_id))
    return list(homes.values())


def platform_alert(*, kind: str, key: str, data: dict[str, Any]) -> list[Any]:
    """Notify every platform admin of ``kind`` (once per ``key``); returns the notices created.

    ``data`` holds facts for the text only (never secrets: it is shown in the app
    and mailed). Logged at ERROR too, so the log pipeline sees it even when no
    platform admin exists yet.
    """
    from apps.quotas.alerts import _create_once, _send_email

    logger.error("platform alert %s (%s): %s", kind, key, data)
    created: list[Any] = []
    for user, ministry_id in platform_admin_homes():
        with ministry_scope(ministry_id=ministry_id):
            notice = _create_once(
                ministry_id=ministry_id, recipient_id=user.pk, kind=kind, key=f"{kind}:{key}"[:200], data=data
            )
            if notice is None:
                continue
            created.append(notice)
            if _send_email(user, kind, data):
                notice.emailed_at = timezone.now()
                notice.save(update_fields=["emailed_at"])
    return created
