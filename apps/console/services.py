"""Writes of the console: announcements (and their per-ministry digest), and the ministry
console's teams, model allowlist and document retention.

Every change a human makes here runs in a transaction and writes an audit row
(:func:`apps.audit.services.audit_record`), directly or through the owning app's
service (registry grants, quota limits).
"""

from __future__ import annotations

from typing import TypedDict

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.accounts.models import User
from apps.audit.services import audit_record
from apps.documents.models import DocumentRetention
from apps.quotas.budget_models import Limit
from apps.quotas.limits import limit_delete
from apps.registry.models import Alias, AliasGrant
from apps.registry.services import alias_grant, alias_revoke
from apps.tenancy.models import Membership, Ministry, Team, TeamMembership, TeamSource
from apps.tenancy.scope import ScopeError, current_ministry_id

from .models import Announcement


@transaction.atomic
def announcement_create(*, actor: User | None, ministry: Ministry, title: str, body: str) -> Announcement:
    """Post an announcement to ``ministry`` (must be the active scope)."""
    announcement = Announcement(ministry=ministry, author=actor, title=title, body=body)
    announcement.full_clean()
    announcement.save()
    return announcement


# --- Announcement digest (background, per ministry) -------------------------

ANNOUNCEMENT_DIGEST_CACHE_SECONDS = 60 * 60


class AnnouncementDigestItem(TypedDict):
    """One announcement in a digest: id, title and ISO 8601 creation time."""

    id: int
    title: str
    created_at: str


class AnnouncementDigest(TypedDict):
    """What :func:`announcement_digest_refresh` stores and returns."""

    ministry_id: int
    total: int
    latest: list[AnnouncementDigestItem]
    generated_at: str


def announcement_digest_cache_key(ministry_id: int) -> str:
    """Cache key of ``ministry_id``'s digest: one key per ministry, never shared."""
    return f"gennai:console:announcement-digest:{ministry_id}"


def announcement_digest_refresh(*, limit: int = 10) -> AnnouncementDigest:
    """Summarise the active ministry's announcements and cache the summary.

    Runs in the active ministry scope (e.g. from the ``announcement_digest_refresh``
    Celery task), so the count and titles are those of that ministry only: the
    scoped manager filters the query and RLS filters it again in the database.
    The digest goes to the Django cache under :func:`announcement_digest_cache_key`
    for the home page and is also returned.

    Raises :class:`~apps.tenancy.scope.ScopeError` without an active scope.
    """
    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("announcement_digest_refresh needs an active ministry scope")
    latest = Announcement.objects.order_by("-created_at", "-id").values("id", "title", "created_at")[:limit]
    digest: AnnouncementDigest = {
        "ministry_id": ministry_id,
        "total": Announcement.objects.count(),
        "latest": [
            {"id": row["id"], "title": row["title"], "created_at": row["created_at"].isoformat()}
            for row in latest
        ],
        "generated_at": timezone.now().isoformat(),
    }
    cache.set(announcement_digest_cache_key(ministry_id), digest, ANNOUNCEMENT_DIGEST_CACHE_SECONDS)
    return digest


# --- Ministry console: teams, model allowlist, retention ------------------------------------


def _check_active(ministry: Ministry) -> None:
    """Security: a console write may only touch the active scope's ministry.

    Views pass the acting membership's ministry, which is the active scope; this
    refuses any caller that would mix the two (the scoped manager and RLS would
    refuse the rows anyway, this makes it a clear error instead of a silent no-op).
    """
    if current_ministry_id() != ministry.pk:
        raise ScopeError("console writes need the ministry's own active scope")


_LOCK_CLASS = 0x6363_6F6E  # "ccon": pg_advisory_xact_lock(class, ministry id) of these console writes


def _serialise(ministry: Ministry) -> None:
    """Run one of the ministry's check-then-insert writes at a time, until the commit.

    Two admins (or one form sent twice) creating the same team, adding the same
    member or setting the first retention at once would both pass the "does it
    exist?" check and both insert: the second hit the unique constraint (a 500).
    Under this lock the second waits for the first's commit and then gets the
    ordinary answer (the same error as when it comes later, or the update).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, ministry.pk])


@transaction.atomic
def team_create(*, actor: User, ministry: Ministry, code: str, name: str) -> Team:
    """Create a local team (``source = local``) in ``ministry``; codes are unique per ministry."""
    _check_active(ministry)
    _serialise(ministry)
    if Team.objects.filter(code=code).exists():
        raise ValidationError({"code": _("このコードのチームは既にあります。")})
    team = Team(ministry=ministry, code=code, name=name, source=TeamSource.LOCAL)
    team.full_clean()
    team.save()
    audit_record(
        actor=actor,
        action="team.create",
        target_type="team",
        target_id=team.pk,
        ministry_id=ministry.pk,
        data={"code": code, "name": name, "source": TeamSource.LOCAL},
    )
    return team


@transaction.atomic
def team_rename(*, actor: User, ministry: Ministry, team: Team, name: str) -> Team:
    """Change a team's display name. Allowed for SSO teams too: the IdP owns only the code."""
    _check_active(ministry)
    previous = team.name
    team.name = name
    team.full_clean()
    team.save(update_fields=["name"])
    audit_record(
        actor=actor,
        action="team.rename",
        target_type="team",
        target_id=team.pk,
        ministry_id=ministry.pk,
        data={"code": team.code, "from": previous, "to": name},
    )
    return team


@transaction.atomic
def team_delete(*, actor: User, ministry: Ministry, team: Team) -> None:
    """Delete a local team with its memberships and limits. SSO teams belong to the IdP and are refused.

    The team's limit rows are removed through :func:`apps.quotas.limits.limit_delete`
    first (each audited, and the limits cache version bumped), rather than left to
    the foreign key's cascade, which would change admission silently.
    """
    _check_active(ministry)
    if team.source != TeamSource.LOCAL:
        raise ValidationError(_("SSO のチームは IdP で管理されているため削除できません。"))
    for limit_id in Limit.objects.filter(team=team).values_list("pk", flat=True):
        limit_delete(actor=actor, limit_id=limit_id)
    pk, code = team.pk, team.code
    members = list(team.memberships.values_list("user_id", flat=True))
    team.delete()
    audit_record(
        actor=actor,
        action="team.delete",
        target_type="team",
        target_id=pk,
        ministry_id=ministry.pk,
        data={"code": code, "members": members},
    )


@transaction.atomic
def team_member_add(*, actor: User, ministry: Ministry, team: Team, user: User) -> TeamMembership:
    """Add ``user`` to ``team`` as a local membership (the IdP sync never removes those).

    Security: ``user`` must be a member of the team's ministry. Forms offer only
    such users, but a posted id is re-checked here, where every caller passes.
    """
    _check_active(ministry)
    if team.ministry_id != ministry.pk:
        raise ScopeError("team of another ministry")
    _serialise(ministry)
    if not Membership.objects.filter(user=user, ministry=ministry).exists():
        raise ValidationError({"user": _("この府省庁のメンバーではない利用者は追加できません。")})
    if TeamMembership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"user": _("この利用者は既にチームのメンバーです。")})
    row: TeamMembership = TeamMembership.objects.create(
        ministry=ministry, team=team, user=user, source=TeamSource.LOCAL
    )
    audit_record(
        actor=actor,
        action="team.member_add",
        target_type="team_membership",
        target_id=row.pk,
        ministry_id=ministry.pk,
        data={"team": team.code, "user_id": user.pk, "source": TeamSource.LOCAL},
    )
    return row


@transaction.atomic
def team_member_remove(*, actor: User, ministry: Ministry, team_membership: TeamMembership) -> None:
    """Remove a local team membership. SSO memberships follow the IdP and are refused."""
    _check_active(ministry)
    if team_membership.source != TeamSource.LOCAL:
        raise ValidationError(_("SSO で付与されたチーム所属は IdP で管理されているため削除できません。"))
    pk, user_id, code = team_membership.pk, team_membership.user_id, team_membership.team.code
    team_membership.delete()
    audit_record(
        actor=actor,
        action="team.member_remove",
        target_type="team_membership",
        target_id=pk,
        ministry_id=ministry.pk,
        data={"team": code, "user_id": user_id, "source": TeamSource.LOCAL},
    )


def ministry_alias_allow(*, actor: User, ministry: Ministry, alias: Alias) -> AliasGrant:
    """Allow the ministry's staff and keys to use ``alias`` (registry service: audited, snapshot bumped)."""
    _check_active(ministry)
    return alias_grant(actor=actor, ministry=ministry, alias=alias)


def ministry_alias_disallow(*, actor: User, ministry: Ministry, alias: Alias) -> bool:
    """Withdraw ``alias`` from the ministry.

    The registry service deletes the grant and bumps the routing snapshot's
    version in the same transaction (:mod:`apps.tenancy.versions`), so every
    process's router stops offering the alias within a second (invariant 11).
    """
    _check_active(ministry)
    return alias_revoke(actor=actor, ministry=ministry, alias=alias)


@transaction.atomic
def document_retention_set(*, actor: User, ministry: Ministry, days: int | None) -> DocumentRetention | None:
    """Set how many days the ministry keeps uploaded documents; ``None`` keeps them until deleted.

    The daily ``documents.retention_sweep`` applies it.
    """
    _check_active(ministry)
    _serialise(ministry)
    current = DocumentRetention.objects.select_for_update().first()
    previous = current.days if current else None
    if days is None:
        if current is not None:
            current.delete()
        result = None
    else:
        if current is None:
            current = DocumentRetention(ministry=ministry, days=days)
        current.days = days
        current.full_clean()
        current.save()
        result = current
    audit_record(
        actor=actor,
        action="documents.retention_set",
        target_type="ministry",
        target_id=ministry.pk,
        ministry_id=ministry.pk,
        data={"from": previous, "to": days},
    )
    return result
