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
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
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


def _marker(ministry_id: int, who: str, line: BudgetUse, threshold: int, month: str) -> str:
    return f"gennai:quota:alerted:{month}:{ministry_id}:{who}:{line.line_key()}:{threshold}"


def thresholds_to_report(
    *,
    ministry_id: int,
    user_id: int | None,
    lines: Iterable[BudgetUse],
    now: datetime | None = None,
    api_key_id: int | None = None,
) -> list[tuple[BudgetUse, int]]:
    """(line, threshold) pairs reached and not yet marked this month; marks them (``SET NX``).

    Marked per requester (the user, or the API key) and line: each user is warned
    of a shared (ministry or team) budget once, too.
    """
    month = month_key(now)
    ttl = _seconds_left_in_month(now) + 86_400
    who = f"u{user_id}" if user_id is not None else f"k{api_key_id}"
    fresh: list[tuple[BudgetUse, int]] = []
    for line in lines:
        for threshold in line.reached():
            if cache.add(_marker(ministry_id, who, line, threshold, month), 1, timeout=ttl):
                fresh.append((line, threshold))
    return fresh


# --- Reading the budget lines (mirrors admission.budget_status, with each line's subject) ---

_local = threading.local()


def _redis() -> Any:
    import redis

    client = getattr(_local, "client", None)
    if client is None or getattr(_local, "url", None) != settings.REDIS_URL:
        client = _local.client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        _local.url = settings.REDIS_URL
    return client


def budget_levels(subject: Any, limits: Any) -> list[tuple[Any, int]]:
    """``(admission Level, subject id)`` of every level of ``subject`` that has a month budget.

    The platform's own budget is left out: a ministry's users and admins can
    neither see nor change it (platform admins watch it in the console).
    """
    from . import admission

    ids = {scope: subject_id for scope, _level, subject_id in admission.scopes_of(subject)}
    out = []
    for level in admission.levels_of(subject, limits):
        values = level.limits
        if level.level == admission.PLATFORM or values is None:
            continue
        if values.monthly_tokens is None and values.monthly_yen_units is None:
            continue
        out.append((level, ids.get(level.scope.split("|", 1)[0], 0)))
    return out


def budget_uses(subject: Any, limits: Any, now: datetime | None = None) -> list[BudgetUse]:
    """The month budget lines of ``subject`` (tokens and/or yen), read from admission's counters.

    One Redis round trip; ``[]`` when there is no budget or Redis is unreachable
    (warnings are advisory: admission is what enforces). The counters are
    those of ``lua/admit.lua`` (``<scope>:b:<YYYYMM>``: used/held tokens and yen).
    """
    from redis.exceptions import RedisError

    from . import admission
    from .limits import YEN_UNITS

    levels = budget_levels(subject, limits)
    if not levels:
        return []
    month = admission.month_key(now)
    try:
        pipe = _redis().pipeline(transaction=False)
        for level, _subject_id in levels:
            pipe.hmget(f"{admission.PREFIX}{level.scope}:b:{month}", "ut", "ht", "uy", "hy")
        replies = pipe.execute()
    except (RedisError, OSError):
        logger.warning("budget alerts: Redis unreachable", exc_info=True)
        return []
    lines: list[BudgetUse] = []
    for (level, subject_id), (ut, ht, uy, hy) in zip(levels, replies, strict=True):
        values = level.limits
        common = {
            "level": level.level,
            "subject_id": subject_id,
            "subject_label": "",
            "alias_name": level.alias_name,
        }
        if values.monthly_tokens is not None:
            used = Decimal(int(ut or 0) + int(ht or 0))
            lines.append(BudgetUse(unit="tokens", used=used, limit=Decimal(values.monthly_tokens), **common))
        if values.monthly_yen_units is not None:
            used_yen = Decimal(int(uy or 0) + int(hy or 0)) / YEN_UNITS
            limit_yen = Decimal(values.monthly_yen_units) / YEN_UNITS
            lines.append(BudgetUse(unit="yen", used=used_yen, limit=limit_yen, **common))
    return lines


def alerts_maybe_enqueue(subject: Any) -> bool:
    """Queue the alerts task if a budget line of ``subject`` reached a threshold new this month.

    Sync (one Redis round trip, plus one ``SET NX`` per line at 80 % or more);
    never raises: a failed check must not break the request that settled.
    """
    from .limits import ministry_limits
    from .tasks import budget_alerts_task

    if subject.user_id is None and subject.api_key_id is None:
        return False
    try:
        lines = budget_uses(subject, ministry_limits(subject.ministry_id))
        fresh = thresholds_to_report(
            ministry_id=subject.ministry_id,
            user_id=subject.user_id,
            api_key_id=subject.api_key_id,
            lines=lines,
        )
        if not fresh:
            return False
        budget_alerts_task.delay(
            ministry_id=subject.ministry_id, user_id=subject.user_id, api_key_id=subject.api_key_id
        )
    except Exception:
        logger.exception("budget alerts check failed (ministry %s)", subject.ministry_id)
        return False
    return True


async def alerts_after_settle(subject: Any) -> None:
    """:func:`alerts_maybe_enqueue` from the event loop: nothing at all when no level has a budget.

    The common case (no month budget anywhere above the requester) is decided
    from the process's limits cache without leaving the event loop. Never raises.
    """
    from apps.tenancy.connections import db_hop

    from .limits import cached_ministry_limits

    try:
        limits = cached_ministry_limits(subject.ministry_id)
        if limits is not None and not budget_levels(subject, limits):
            return
        await db_hop(alerts_maybe_enqueue, subject)
    except Exception:
        logger.exception("budget alerts check failed (ministry %s)", subject.ministry_id)


# --- Writing the notifications (Celery task, inside the ministry scope) ---------------


def _dedupe_key(month: str, line: BudgetUse, threshold: int, *, per_user: int | None) -> str:
    who = f"u{per_user}:" if per_user is not None else ""
    return f"budget:{month}:{who}{line.line_key()}:{threshold}"


def _facts(line: BudgetUse, threshold: int, month: str, user_id: int | None) -> dict[str, Any]:
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


def _platform_text(kind: str, data: dict[str, Any]) -> str | None:
    """Texts of the platform alerts (:mod:`apps.console.platform_alerts`); None for budget kinds."""
    if kind == "audit_chain_broken":
        return _(
            "監査ログのハッシュチェーンが壊れています（イベントID %(id)s: %(reason)s）。"
            "改ざんまたは削除の可能性があります。manage.py audit_verify で確認してください。"
        ) % {"id": data.get("first_bad_id", "?"), "reason": data.get("reason", "")}
    if kind == "usage_partitions_failed":
        return _(
            "利用記録（UsageRecord）のパーティション保守が失敗しました（%(error)s）。"
            "先の月のパーティション作成と保存期間を過ぎた月の削除が行われていません。"
        ) % {"error": data.get("error", "")}
    return None


def notification_text(kind: str, data: dict[str, Any]) -> str:
    """The notice in the active language (rendered when shown; rows keep only facts)."""
    platform = _platform_text(kind, data)
    if platform is not None:
        return platform
    level = data.get("level", "")
    name = str(data.get("subject") or "")
    if level == "team":
        subject = _("チーム「%(name)s」") % {"name": name} if name else _("チーム")
    elif level == "api_key":
        subject = _("APIキー「%(name)s」") % {"name": name} if name else _("APIキー")
    elif level == "user":
        subject = _("あなた個人")
    else:
        subject = _("府省庁全体")
    if data.get("alias"):
        subject = _("%(subject)s（%(alias)s）") % {"subject": subject, "alias": data["alias"]}
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
    """Security: the ministry's SSO admins whose account is active; a disabled account (a departed
    admin) receives no more of the ministry's budget figures, in the app or by e-mail."""
    rows = Membership.objects.filter(
        ministry_id=ministry_id, roles__contains=[Role.MINISTRY_ADMIN.value], user__is_active=True
    )
    return [m.user for m in rows.select_related("user").order_by("user_id")]


def _email_subject(kind: str) -> str:
    if _platform_text(kind, {}) is not None:
        return _("【源内】管理者への警告")
    return _("【源内】予算の通知")


def _send_email(recipient: Any, kind: str, data: dict[str, Any]) -> bool:
    """One e-mail in Japanese with the English text below it (no per-user language is stored)."""
    if not recipient.email:
        return False
    with translation.override("ja"):
        subject_ja, body_ja = _email_subject(kind), notification_text(kind, data)
    with translation.override("en"):
        subject_en, body_en = _email_subject(kind), notification_text(kind, data)
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


def budget_alerts_for_user(*, user_id: int, now: datetime | None = None) -> list[Any]:
    """Re-read the user's budget lines (fresh) and notify what is due (the Celery task's body)."""
    from apps.accounts.models import User
    from apps.tenancy.models import Team

    from . import admission
    from .limits import ministry_limits

    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("budget_alerts_for_user needs an active ministry scope")
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return []
    subject = admission.subject_for_user(ministry_id=ministry_id, user=user, alias_name="", zone="on_prem")
    lines = budget_uses(subject, ministry_limits(ministry_id), now=now)
    names = dict(Team.objects.filter(pk__in=subject.team_ids).values_list("pk", "name"))
    lines = [
        replace(line, subject_label=names.get(line.subject_id, "")) if line.level == "team" else line
        for line in lines
    ]
    return budget_alerts_send(user_id=user_id, lines=lines, now=now)


def budget_alerts_for_api_key(*, api_key_id: int, now: datetime | None = None) -> list[Any]:
    """An API key's budgets (the key's own, the ministry's): its ministry's admins are notified."""
    from apps.gateway.models import ApiKey

    from . import admission
    from .limits import ministry_limits

    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("budget_alerts_for_api_key needs an active ministry scope")
    key = ApiKey.objects.filter(pk=api_key_id).first()
    if key is None:
        return []
    subject = admission.subject_for_api_key(api_key=key, alias_name="", zone="on_prem")
    lines = [
        replace(line, subject_label=key.name) if line.level == "api_key" else line
        for line in budget_uses(subject, ministry_limits(ministry_id), now=now)
    ]
    return budget_alerts_send(user_id=None, lines=lines, now=now)


def budget_alerts_send(
    *, user_id: int | None, lines: Iterable[BudgetUse], now: datetime | None = None
) -> list[Any]:
    """Notify the user (if a user made the request) and the ministry's admins of every threshold
    each line has reached.

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
            own = (
                _create_once(
                    ministry_id=ministry_id,
                    recipient_id=user_id,
                    kind=kind,
                    key=_dedupe_key(month, line, threshold, per_user=user_id),
                    data=data,
                )
                if user_id is not None
                else None
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
