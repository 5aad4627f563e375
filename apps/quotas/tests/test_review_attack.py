"""Attacks on the quotas app found in review: each test failed before its fix."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

import pytest

from apps.quotas.models import UsageRecord
from apps.quotas.rollups import local_today, local_zone
from apps.quotas.selectors import usage_csv_rows
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user
from tests.support.races import race_through

from .admission_support import quota_redis_fixture  # noqa: F401  (provides quota_redis)


def _reader(ministry: Any, name: str) -> Membership:
    user = make_user(name, ministry, ["ministry_auditor"])
    return Membership.objects.get(user=user, ministry=ministry)


def _now_local() -> datetime:
    return datetime.combine(local_today(), time(9, 0), tzinfo=local_zone())


@pytest.mark.parametrize(
    ("group_by", "field", "value"),
    [
        ("alias", "alias_name", "=HYPERLINK(1)"),
        ("model", "model_name", "@SUM(1+1)*cmd|' /C calc'!A0"),
        ("model", "model_name", "-2+3+cmd|' /C calc'!A0"),
        ("feature", "feature", "+1+1"),
    ],
)
def test_csv_key_column_is_neutralised_like_the_label(
    ministries: tuple[Any, Any], group_by: str, field: str, value: str
) -> None:
    """The ``key`` column of a text group (alias, model, feature) is the same text as the label:
    it was written as is, so a model name registered by a procurement officer (or any text that
    reaches the ledger) ran as a formula in the admin's spreadsheet."""
    a, _ = ministries
    reader = _reader(a, "csv-key-reader")
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(**{field: value}, status="ok", created_at=_now_local())
    lines = list(usage_csv_rows(actor=reader, start=local_today(), end=local_today(), group_by=group_by))
    header, row = lines[0], lines[1]
    assert row[header.index("key")] == "'" + value
    assert row[header.index("label")] == "'" + value


def test_csv_full_width_formula_signs_are_neutralised(ministries: tuple[Any, Any]) -> None:
    """Japanese spreadsheets take full-width ＝ ＋ － ＠ as formula signs too."""
    a, _ = ministries
    reader = _reader(a, "csv-fw-reader")
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(alias_name="＝HYPERLINK(1)", status="ok", created_at=_now_local())
    lines = list(usage_csv_rows(actor=reader, start=local_today(), end=local_today(), group_by="alias"))
    assert lines[1][2] == "'＝HYPERLINK(1)"
    assert lines[1][3] == "'＝HYPERLINK(1)"


def test_csv_plain_keys_are_unchanged(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    reader = _reader(a, "csv-plain-reader")
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(alias_name="standard-chat", status="ok", created_at=_now_local())
    lines = list(usage_csv_rows(actor=reader, start=local_today(), end=local_today(), group_by="alias"))
    assert lines[1][2:4] == ["standard-chat", "standard-chat"]


# --- Two admins (or one double-submitted form) creating the same limit at once ---------------


def _race(monkeypatch: pytest.MonkeyPatch, *, calls: list[Any]) -> list[BaseException | None]:
    """Run ``calls`` at once, meeting right after each looked for the existing limit row."""
    from apps.quotas import limits

    monkeypatch.setattr(limits, "_queue_reseed", lambda ministry_id: None)
    return race_through(monkeypatch, limits, "_snapshot", calls)


@pytest.mark.django_db(transaction=True)
def test_two_admins_creating_the_same_limit_at_once_both_succeed(
    ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second insert of the same (level, subject, alias) hit the unique constraint: a 500 for
    the second admin (or the double-submitted form), and the first value silently kept."""
    from apps.audit.models import AuditEvent
    from apps.quotas.budget_models import Limit
    from apps.quotas.limits import limit_set

    a, _ = ministries
    first = make_user("race-admin-1", a, ["ministry_admin"])
    second = make_user("race-admin-2", a, ["ministry_admin"])

    def setter(actor: Any, tokens: int) -> Any:
        def call() -> None:
            with ministry_scope(ministry_id=a.pk):
                limit_set(actor=actor, level="ministry", monthly_tokens=tokens)

        return call

    errors = _race(monkeypatch, calls=[setter(first, 1000), setter(second, 2000)])
    assert errors == [None, None]
    with ministry_scope(ministry_id=a.pk):
        rows = list(Limit.objects.filter(level="ministry", alias_name=""))
    assert len(rows) == 1 and rows[0].monthly_tokens in (1000, 2000)
    events = list(AuditEvent.objects.filter(action="quota.limit_set").order_by("id"))
    assert len(events) == 2
    # The later change names the earlier one's value as "before": nothing was lost unseen.
    assert events[0].data["before"] == {}
    assert events[1].data["before"]["monthly_tokens"] == events[0].data["after"]["monthly_tokens"]
    assert events[1].data["after"]["monthly_tokens"] == rows[0].monthly_tokens


@pytest.mark.django_db(transaction=True)
def test_two_platform_admins_setting_the_same_platform_limit_at_once(
    ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.quotas.budget_models import PlatformLimit
    from apps.quotas.limits import platform_limit_set

    a, _ = ministries
    first = make_user("race-padmin-1", a, ["platform_admin"])
    second = make_user("race-padmin-2", a, ["platform_admin"])
    errors = _race(
        monkeypatch,
        calls=[
            lambda: platform_limit_set(actor=first, monthly_tokens=10),
            lambda: platform_limit_set(actor=second, monthly_tokens=20),
        ],
    )
    assert errors == [None, None]
    assert PlatformLimit.objects.filter(alias_name="").count() == 1


# --- Budget e-mails go to the ministry's admins, not to a deactivated account -------------------


def test_a_deactivated_admin_gets_no_budget_notice_or_email(ministries: tuple[Any, Any]) -> None:
    """The recipients were every membership with ``ministry_admin``, also of an account the IdP
    disabled: a departed admin kept receiving the ministry's budget figures by e-mail."""
    from decimal import Decimal

    from django.core import mail

    from apps.console.models import Notification
    from apps.quotas.alerts import BudgetUse, budget_alerts_send

    a, _ = ministries
    active = make_user("alert-admin-on", a, ["staff", "ministry_admin"])
    gone = make_user("alert-admin-off", a, ["staff", "ministry_admin"])
    for user in (active, gone):
        user.email = f"{user.username}@digital.example.go.jp"
    active.save()
    gone.is_active = False
    gone.save()
    line = BudgetUse(
        level="ministry",
        subject_id=a.pk,
        subject_label="",
        alias_name="",
        unit="tokens",
        used=Decimal(900),
        limit=Decimal(1000),
    )
    mail.outbox.clear()
    with ministry_scope(ministry_id=a.pk):
        budget_alerts_send(user_id=None, lines=[line])
        recipients = set(Notification.objects.values_list("recipient_id", flat=True))
    assert recipients == {active.pk}
    assert [m.to for m in mail.outbox] == [[active.email]]


# --- Values the forms refuse are refused by the service too ----------------------------------


@pytest.mark.parametrize(
    "values",
    [{"max_tokens": 0}, {"monthly_tokens": 2**63}, {"rpm": -1}, {"monthly_yen": "NaN"}],
)
def test_limit_values_outside_the_columns_are_refused_by_the_services(
    ministries: tuple[Any, Any], values: dict[str, Any]
) -> None:
    """A ``max_tokens`` cap of 0 (the platform form allowed it) capped every answer to one token,
    and a token budget past the column's range was a database error (500) instead of a message."""
    from django.core.exceptions import ValidationError

    from apps.quotas.budget_models import Limit, PlatformLimit
    from apps.quotas.limits import limit_set, platform_limit_set

    a, _ = ministries
    admin = make_user("values-admin", a, ["ministry_admin", "platform_admin"])
    with ministry_scope(ministry_id=a.pk):
        with pytest.raises(ValidationError):
            limit_set(actor=admin, level="ministry", **values)
        assert not Limit.objects.exists()
    with pytest.raises(ValidationError):
        platform_limit_set(actor=admin, **values)
    assert not PlatformLimit.objects.exists()


def test_the_largest_values_the_forms_offer_are_kept(ministries: tuple[Any, Any]) -> None:
    from apps.quotas.limits import limit_set

    a, _ = ministries
    admin = make_user("values-admin-max", a, ["ministry_admin"])
    with ministry_scope(ministry_id=a.pk):
        row = limit_set(actor=admin, level="ministry", monthly_tokens=2**63 - 1, max_tokens=1, rpm=0)
    assert (row.monthly_tokens, row.max_tokens, row.rpm) == (2**63 - 1, 1, 0)


# --- A staff member's budget meter shows their ministry's lines, never the platform's ---------------


def test_the_budget_meter_does_not_show_the_platform_wide_counter(
    quota_redis: Any, ministries: tuple[Any, Any]
) -> None:
    """``budget_status`` (the chat sidebar's meter) listed the platform level too: every staff member
    of every ministry saw the platform's budget and its live total — the usage of all ministries
    together, so B's activity could be watched from A — labelled in the sidebar as their own."""
    from decimal import Decimal

    from apps.quotas import admission, limits
    from apps.quotas.budget_models import PlatformLimit

    from .admission_support import set_limit, staff_of, user_subject

    a, b = ministries
    PlatformLimit.objects.create(alias_name="", monthly_tokens=1_000_000)
    limits.reset_for_tests()
    user_a, user_b = staff_of(a), staff_of(b)
    admin_a = make_user("meter-admin-a", a, ["ministry_admin"])
    set_limit(a, admin_a, level="user", user=user_a, monthly_tokens=500)
    subject_b = user_subject(b, user_b)
    held = admission.reserve(subject=subject_b, prompt_tokens=300, max_tokens=0, request_id="m-1")
    admission.settle(reservation=held, prompt_tokens=300, completion_tokens=0, cost_yen=Decimal(0))
    lines = admission.budget_status(ministry_id=a.pk, user_id=user_a.pk)
    assert [line.level for line in lines] == ["user"]
    assert lines[0].used_tokens == 0 and lines[0].limit_tokens == 500
