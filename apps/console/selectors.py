"""Reads of the console: announcements, and the ministry console's members, teams,
model allowlist and retention (always within the active ministry scope)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from apps.accounts.local_roles import GrantPolicy, grant_policy
from apps.accounts.models import LocalRoleGrant, User
from apps.documents.models import DocumentRetention
from apps.gateway.models import ApiKey
from apps.quotas.budget_models import Limit, LimitLevel
from apps.quotas.limits import limits_for_ministry
from apps.quotas.models import UsageRecord
from apps.registry.models import Alias, AliasGrant
from apps.tenancy.models import Membership, Role, Team, TeamMembership

from .models import Announcement


def announcement_list(*, limit: int = 20) -> QuerySet[Announcement]:
    """Latest announcements of the active ministry."""
    return Announcement.objects.all()[:limit]


def get_announcement_for_actor(*, actor: User, announcement_id: int) -> Announcement:
    """Security: "missing" and "another ministry's" are the same 404.

    The scoped manager already limits the query to the actor's ministry and RLS
    limits it again in the database.
    """
    announcement: Announcement | None = Announcement.objects.filter(pk=announcement_id).first()
    if announcement is None or not actor.is_authenticated:
        raise Http404
    return announcement


# --- Ministry console (members, teams, model allowlist, retention) ---------------------------
# Every read here is of the *active* ministry: tenant rows through their scoped manager (and
# RLS), the three non-tenant tables (Membership, ApiKey, Alias grants' aliases) filtered on the
# acting membership's ministry explicitly, because no manager does it for them.


@dataclass(frozen=True)
class OverviewCounts:
    """What the console home shows about the active ministry."""

    members: int
    admins: int
    teams: int
    api_keys: int
    allowed_aliases: int


def console_overview(*, actor: Membership) -> OverviewCounts:
    members = Membership.objects.filter(ministry_id=actor.ministry_id)
    return OverviewCounts(
        members=members.count(),
        admins=members.filter(roles__contains=[Role.MINISTRY_ADMIN.value]).count(),
        teams=Team.objects.count(),
        api_keys=ApiKey.objects.filter(ministry_id=actor.ministry_id, revoked_at__isnull=True).count(),
        allowed_aliases=AliasGrant.objects.count(),
    )


def member_list(*, actor: Membership, query: str = "") -> QuerySet[Membership]:
    """Members of the acting ministry, by name; ``query`` matches display name, username or e-mail."""
    members = Membership.objects.filter(ministry_id=actor.ministry_id).select_related("user")
    query = query.strip()
    if query:
        members = members.filter(
            Q(user__display_name__icontains=query)
            | Q(user__username__icontains=query)
            | Q(user__email__icontains=query)
        )
    return members.order_by("user__display_name", "user__username", "pk")


def get_member_for_actor(*, actor: Membership, user_id: int) -> Membership:
    """Security: a user who is not a member of the acting ministry is the same 404 as a missing one.

    A user may be a member of several ministries; only their membership of the
    acting ministry is ever returned, so an admin of B sees nothing of the
    user's roles in A.
    """
    member = (
        Membership.objects.filter(ministry_id=actor.ministry_id, user_id=user_id)
        .select_related("user")
        .first()
    )
    if member is None:
        raise Http404
    return member


def member_team_memberships(*, user: User) -> QuerySet[TeamMembership]:
    """The user's teams in the active ministry (scoped manager + RLS)."""
    return TeamMembership.objects.filter(user=user).select_related("team").order_by("team__code")


def member_limits(*, actor: User, user: User) -> list[Limit]:
    """``user``'s own limit rows (user level) in the active ministry, through the quotas selector."""
    return list(limits_for_ministry(actor=actor).filter(level=LimitLevel.USER, user=user))


@dataclass(frozen=True)
class UsageSummary:
    """A member's model calls in the active ministry since ``since``."""

    since: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_yen: Decimal


def member_usage_summary(*, user: User, days: int = 30) -> UsageSummary:
    since = timezone.now() - timedelta(days=days)
    totals = UsageRecord.objects.filter(user=user, created_at__gte=since).aggregate(
        requests=Count("pk"),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost_yen=Sum("cost_yen"),
    )
    return UsageSummary(
        since=since,
        requests=totals["requests"] or 0,
        prompt_tokens=totals["prompt_tokens"] or 0,
        completion_tokens=totals["completion_tokens"] or 0,
        cost_yen=totals["cost_yen"] or Decimal(0),
    )


def team_list(*, query: str = "") -> QuerySet[Team]:
    """Teams of the active ministry with their member counts."""
    teams: QuerySet[Team] = Team.objects.annotate(member_count=Count("memberships"))
    query = query.strip()
    if query:
        teams = teams.filter(Q(name__icontains=query) | Q(code__icontains=query))
    return teams.order_by("code", "pk")


def get_team_for_actor(*, actor: Membership, team_id: int) -> Team:
    """Security: "missing" and "another ministry's team" are the same 404.

    The scoped manager and RLS already hide other ministries' teams; the
    explicit ministry filter keeps it so even if this ran in the wrong scope.
    """
    team: Team | None = Team.objects.filter(pk=team_id, ministry_id=actor.ministry_id).first()
    if team is None:
        raise Http404
    return team


def team_memberships(*, team: Team) -> QuerySet[TeamMembership]:
    return team.memberships.select_related("user").order_by("user__display_name", "user__username", "pk")


def get_team_membership_for_actor(
    *, actor: Membership, team: Team, team_membership_id: int
) -> TeamMembership:
    """Security: the membership row must belong to ``team`` of the acting ministry, else 404."""
    row: TeamMembership | None = (
        TeamMembership.objects.filter(pk=team_membership_id, team=team, ministry_id=actor.ministry_id)
        .select_related("user")
        .first()
    )
    if row is None:
        raise Http404
    return row


def ministry_users(*, actor: Membership) -> QuerySet[User]:
    """Users with a membership of the acting ministry: the only users a form may offer or accept."""
    return User.objects.filter(memberships__ministry_id=actor.ministry_id).order_by(
        "display_name", "username", "pk"
    )


def ministry_api_keys(*, actor: Membership) -> QuerySet[ApiKey]:
    """The acting ministry's API keys (ApiKey is not a TenantModel: filter explicitly)."""
    return ApiKey.objects.filter(ministry_id=actor.ministry_id).order_by("name", "pk")


@dataclass(frozen=True)
class AllowlistRow:
    """One alias the platform offers, and whether the acting ministry may use it."""

    alias: Alias
    granted: bool
    routed: bool


def alias_allowlist(*, actor: Membership) -> list[AllowlistRow]:
    """Every alias of the platform with the acting ministry's grant state.

    Aliases are platform data (every ministry may see their names); grants are
    tenant rows, read through the scoped manager (and RLS).
    """
    granted = set(AliasGrant.objects.filter(ministry_id=actor.ministry_id).values_list("alias_id", flat=True))
    return [
        AllowlistRow(alias=alias, granted=alias.pk in granted, routed=alias.current_revision_id is not None)
        for alias in Alias.objects.order_by("name")
    ]


def granted_alias_names(*, actor: Membership) -> list[str]:
    """Names of the aliases the acting ministry may use (for per-alias limits)."""
    return list(
        AliasGrant.objects.filter(ministry_id=actor.ministry_id)
        .select_related("alias")
        .order_by("alias__name")
        .values_list("alias__name", flat=True)
    )


def get_alias_for_console(*, alias_id: int) -> Alias:
    """An alias of the platform by id (platform data: any console user may name one)."""
    alias = Alias.objects.filter(pk=alias_id).first()
    if alias is None:
        raise Http404
    return alias


def document_retention() -> DocumentRetention | None:
    """The active ministry's document retention (``None``: documents are kept until deleted)."""
    return DocumentRetention.objects.first()


# --- Local role grants (apps.accounts.local_roles) -----------------------------------------------


def member_local_grants(*, member: Membership) -> list[LocalRoleGrant]:
    """The member's unexpired local grants in the acting ministry (scoped manager + RLS)."""
    rows = LocalRoleGrant.objects.filter(user_id=member.user_id, expires_at__gt=timezone.now())
    return list(rows.select_related("granted_by"))


def get_local_grant_for_actor(*, actor: Membership, user_id: int, grant_id: int) -> LocalRoleGrant:
    """Security: a grant of another member or ministry is the same 404 as a missing one."""
    grant = LocalRoleGrant.objects.filter(pk=grant_id, user_id=user_id, ministry_id=actor.ministry_id).first()
    if not isinstance(grant, LocalRoleGrant):
        raise Http404
    return grant


def member_grant_policy(*, actor: Membership) -> GrantPolicy:
    return grant_policy(ministry_id=actor.ministry_id)
