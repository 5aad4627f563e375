"""The daily audit_verify run (Celery beat) alerts the platform admins when the chain breaks."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import mail
from django.db import connection

from apps.audit.services import audit_record
from apps.audit.tasks import audit_verify_task
from apps.console.models import Notification, NotificationKind
from apps.quotas.alerts import notification_text
from apps.tenancy.db import owner_mode
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


def test_the_daily_check_is_scheduled_by_beat() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["audit-verify"]
    assert entry["task"] == audit_verify_task.name == "audit.verify_chain"


def _notices(ministry: Any, user: Any) -> list[Notification]:
    with ministry_scope(ministry_id=ministry.pk):
        return list(Notification.objects.filter(recipient=user))


def test_an_intact_chain_alerts_nobody(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin = make_user("plat-ok", a, ["staff", "platform_admin"])
    audit_record(actor=None, action="test.one", target_type="thing", ministry_id=a.pk)
    assert audit_verify_task()["intact"] is True
    assert _notices(a, admin) == []
    assert mail.outbox == []


def test_a_broken_chain_alerts_every_platform_admin_once(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    platform_a = make_user("plat-a", a, ["staff", "platform_admin"])
    platform_a.email = "plat-a@example.go.jp"
    platform_a.save()
    platform_b = make_user("plat-b", b, ["staff", "platform_admin"])
    ministry_admin = make_user("min-admin", a, ["staff", "ministry_admin"])
    events = [
        audit_record(actor=None, action=f"test.{n}", target_type="thing", ministry_id=a.pk) for n in range(3)
    ]
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET data = %s WHERE id = %s", ['{"x": 1}', events[1].pk])

    result = audit_verify_task()

    assert (result["intact"], result["first_bad_id"]) == (False, events[1].pk)
    [notice_a] = _notices(a, platform_a)
    [notice_b] = _notices(b, platform_b)
    assert notice_a.kind == NotificationKind.AUDIT_CHAIN_BROKEN
    assert notice_a.data["first_bad_id"] == events[1].pk
    assert str(events[1].pk) in notification_text(notice_a.kind, notice_a.data)
    assert notice_a.emailed_at is not None and notice_b.emailed_at is None  # B's admin has no e-mail
    assert _notices(a, ministry_admin) == [], "a ministry admin is not the platform team"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["plat-a@example.go.jp"]
    assert str(events[1].pk) in mail.outbox[0].body
    # The next run the same day (a retry, a second beat) does not alert again.
    audit_verify_task()
    assert len(_notices(a, platform_a)) == 1 and len(mail.outbox) == 1
