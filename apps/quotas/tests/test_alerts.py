"""Budget warnings at 80 % and 100 %: once per threshold per month, in-app and by e-mail to admins."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.core.cache import cache
from django.utils import translation

from apps.console.models import Notification, NotificationKind
from apps.quotas.alerts import BudgetUse, budget_alerts_send, notification_text, thresholds_to_report
from apps.tenancy.scope import ScopeError, ministry_scope
from tests.support.fixtures import Actor, make_user

JST = ZoneInfo("Asia/Tokyo")
DEC = datetime(2026, 12, 7, 10, 0, tzinfo=JST)
JAN = datetime(2027, 1, 3, 10, 0, tzinfo=JST)


def _line(used: int, limit: int = 1000, *, level: str = "user", subject_id: int = 1) -> BudgetUse:
    return BudgetUse(
        level=level,
        subject_id=subject_id,
        subject_label="",
        alias_name="",
        unit="tokens",
        used=Decimal(used),
        limit=Decimal(limit),
    )


@pytest.fixture
def admin_a(ministries: tuple[Any, Any]) -> Actor:
    user = make_user("admin-a", ministries[0], ["staff", "ministry_admin"])
    user.email = "admin-a@digital.example.go.jp"
    user.save()
    return Actor(user=user, ministry=ministries[0])


@pytest.fixture
def admin_b(ministries: tuple[Any, Any]) -> Actor:
    user = make_user("admin-b", ministries[1], ["staff", "ministry_admin"])
    user.email = "admin-b@soumu.example.go.jp"
    user.save()
    return Actor(user=user, ministry=ministries[1])


def _notices(actor: Actor) -> list[tuple[int, str, int]]:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return [(n.recipient_id, n.kind, n.data["threshold"]) for n in Notification.objects.order_by("id")]


def test_below_80_percent_reaches_nothing() -> None:
    assert _line(799).reached() == []
    assert _line(800).reached() == [80]
    assert _line(1000).reached() == [80, 100]
    assert _line(5, limit=0).reached() == [80, 100], "a zero budget is exhausted"


def test_thresholds_are_reported_once_per_month_by_the_marker(staff_a: Actor) -> None:
    cache.clear()
    ministry_id, user_id = staff_a.ministry.pk, staff_a.user.pk
    assert thresholds_to_report(ministry_id=ministry_id, user_id=user_id, lines=[_line(500)], now=DEC) == []
    first = thresholds_to_report(ministry_id=ministry_id, user_id=user_id, lines=[_line(850)], now=DEC)
    assert [t for _, t in first] == [80]
    assert thresholds_to_report(ministry_id=ministry_id, user_id=user_id, lines=[_line(900)], now=DEC) == []
    again = thresholds_to_report(ministry_id=ministry_id, user_id=user_id, lines=[_line(1000)], now=DEC)
    assert [t for _, t in again] == [100]
    # A new month starts over.
    january = thresholds_to_report(ministry_id=ministry_id, user_id=user_id, lines=[_line(900)], now=JAN)
    assert [t for _, t in january] == [80]


def test_user_and_admins_are_notified_exactly_once_and_admins_get_email(
    staff_a: Actor, admin_a: Actor, admin_b: Actor
) -> None:
    mail.outbox.clear()
    line = _line(820, level="ministry", subject_id=staff_a.ministry.pk)
    with pytest.raises(ScopeError):
        budget_alerts_send(user_id=staff_a.user.pk, lines=[line], now=DEC)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        created = budget_alerts_send(user_id=staff_a.user.pk, lines=[line], now=DEC)
        # The same crossing again (a retried task, a second worker, a flushed marker): nothing.
        assert budget_alerts_send(user_id=staff_a.user.pk, lines=[line], now=DEC) == []
    assert len(created) == 2
    assert _notices(staff_a) == [
        (staff_a.user.pk, NotificationKind.BUDGET_WARNING, 80),
        (admin_a.user.pk, NotificationKind.BUDGET_WARNING, 80),
    ]
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == ["admin-a@digital.example.go.jp"], "never B's admin"
    assert "80%" in email.body and "820" in email.body
    assert "has reached 80%" in email.body, "English below the Japanese"
    assert _notices(admin_b) == []

    # Another user crossing the same ministry budget: warned themself, admins not again.
    colleague = make_user("colleague", staff_a.ministry, ["staff"])
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        budget_alerts_send(user_id=colleague.pk, lines=[line], now=DEC)
        assert Notification.objects.filter(recipient=admin_a.user).count() == 1
        assert Notification.objects.filter(recipient=colleague).count() == 1
    assert len(mail.outbox) == 1

    # 100 %: one more notice each, one more e-mail.
    full = _line(1000, level="ministry", subject_id=staff_a.ministry.pk)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        budget_alerts_send(user_id=staff_a.user.pk, lines=[full], now=DEC)
        budget_alerts_send(user_id=staff_a.user.pk, lines=[full], now=DEC)
        exhausted = Notification.objects.filter(kind=NotificationKind.BUDGET_EXHAUSTED)
        assert sorted(exhausted.values_list("recipient_id", flat=True)) == sorted(
            [staff_a.user.pk, admin_a.user.pk]
        )
    assert len(mail.outbox) == 2 and "上限に達しました" in mail.outbox[1].body


def test_notification_text_is_bilingual() -> None:
    data = {
        "level": "team",
        "subject": "planning",
        "unit": "yen",
        "used": "8000",
        "limit": "10000",
        "threshold": 80,
        "month": "2026-12",
    }
    with translation.override("ja"):
        assert notification_text("budget_warning", data) == (
            "2026-12 のチーム「planning」の月間予算の80%に達しました（8,000円 / 10,000円）。"
        )
    with translation.override("en"):
        text = notification_text("budget_warning", data)
    assert "80%" in text and "8,000 yen" in text and "planning" in text
