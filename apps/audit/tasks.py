"""Background work of the audit trail: the daily check of the hash chain."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from gennai.celery import app

from .services import audit_verify


@app.task(name="audit.verify_chain", ignore_result=True)
def audit_verify_task() -> dict[str, Any]:
    """Walk the whole audit chain (as ``manage.py audit_verify``); alert the platform admins on a break.

    Scheduled daily by ``CELERY_BEAT_SCHEDULE`` (``audit-verify``). Platform
    work, not a ``TenantTask``: the chain is one for all ministries. A break is
    reported once per day and first bad event (in the app and by e-mail,
    :func:`apps.console.platform_alerts.platform_alert`); the alert carries the
    event id and the reason, never the event's content.
    """
    report = audit_verify()
    if not report.intact:
        from apps.console.platform_alerts import platform_alert

        platform_alert(
            kind="audit_chain_broken",
            key=f"{timezone.localdate().isoformat()}:{report.first_bad_id}",
            data={"first_bad_id": report.first_bad_id, "reason": report.reason, "checked": report.checked},
        )
    return {"intact": report.intact, "checked": report.checked, "first_bad_id": report.first_bad_id}
