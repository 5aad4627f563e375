"""Budgets and limits: the writes (audited), the reads, and the per-process cache admission uses.

Writes (:func:`limit_set`, :func:`limit_delete`, :func:`platform_limit_set`)
check the actor's role themselves — a ministry admin of the *active* ministry
scope, or a platform admin for the platform rows — so no view can forget it.
Each runs in one transaction with its audit event and a bump of the
``quotas.limits`` cache version (:mod:`apps.tenancy.versions`): every process
drops its cached limits within ``check_seconds()`` of the commit (DESIGN
invariant 11) and reloads them after ``max_age_seconds()`` regardless.

:func:`ministry_limits` / :func:`cached_ministry_limits` are what
:mod:`apps.quotas.admission` reads: every limit of one ministry plus the
platform's, as plain frozen values.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.tenancy import versions
from apps.tenancy.models import Membership, Role
from apps.tenancy.scope import ScopeError, current_ministry_id, ministry_scope

from .budget_models import Limit, LimitLevel, PlatformLimit

logger = logging.getLogger("gennai.quotas")

VERSION_NAME = "quotas.limits"
"""Cache version of every Limit and PlatformLimit row (one name: changes are rare admin actions)."""

LIMIT_FIELDS = ("monthly_tokens", "monthly_yen", "rpm", "tpm", "max_concurrent", "max_tokens")
YEN_UNITS = 10_000
"""Redis counts yen in 1/10,000 yen (UsageRecord.cost_yen has four decimals)."""


# --- Permission checks ------------------------------------------------------------------


def _user_of(actor: Any) -> Any:
    return actor.user if isinstance(actor, Membership) else actor


def _require_ministry_admin(actor: Any, *, roles: tuple[str, ...] = (Role.MINISTRY_ADMIN,)) -> int:
    """Security: ``actor`` (a user or membership) holds one of ``roles`` (default: ministry admin)
    in the active scope; returns the scope's ministry id.

    The ministry comes from the active scope (set from the authenticated
    membership by the middleware), never from an argument, so an admin of A
    cannot write B's limits by passing B's objects.

    The roles are the member's *effective* roles in that ministry — the SSO
    roles plus the unexpired local grants its policy allows
    (:func:`apps.accounts.local_roles.membership_apply_local_grants`), exactly
    what the console's own check sees on the request — so the service and the
    console never disagree (a local auditor reads the limits, a local admin
    where the policy allows one sets them; a lapsed grant counts nowhere).
    """
    from apps.accounts.local_roles import membership_apply_local_grants

    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("limits are changed inside the ministry's scope")
    user = _user_of(actor)
    if getattr(user, "pk", None) is None or not getattr(user, "is_active", False):
        raise PermissionDenied(_("府省庁管理者の権限が必要です。"))
    membership = Membership.objects.filter(user_id=user.pk, ministry_id=ministry_id).first()
    if membership is not None:
        membership = membership_apply_local_grants(membership)
    if membership is None or not any(membership.has_role(role) for role in roles):
        raise PermissionDenied(_("府省庁管理者の権限が必要です。"))
    return ministry_id


def _require_platform_admin(actor: Any) -> None:
    """Security: platform roles come from realm roles, copied into every membership of the user."""
    user = _user_of(actor)
    if getattr(user, "pk", None) is None or not getattr(user, "is_active", False):
        raise PermissionDenied(_("プラットフォーム管理者の権限が必要です。"))
    if not Membership.objects.filter(
        user_id=user.pk, ministry__active=True, roles__contains=[Role.PLATFORM_ADMIN]
    ).exists():
        raise PermissionDenied(_("プラットフォーム管理者の権限が必要です。"))


# --- Validation ---------------------------------------------------------------------------


def _clean_values(values: dict[str, Any]) -> dict[str, Any]:
    """Non-negative integers within their columns (a ``max_tokens`` cap at least 1) and a
    non-negative yen amount with two decimals, or ``None``.

    Security: the services check what the forms check, so no caller (the platform
    form, a command, a script) stores a value the admission cannot use sensibly.
    """
    cleaned: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        value = values.get(name)
        if value is None or value == "":
            cleaned[name] = None
            continue
        try:
            number: Any = Decimal(str(value)) if name == "monthly_yen" else int(value)
        except (TypeError, ValueError, InvalidOperation):
            raise ValidationError(_("上限には0以上の数値を指定してください。")) from None
        if (isinstance(number, Decimal) and not number.is_finite()) or number < 0:
            raise ValidationError(_("上限には0以上の数値を指定してください。"))
        if name == "monthly_yen":
            number = number.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            if number >= Decimal("1e12"):
                raise ValidationError(_("上限には0以上の数値を指定してください。"))
        elif number > (2**63 - 1 if name == "monthly_tokens" else 2**31 - 1):
            # The columns' range (bigint, integer): beyond it the save was a database error.
            raise ValidationError(_("上限には0以上の数値を指定してください。"))
        if name == "max_tokens" and number < 1:
            # A cap of 0 would shorten every answer to one token (admission sends at least 1).
            raise ValidationError(_("max_tokens の上限には1以上の数値を指定してください。"))
        cleaned[name] = number
    return cleaned


def _clean_alias(alias_name: str) -> str:
    """ "" (every alias) or an alias granted to the active ministry; others get the same answer."""
    alias_name = (alias_name or "").strip()
    if not alias_name:
        return ""
    from apps.registry.router import allowed_aliases

    if alias_name not in {alias.name for alias in allowed_aliases()}:
        raise ValidationError(_("この府省庁で利用できないモデル名です: %(names)s") % {"names": alias_name})
    return alias_name


def _clean_subject(*, ministry_id: int, level: str, team: Any, user: Any, api_key: Any) -> dict[str, Any]:
    """Exactly the reference ``level`` needs, and it belongs to the active ministry.

    Security: a team is read back through the scoped manager, a user must hold a
    membership of this ministry and a key must be this ministry's, so an admin
    cannot attach limits (and so learn existence) of another ministry's objects.
    """
    from apps.gateway.models import ApiKey
    from apps.tenancy.models import Team

    refs = {"team": team, "user": user, "api_key": api_key}
    reference_of: dict[str, str] = {"team": "team", "user": "user", "api_key": "api_key"}
    wanted = reference_of.get(str(level))
    if level not in LimitLevel.values:
        raise ValidationError(_("レベルの指定が正しくありません。"))
    for name, ref in refs.items():
        if name != wanted and ref is not None:
            raise ValidationError(_("レベルの指定が正しくありません。"))
    if wanted is None:
        return {"team": None, "user": None, "api_key": None}
    ref = refs[wanted]
    if ref is None:  # the default row of the level: applies to each team / user / key separately
        return {"team": None, "user": None, "api_key": None}
    ref_id = getattr(ref, "pk", ref)
    if ref_id is None:
        raise ValidationError(_("対象を指定してください。"))
    not_found = ValidationError(_("対象が見つかりません。"))
    if wanted == "team":
        obj: Any = Team.objects.filter(pk=ref_id).first()
    elif wanted == "api_key":
        obj = ApiKey.objects.filter(pk=ref_id, ministry_id=ministry_id).first()
    else:
        member = Membership.objects.filter(user_id=ref_id, ministry_id=ministry_id).select_related("user")
        obj = getattr(member.first(), "user", None)
    if obj is None:
        raise not_found
    return {"team": None, "user": None, "api_key": None, wanted: obj}


_LOCK_CLASS = 0x716C_696D  # "qlim": pg_advisory_xact_lock(class, ministry id) of limit writes


def _lock_limits(ministry_id: int) -> None:
    """Serialise the limit writes of one ministry (``0``: the platform's) until the commit.

    Two admins saving the same subject and alias at once (or one form sent twice)
    would both find no row and both insert: the second hit the unique constraint
    (a 500, its value lost) and its audit event never named the first's value as
    "before". Under this lock the second waits, then finds and replaces the first
    row, and its ``before`` is what the first wrote.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, ministry_id])


def _snapshot(row: Limit | PlatformLimit | None) -> dict[str, Any]:
    return {} if row is None else {name: getattr(row, name) for name in LIMIT_FIELDS}


# --- Services -----------------------------------------------------------------------------


@transaction.atomic
def limit_set(
    *,
    actor: Any,
    level: str,
    team: Any = None,
    user: Any = None,
    api_key: Any = None,
    alias_name: str = "",
    monthly_tokens: int | None = None,
    monthly_yen: Decimal | int | str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrent: int | None = None,
    max_tokens: int | None = None,
) -> Limit:
    """Create or replace the limits of one subject of the active ministry (``None`` = unlimited).

    ``level="team"``/``"user"``/``"api_key"`` without the reference sets the
    level's *default*: it applies to each team / user / key of the ministry
    separately (each has its own counters), unless that subject has its own row,
    which then replaces the default entirely (a row with every value ``None``
    exempts the subject).

    Audited as ``quota.limit_set`` with the values before and after; every
    process applies the new values within ``check_seconds()`` of the commit.
    """
    ministry_id = _require_ministry_admin(actor)
    subject = _clean_subject(ministry_id=ministry_id, level=level, team=team, user=user, api_key=api_key)
    alias_name = _clean_alias(alias_name)
    values = _clean_values(
        {
            "monthly_tokens": monthly_tokens,
            "monthly_yen": monthly_yen,
            "rpm": rpm,
            "tpm": tpm,
            "max_concurrent": max_concurrent,
            "max_tokens": max_tokens,
        }
    )
    _lock_limits(ministry_id)
    row = Limit.objects.select_for_update().filter(level=level, alias_name=alias_name, **subject).first()
    before = _snapshot(row)
    if row is None:
        row = Limit(ministry_id=ministry_id, level=level, alias_name=alias_name, **subject)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_by = _user_of(actor)
    row.save()
    audit_record(
        actor=_user_of(actor),
        action="quota.limit_set",
        target_type="quota_limit",
        target_id=row.pk,
        ministry_id=ministry_id,
        data={
            "level": level,
            "team": getattr(subject["team"], "pk", None),
            "user": getattr(subject["user"], "pk", None),
            "api_key": getattr(subject["api_key"], "pk", None),
            "alias": alias_name,
            "before": before,
            "after": _snapshot(row),
        },
    )
    invalidate(ministry_id=ministry_id)
    return row


@transaction.atomic
def limit_delete(*, actor: Any, limit_id: int) -> None:
    """Remove one limit row of the active ministry (the subject becomes unlimited at that level)."""
    ministry_id = _require_ministry_admin(actor)
    row = Limit.objects.select_for_update().filter(pk=limit_id).first()
    if row is None:  # another ministry's row is invisible here (scoped manager + RLS): the same 404
        raise Http404
    audit_record(
        actor=_user_of(actor),
        action="quota.limit_delete",
        target_type="quota_limit",
        target_id=row.pk,
        ministry_id=ministry_id,
        data={
            "level": row.level,
            "team": row.team_id,
            "user": row.user_id,
            "api_key": row.api_key_id,
            "alias": row.alias_name,
            "before": _snapshot(row),
        },
    )
    row.delete()
    invalidate(ministry_id=ministry_id)


@transaction.atomic
def platform_limit_set(
    *,
    actor: Any,
    alias_name: str = "",
    monthly_tokens: int | None = None,
    monthly_yen: Decimal | int | str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrent: int | None = None,
    max_tokens: int | None = None,
) -> PlatformLimit:
    """Create or replace the platform's limits (all aliases, or one alias); platform admins only."""
    _require_platform_admin(actor)
    alias_name = (alias_name or "").strip()[:100]
    values = _clean_values(
        {
            "monthly_tokens": monthly_tokens,
            "monthly_yen": monthly_yen,
            "rpm": rpm,
            "tpm": tpm,
            "max_concurrent": max_concurrent,
            "max_tokens": max_tokens,
        }
    )
    _lock_limits(0)
    row = PlatformLimit.objects.select_for_update().filter(alias_name=alias_name).first()
    before = _snapshot(row)
    if row is None:
        row = PlatformLimit(alias_name=alias_name)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_by = _user_of(actor)
    row.save()
    audit_record(
        actor=_user_of(actor),
        action="quota.platform_limit_set",
        target_type="quota_platform_limit",
        target_id=row.pk,
        data={"alias": alias_name, "before": before, "after": _snapshot(row)},
    )
    invalidate()
    return row


# --- Selectors ----------------------------------------------------------------------------


def limits_for_ministry(*, actor: Any) -> QuerySet[Limit]:
    """Every limit row of the active ministry (the scoped manager and RLS both filter).

    Readable by the ministry's admins and auditors.
    """
    _require_ministry_admin(actor, roles=(Role.MINISTRY_ADMIN, Role.MINISTRY_AUDITOR))
    return Limit.objects.select_related("team", "user", "api_key").order_by("level", "alias_name", "id")


def get_limit_for_actor(*, actor: Any, limit_id: int) -> Limit:
    """Security: one limit of the actor's active ministry; "missing" and "another ministry's" are one 404."""
    _require_ministry_admin(actor, roles=(Role.MINISTRY_ADMIN, Role.MINISTRY_AUDITOR))
    row: Limit | None = Limit.objects.filter(pk=limit_id).first()
    if row is None:
        raise Http404
    return row


def platform_limits() -> QuerySet[PlatformLimit]:
    """The platform rows (platform level: no ministry content)."""
    return PlatformLimit.objects.order_by("alias_name")


# --- The per-process cache admission reads ------------------------------------------------


@dataclass(frozen=True)
class LimitValues:
    """One row's limits as plain numbers (yen in 1/10,000 yen); ``None`` = unlimited."""

    monthly_tokens: int | None = None
    monthly_yen_units: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    max_tokens: int | None = None

    @property
    def counted(self) -> bool:
        """Whether this row needs counters (a budget, RPM, TPM or concurrency; not only a max_tokens cap)."""
        return any(
            value is not None
            for value in (
                self.monthly_tokens,
                self.monthly_yen_units,
                self.rpm,
                self.tpm,
                self.max_concurrent,
            )
        )

    @classmethod
    def of(cls, row: Any) -> LimitValues:
        yen = row["monthly_yen"]
        return cls(
            monthly_tokens=row["monthly_tokens"],
            monthly_yen_units=None if yen is None else int(Decimal(yen) * YEN_UNITS),
            rpm=row["rpm"],
            tpm=row["tpm"],
            max_concurrent=row["max_concurrent"],
            max_tokens=row["max_tokens"],
        )


@dataclass(frozen=True)
class MinistryLimits:
    """Every limit that can apply to a request of one ministry.

    ``rows`` maps ``(level, subject id, alias)`` to values, where the subject id
    is the ministry's own id at ministry level, ``"platform"`` rows have id 0,
    and a level's default row (applies to each team / user / key) has id 0.
    """

    ministry_id: int
    rows: dict[tuple[str, int, str], LimitValues] = field(default_factory=dict)
    plans: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    """Admission's per-subject work derived from these rows (``apps.quotas.admission``): it lives
    exactly as long as the limits it was computed from."""

    def get(self, level: str, subject_id: int, alias_name: str) -> LimitValues | None:
        """The subject's own row, else its level's default row (subject id 0), else ``None``."""
        own = self.rows.get((level, subject_id, alias_name))
        return own if own is not None else self.rows.get((level, 0, alias_name))


def load_ministry_limits(ministry_id: int) -> MinistryLimits:
    """Read every limit of ``ministry_id`` and the platform from PostgreSQL (sync: does I/O)."""
    names = ["alias_name", *LIMIT_FIELDS]
    rows: dict[tuple[str, int, str], LimitValues] = {}
    for row in PlatformLimit.objects.values(*names):
        rows[("platform", 0, row["alias_name"])] = LimitValues.of(row)
    with ministry_scope(ministry_id=ministry_id):  # the ministry's rows only: ORM filter + RLS
        for row in Limit.objects.values("level", "team_id", "user_id", "api_key_id", *names):
            subject = {
                LimitLevel.MINISTRY: ministry_id,
                LimitLevel.TEAM: row["team_id"],
                LimitLevel.USER: row["user_id"],
                LimitLevel.API_KEY: row["api_key_id"],
            }[row["level"]]
            # A default row (no team/user/key) is stored under subject id 0.
            rows[(row["level"], int(subject or 0), row["alias_name"])] = LimitValues.of(row)
    return MinistryLimits(ministry_id=ministry_id, rows=rows)


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[int, tuple[MinistryLimits, float]] = {}
        self.version: int | None = None
        self.checked_at = 0.0
        self.generation = 0  # a load that began before a drop must not store stale limits

    def clear(self) -> None:
        self.entries.clear()
        self.generation += 1


_cache = _Cache()


def cached_ministry_limits(ministry_id: int) -> MinistryLimits | None:
    """The cached limits if still trusted, without I/O (event-loop safe).

    ``None`` means "call :func:`ministry_limits`" (from a thread: it may do I/O).
    """
    now = time.monotonic()
    if now - _cache.checked_at >= versions.check_seconds():
        return None
    entry = _cache.entries.get(ministry_id)
    if entry is None or now - entry[1] >= versions.max_age_seconds():
        return None
    return entry[0]


def refresh_ahead_ministry_limits(ministry_id: int) -> MinistryLimits | None:
    """The cached limits while their version check is due but not overdue (event-loop safe).

    Between one and two ``check_seconds()`` after the last check, a request may
    use the cached limits while one refresh runs beside it (see
    ``apps.quotas.admission._alimits``), instead of waiting for that database
    hop: so a lowered limit still reaches every process within two check
    intervals (about a second) plus one hop, and the entry's maximum age is
    unchanged (invariant 11). With ``check_seconds() == 0`` (tests) nothing is
    ever served this way.
    """
    now = time.monotonic()
    check = versions.check_seconds()
    if check <= 0 or now - _cache.checked_at >= 2 * check:
        return None
    entry = _cache.entries.get(ministry_id)
    if entry is None or now - entry[1] >= versions.max_age_seconds():
        return None
    return entry[0]


def ministry_limits(ministry_id: int) -> MinistryLimits:
    """The limits of ``ministry_id`` from the cache or PostgreSQL (sync: may do I/O).

    Re-reads the ``quotas.limits`` version when the last check is older than
    ``check_seconds()`` and forgets everything if it moved: a lowered limit
    applies on every process within about a second.
    """
    now = time.monotonic()
    if now - _cache.checked_at >= versions.check_seconds():
        version = versions.read_version(VERSION_NAME)
        with _cache.lock:
            if _cache.version != version:
                _cache.clear()
                _cache.version = version
            _cache.checked_at = now
    entry = _cache.entries.get(ministry_id)
    if entry is not None and now - entry[1] < versions.max_age_seconds():
        return entry[0]
    generation = _cache.generation
    limits = load_ministry_limits(ministry_id)
    with _cache.lock:
        if _cache.generation == generation:
            _cache.entries[ministry_id] = (limits, now)
    return limits


def _drop_local() -> None:
    with _cache.lock:
        _cache.clear()
        _cache.checked_at = 0.0


def invalidate(*, ministry_id: int | None = None) -> None:
    """Announce a limit change: call inside the transaction of the change (see apps.tenancy.versions).

    With ``ministry_id``, that ministry's counters are also reseeded from the
    ledger right after the commit (a newly limited scope starts from its month's
    usage, not from zero); without it (platform rows) the periodic reconcile does it.
    """
    versions.bump_version(VERSION_NAME)
    transaction.on_commit(_drop_local)
    if ministry_id is not None:
        transaction.on_commit(lambda: _queue_reseed(ministry_id))


def _queue_reseed(ministry_id: int) -> None:
    from kombu.exceptions import OperationalError

    from .tasks import admission_reseed_ministry_task

    try:
        admission_reseed_ministry_task.delay(ministry_id=ministry_id)
    except (OperationalError, OSError):  # the broker is down: the periodic reconcile reseeds within a minute
        logger.warning("could not queue the reseed of ministry %s", ministry_id, exc_info=True)


def reset_for_tests() -> None:
    with _cache.lock:
        _cache.clear()
        _cache.version = None
        _cache.checked_at = 0.0
