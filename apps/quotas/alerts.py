"""Budget warnings at 80 % and 100 %: the user is warned, the ministry's admins are notified.

Two halves, so the hot path pays (almost) nothing:

* :func:`alerts_maybe_enqueue` runs after a request settled. It looks at the
  user's budget lines (:func:`apps.quotas.admission.budget_status`, Redis
  counters) and, only when a line has reached a threshold that was not yet
  seen this month, queues :func:`apps.quotas.tasks.budget_alerts_task`. A
  Redis marker per line and threshold (``SET NX``, kept until the month is
  over) makes "not yet seen" cost one round trip; it is an optimisation only.
* :func:`budget_alerts_send` (in the Celery task, inside the ministry's scope)
  writes the :class:`~apps.console.models.Notification` rows and sends the
  admins' e-mail through Django's mail backend. The row's unique
  ``dedupe_key`` is what guarantees "once per threshold per month": a marker
  lost in a Redis flush, a retried task or two workers racing can only
  re-check, never notify or e-mail twice.

Which lines: every budget line (monthly tokens or yen) of any level that holds
the user — ministry, each of their teams, the user themself. The user's
warning is per user and line; the admins' notice is per line (one notice for
the ministry's budget however many users cross it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from apps.tenancy.models import Membership, Role
from apps.tenancy.scope import ScopeError, current_ministry_id

logger = logging.getLogger("gennai.quotas")

#: Thresholds in percent of a budget; each is reported once per month per line.
THRESHOLDS: tuple[int, ...] = (80, 100)


@dataclass(frozen=True)
class BudgetUse:
    """One budget line as the alerts see it (built from an admission ``BudgetLine``)."""

    level: str  # ministry | team | user | api_key
    subject_id: int  # the ministry, team, user or key id
    subject_label: str  # e.g. the team's name, for the text
    alias_name: str  # "" = all aliases together
    unit: str  # "tokens" | "yen"
    used: Decimal
    limit: Decimal

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100
        return int(self.used * 100 / self.limit)

    def reached(self) -> list[int]:
        """The thresholds this line has reached (``[]`` below 80 %)."""
        return [t for t in THRESHOLDS if self.percent >= t]

    def line_key(self) -> str:
        return f"{self.level}:{self.subject_id}:{self.alias_name}:{self.unit}"


def month_key(now: datetime | None = None) -> str:
    """The budget month (local time, like the admission counters): ``2026-12``."""
    return timezone.localtime(now).strftime("%Y-%m")


def _seconds_left_in_month(now: datetime | None = None) -> int:
    local = timezone.localtime(now)
    first_next = (local.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return max(int((first_next - local).total_seconds()), 60)


def _marker(ministry_id: int, user_id: int, line: BudgetUse, threshold: int, month: str) -> str:
    return f"gennai:quota:alerted:{month}:{ministry_id}:{user_id}:{line.line_key()}:{threshold}"


def thresholds_to_report(
    *, ministry_id: int, user_id: int, lines: Iterable[BudgetUse], now: datetime | None = None
) -> list[tuple[BudgetUse, int]]:
    """(line, threshold) pairs reached and not yet marked this month; marks them (``SET NX``)."""
    month = month_key(now)
    ttl = _seconds_left_in_month(now) + 86_400
    fresh: list[tuple[BudgetUse, int]] = []
    for line in lines:
        for threshold in line.reached():
            if cache.add(_marker(ministry_id, user_id, line, threshold, month), 1, timeout=ttl):
                fresh.append((line, threshold))
    return fresh


# --- Writing the notifications (Celery task, inside the ministry scope) ---------------


def _dedupe_key(month: str, line: BudgetUse, threshold: int, *, per_user: int | None) -> str:
    who = f"u{per_user}:" if per_user is not None else ""
    return f"budget:{month}:{who}{line.line_key()}:{threshold}"


def _facts(line: BudgetUse, threshold: int, month: str, user_id: int) -> dict[str, Any]:
    return {
        "level": line.level,
        "subject_id": line.subject_id,
        "subject": line.subject_label,
        "alias": line.alias_name,
        "unit": line.unit,
        "used": str(line.used),
        "limit": str(line.limit),
        "threshold": threshold,
        "month": month,
        "user_id": user_id,
    }


def _create_once(*, ministry_id: int, recipient_id: int, kind: str, key: str, data: dict[str, Any]) -> Any:
    """The new notification, or ``None`` when this key was already notified to this recipient."""
    from apps.console.models import Notification

    try:
        with transaction.atomic():  # a savepoint: the race's loser rolls back only its insert
            return Notification.objects.create(
                ministry_id=ministry_id, recipient_id=recipient_id, kind=kind, dedupe_key=key, data=data
            )
    except IntegrityError:
        return None


def notification_text(kind: str, data: dict[str, Any]) -> str:
    """The notice in the active language (rendered when shown; rows keep only facts)."""
    level_labels = {
        "ministry": _("府省庁全体"),
        "team": _("チーム"),
        "user": _("あなた個人"),
        "api_key": _("APIキー"),
    }
    subject = level_labels.get(data.get("level", ""), data.get("level", ""))
    if data.get("level") in ("team", "api_key") and data.get("subject"):
        subject = f"{subject}「{data['subject']}」"
    if data.get("alias"):
        subject = f"{subject}（{data['alias']}）"
    amount = _amount(data.get("used", "0"), data.get("unit", "tokens"))
    limit = _amount(data.get("limit", "0"), data.get("unit", "tokens"))
    values = {"subject": subject, "used": amount, "limit": limit, "month": data.get("month", "")}
    if int(data.get("threshold", 0)) >= 100:
        return (
            _(
                "%(month)s の%(subject)sの月間予算の上限に達しました（%(used)s / %(limit)s）。"
                "来月1日まで、この予算の範囲ではモデルを利用できません。"
            )
            % values
        )
    return _("%(month)s の%(subject)sの月間予算の80%%に達しました（%(used)s / %(limit)s）。") % values


def _amount(value: str, unit: str) -> str:
    number = Decimal(value)
    if unit == "yen":
        return _("%(n)s円") % {"n": f"{number:,.0f}"}
    return _("%(n)sトークン") % {"n": f"{int(number):,}"}


def _admins(ministry_id: int) -> list[Any]:
    rows = Membership.objects.filter(ministry_id=ministry_id, roles__contains=[Role.MINISTRY_ADMIN.value])
    return [m.user for m in rows.select_related("user").order_by("user_id")]


def _send_email(recipient: Any, kind: str, data: dict[str, Any]) -> bool:
    """One e-mail in Japanese with the English text below it (no per-user language is stored)."""
    if not recipient.email:
        return False
    with translation.override("ja"):
        subject_ja, body_ja = _("【源内】予算の通知"), notification_text(kind, data)
    with translation.override("en"):
        subject_en, body_en = _("【源内】予算の通知"), notification_text(kind, data)
    try:
        send_mail(
            subject=f"{subject_ja} / {subject_en}",
            message=f"{body_ja}\n\n{body_en}\n",
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[recipient.email],
        )
    except Exception:  # the in-app notice stands; a later run does not re-send (by design)
        logger.exception("budget alert e-mail to user %s failed", recipient.pk)
        return False
    return True


def budget_alerts_send(*, user_id: int, lines: Iterable[BudgetUse], now: datetime | None = None) -> list[Any]:
    """Notify the user and the ministry's admins of every threshold each line has reached.

    Runs in the active ministry scope (the task's). Returns the notifications
    created by this call; a threshold already notified this month creates
    nothing and sends no e-mail (unique ``dedupe_key`` per recipient).
    """
    from apps.console.models import NotificationKind

    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("budget_alerts_send needs an active ministry scope")
    month = month_key(now)
    admins = _admins(ministry_id)
    created: list[Any] = []
    for line in lines:
        for threshold in line.reached():
            kind = NotificationKind.BUDGET_EXHAUSTED if threshold >= 100 else NotificationKind.BUDGET_WARNING
            data = _facts(line, threshold, month, user_id)
            own = _create_once(
                ministry_id=ministry_id,
                recipient_id=user_id,
                kind=kind,
                key=_dedupe_key(month, line, threshold, per_user=user_id),
                data=data,
            )
            if own is not None:
                created.append(own)
            for admin in admins:
                notice = _create_once(
                    ministry_id=ministry_id,
                    recipient_id=admin.pk,
                    kind=kind,
                    key=_dedupe_key(month, line, threshold, per_user=None),
                    data=data,
                )
                if notice is None:
                    continue
                created.append(notice)
                if _send_email(admin, kind, data):
                    notice.emailed_at = timezone.now()
                    notice.save(update_fields=["emailed_at"])
    return created
