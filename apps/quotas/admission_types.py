"""The values admission deals in: subjects, refusals, reservations, budget lines (apps.quotas.admission)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.utils.translation import gettext as _

from .budget_models import LimitLevel
from .limits import LimitValues

PLATFORM = "platform"


@dataclass(frozen=True)
class Subject:
    """Who a request is charged to: every level whose limits apply to it.

    ``zone`` is the zone of the deployment the request goes to (``external``,
    ``gov_cloud``, ``on_prem``): it decides what happens when Redis is down.
    """

    ministry_id: int
    user_id: int | None
    api_key_id: int | None
    team_ids: tuple[int, ...]
    alias_name: str
    zone: str


class QuotaExceeded(Exception):
    """A limit refused the request: answer HTTP 429 with ``Retry-After: retry_after``.

    ``level`` is the refusing level (platform, ministry, team, user, api_key),
    ``kind`` what ran out (budget, rpm, tpm, concurrency), ``alias`` the alias
    when the refusing limit was that alias's own ("" = all aliases together).
    ``message`` is localised in the active language.
    """

    def __init__(self, *, level: str, kind: str, retry_after: int, alias: str = "") -> None:
        self.level = level
        self.kind = kind
        self.retry_after = max(1, int(retry_after))
        self.alias = alias
        self.message = refusal_message(level=level, kind=kind, retry_after=self.retry_after)
        super().__init__(self.message)


class AdmissionUnavailable(QuotaExceeded):
    """Redis is unreachable and the zone's policy is to fail closed (kind ``unavailable``)."""

    def __init__(self, *, retry_after: int = 5) -> None:
        super().__init__(level=PLATFORM, kind="unavailable", retry_after=retry_after)


def refusal_message(*, level: str, kind: str, retry_after: int) -> str:
    """The user-facing explanation of a refusal (ja, or en in an English request)."""
    levels = {
        PLATFORM: _("プラットフォーム全体"),
        LimitLevel.MINISTRY: _("府省庁"),
        LimitLevel.TEAM: _("チーム"),
        LimitLevel.USER: _("利用者"),
        LimitLevel.API_KEY: _("APIキー"),
    }
    where = levels.get(level, level)
    if kind == "budget":
        return _(
            "%(level)sの今月の利用上限に達しました。来月まで、または管理者が上限を変更するまでお待ちください。"
        ) % {"level": where}
    if kind == "concurrency":
        return _(
            "%(level)sの同時実行数の上限に達しています。実行中の処理が終わってから再度お試しください。"
        ) % {"level": where}
    if kind == "unavailable":
        return _(
            "利用量の確認ができないため、現在このモデルは利用できません。%(seconds)d秒後に再度お試しください。"
        ) % {"seconds": retry_after}
    return _("%(level)sの1分あたりの利用上限に達しました。%(seconds)d秒後に再度お試しください。") % {
        "level": where,
        "seconds": retry_after,
    }


@dataclass
class Reservation:
    """What :func:`areserve` held; pass it to :func:`asettle` exactly once (more is harmless).

    ``degraded`` reservations were admitted under the Redis-down grace: nothing
    is held in Redis, settling them does nothing, and the ledger row catches the
    counters up at the next reconcile. ``journaled`` reservations were made together with
    the request's ``started`` usage-journal entry (:func:`areserve`'s ``journal``).
    """

    request_id: str
    subject: Subject
    tokens: int
    yen_units: int
    max_tokens: int
    expires_at_ms: int = 0
    degraded: bool = False
    settled: bool = field(default=False, compare=False)
    journaled: bool = False  # the request's started entry went into the journal with it


@dataclass(frozen=True)
class BudgetLine:
    """One level's month budget, for "remaining budget" displays."""

    level: str
    alias_name: str
    used_tokens: int
    held_tokens: int
    limit_tokens: int | None
    used_yen: Decimal
    limit_yen: Decimal | None

    @property
    def fraction(self) -> float | None:
        """The larger of the token and yen fractions used (``None`` without a limit)."""
        parts: list[float] = []
        if self.limit_tokens:
            parts.append((self.used_tokens + self.held_tokens) / self.limit_tokens)
        elif self.limit_tokens == 0:
            parts.append(1.0)
        if self.limit_yen:
            parts.append(float(self.used_yen / self.limit_yen))
        elif self.limit_yen == 0:
            parts.append(1.0)
        return max(parts) if parts else None


@dataclass(frozen=True)
class Level:
    """One counter scope of a request, with its limits (``None`` = no row)."""

    scope: str
    level: str
    alias_name: str
    limits: LimitValues | None
