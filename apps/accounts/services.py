"""Writes for users, memberships and SSO sessions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.tenancy.models import Membership, Ministry, Team, TeamMembership, TeamSource
from apps.tenancy.scope import current_ministry_id, ministry_scope

from .claims import role_grants_from_claims, team_grants_from_claims
from .local_roles import grant_policy, grants_forget, sso_admins_among
from .models import LocalGrantPolicy, LocalRoleGrant, OIDCSession, User
from .session_store import SessionStore

logger = logging.getLogger("gennai.accounts")


@transaction.atomic
def user_sync_from_claims(*, claims: Mapping[str, Any], user: User | None = None) -> User:
    """Create or update the user of verified ID-token ``claims`` and their memberships.

    Security: memberships are replaced by exactly what the claims grant
    (:func:`apps.accounts.claims.role_grants_from_claims`): one membership per
    ministry the claims name, holding that ministry's own roles plus the
    platform-wide roles, so being admin in A never makes anyone admin in B. A
    user removed from a Keycloak group loses the ministry (or the role) the
    next time this runs: at login, and when the session's claims cache expires
    (:mod:`apps.accounts.recheck`). Groups naming unknown or inactive
    ministries grant nothing.
    """
    subject = str(claims["sub"])
    if user is None:
        user = User.objects.filter(subject=subject).first()
    username = str(claims.get("preferred_username") or subject)[:150]
    if user is None:
        base, n = username, 1
        while User.objects.filter(username=username).exists():
            n += 1
            username = f"{base[:140]}-{n}"
        user = User(subject=subject, username=username)
        user.set_unusable_password()
    user.email = str(claims.get("email") or "")[:254]
    user.first_name = str(claims.get("given_name") or "")[:150]
    user.last_name = str(claims.get("family_name") or "")[:150]
    user.display_name = str(claims.get("name") or username)[:150]
    user.save()

    grants = role_grants_from_claims(claims, client_id=settings.OIDC_RP_CLIENT_ID)
    if grants.ignored_realm_roles:
        logger.warning(
            "user %s: realm roles %s ignored (ministry roles come only from /ministries/<code>/... groups)",
            user.pk,
            sorted(grants.ignored_realm_roles),
        )
    codes = list(grants.ministries)
    before = set(Membership.objects.filter(user=user).values_list("ministry_id", flat=True))
    ministries = {m.code: m for m in Ministry.objects.filter(code__in=codes, active=True)}
    unknown = [c for c in codes if c not in ministries]
    if unknown:
        logger.warning("user %s: groups name unknown ministries %s", user.pk, unknown)
    keep: list[int] = []
    for code in codes:
        ministry = ministries.get(code)
        roles = grants.roles_in(code)
        if ministry is None or not roles:
            continue
        membership, _ = Membership.objects.update_or_create(
            user=user, ministry=ministry, defaults={"roles": roles}
        )
        keep.append(membership.pk)
    ended = list(
        Membership.objects.filter(user=user).exclude(pk__in=keep).values_list("ministry_id", flat=True)
    )
    removed, _ = Membership.objects.filter(user=user).exclude(pk__in=keep).delete()
    if removed:
        logger.info("user %s: %d membership(s) revoked by identity provider", user.pk, removed)
    for ministry_id in ended:
        local_grants_end_with_membership(user=user, ministry_id=ministry_id)
    teams = team_grants_from_claims(claims)
    member_of = {m.pk: m.code for m in ministries.values() if grants.roles_in(m.code)}
    for ministry_id in sorted(before | set(member_of)):
        # A ministry the user left keeps no SSO team membership (the code is absent: no teams).
        slugs = teams.get(member_of.get(ministry_id, ""), frozenset())
        with ministry_scope(ministry_id=ministry_id):
            team_memberships_sync_from_claims(user=user, ministry_id=ministry_id, codes=slugs)
    return user


def team_memberships_sync_from_claims(*, user: User, ministry_id: int, codes: frozenset[str]) -> None:
    """Make the user's SSO team memberships in the active ministry exactly ``codes``.

    Runs inside ``ministry_scope(ministry_id)``; both the ORM scope and RLS
    keep every read and write in that ministry, so a team group of ministry A
    can never create or join anything in B (invariant 9). Teams named for the
    first time are created (``source = sso``, name = the group's slug, which an
    admin may rename). Memberships an admin granted locally (``source = local``)
    are neither removed nor converted: the IdP only manages what it created.
    Every team created and every membership added or removed is audited, with
    no human actor (the identity provider made the change).
    """
    current = {tm.team.code: tm for tm in TeamMembership.objects.filter(user=user).select_related("team")}
    for code in sorted(codes - set(current)):
        team = Team.objects.filter(code=code).first()
        if team is None:
            team = Team.objects.create(code=code, name=code, source=TeamSource.SSO)
            audit_record(
                actor=None,
                action="team.create",
                target_type="team",
                target_id=team.pk,
                ministry_id=ministry_id,
                data={"code": code, "source": TeamSource.SSO},
            )
        membership = TeamMembership.objects.create(team=team, user=user, source=TeamSource.SSO)
        audit_record(
            actor=None,
            action="team.member_add",
            target_type="team_membership",
            target_id=membership.pk,
            ministry_id=ministry_id,
            data={"team": code, "user_id": user.pk, "source": TeamSource.SSO},
        )
    for code, membership in sorted(current.items()):
        if code in codes or membership.source != TeamSource.SSO:
            continue
        pk = membership.pk
        membership.delete()
        audit_record(
            actor=None,
            action="team.member_remove",
            target_type="team_membership",
            target_id=pk,
            ministry_id=ministry_id,
            data={"team": code, "user_id": user.pk, "source": TeamSource.SSO},
        )


def oidc_session_record(
    *, user: User, sid: str, session_key: str, refresh_token: str = "", access_token: str = ""
) -> OIDCSession:
    """Remember which Django session came from IdP session ``sid``, and its tokens (server-side)."""
    record, _ = OIDCSession.objects.update_or_create(
        session_key=session_key,
        defaults={
            "user": user,
            "sid": sid,
            "refresh_token": refresh_token,
            "access_token": access_token,
            "claims_checked_at": timezone.now(),
        },
    )
    return record


@transaction.atomic
def oidc_session_refresh(
    *, record: OIDCSession, claims: Mapping[str, Any], refresh_token: str, access_token: str
) -> User | None:
    """Apply claims the IdP just confirmed for a session: the rotated tokens and memberships.

    Security: ``claims`` must be verified and name the record's user (see
    :func:`apps.accounts.recheck.idp_refresh`); memberships are re-mapped with
    the same function as a login. Returns ``None`` (and changes nothing) when
    the session ended meanwhile, e.g. by a back-channel logout during the
    IdP round trip.
    """
    updated = OIDCSession.objects.filter(pk=record.pk).update(
        refresh_token=refresh_token, access_token=access_token, claims_checked_at=timezone.now()
    )
    if not updated:
        return None
    return user_sync_from_claims(claims=claims, user=record.user)


def oidc_session_forget(*, session_key: str) -> int:
    """Drop the token record of a Django session that has ended (logout, refused re-check)."""
    deleted, _ = OIDCSession.objects.filter(session_key=session_key).delete()
    return deleted


def sessions_sweep(*, now: datetime | None = None) -> tuple[int, int]:
    """Delete expired sessions and the token records of sessions that no longer exist.

    Django never deletes an expired database session by itself (``clearsessions``
    must be run), and an ``OIDCSession`` outlives its session when the session
    expires rather than ends by logout: without this both tables only grow, and
    the token records keep (encrypted) refresh tokens of sessions long over.
    Returns ``(sessions deleted, token records deleted)``.
    """
    model = SessionStore.get_model_class()
    sessions, _ = model.objects.filter(expire_date__lt=now or timezone.now()).delete()
    # Digest against digest: a subquery's values are not hashed again.
    orphans, _ = OIDCSession.objects.exclude(session_key__in=model.objects.values("session_key")).delete()
    return sessions, orphans


def sessions_end_for_logout_token(*, subject: str | None, sid: str | None) -> int:
    """End the Django sessions named by a verified back-channel logout token.

    With a ``sid``, only the sessions of that IdP session end; with only ``sub``,
    all of the user's sessions end (OIDC Back-Channel Logout 1.0, section 2.4).
    Returns the number of sessions ended.
    """
    records = OIDCSession.objects.all()
    if sid:
        records = records.filter(sid=sid)
        if subject:
            records = records.filter(user__subject=subject)
    elif subject:
        records = records.filter(user__subject=subject)
    else:
        return 0
    ended = 0
    from apps.audit.events import audit_logout_backchannel  # no request, so no logout signal

    for record in list(records.select_related("user")):
        # record.session_key is the stored digest (a StoredDigest): the session
        # store's lookup passes it unchanged and finds the session's row.
        SessionStore(session_key=record.session_key).delete()
        record.delete()
        audit_logout_backchannel(user=record.user, sid=record.sid)
        ended += 1
    return ended


# --- Local role grants (apps.accounts.local_roles) -----------------------------------------------

LOCAL_GRANT = "membership.local_grant"
LOCAL_REVOKE = "membership.local_revoke"
LOCAL_GRANT_POLICY = "membership.local_grant_policy"


def _forget_now_and_after_commit(*, ministry_id: int, user_id: int) -> None:
    # Now, and again after the commit: a request of the member that re-reads the
    # grants in between (before this transaction is visible) cannot keep the old state cached.
    grants_forget(ministry_id=ministry_id, user_id=user_id)
    transaction.on_commit(lambda: grants_forget(ministry_id=ministry_id, user_id=user_id))


def _is_sso_admin(*, user_id: int, ministry_id: int) -> bool:
    return user_id in sso_admins_among(ministry_id=ministry_id, user_ids={user_id})


@transaction.atomic
def local_role_grant(
    *, actor: User, ministry: Ministry, user: User, role: str, expires_at: datetime
) -> LocalRoleGrant:
    """Grant ``role`` to member ``user`` of ``ministry`` until ``expires_at`` (audited).

    Security: runs in ``ministry``'s scope (the console request's). The actor
    must hold ``ministry_admin`` *from the IdP* in this ministry (an admin by
    local grant cannot hand out further grants, so a grant chain cannot outlive
    the SSO admin who started it); nobody grants themself; the grantee must be
    a member (an SSO membership) of this ministry; the role must be grantable
    under the ministry's policy (never a platform role, ``ministry_admin`` only
    where the policy explicitly allows it); the expiry is mandatory, in the
    future and at most ``max_days`` ahead. Granting a role the member already
    has as a grant moves its expiry.
    """
    if current_ministry_id() != ministry.pk:
        raise ValidationError(_("府省庁の範囲外です。 / Outside the ministry's scope."))
    if not _is_sso_admin(user_id=actor.pk, ministry_id=ministry.pk):
        raise PermissionDenied(_("付与できるのは認証基盤で府省庁管理者の人だけです。"))
    if actor.pk == user.pk:
        raise ValidationError(
            _("自分自身に役割を付与することはできません。 / You cannot grant yourself a role.")
        )
    membership = Membership.objects.filter(user=user, ministry=ministry).first()
    if membership is None:
        raise ValidationError(_("この府省庁のメンバーではありません。"))
    policy = grant_policy(ministry_id=ministry.pk)
    if role not in policy.grantable_roles():
        raise ValidationError(_("この役割はこの府省庁のポリシーでは付与できません。"))
    if role in membership.roles:
        raise ValidationError(_("この役割は認証基盤からすでに付与されています。"))
    now = timezone.now()
    if expires_at <= now or expires_at > now + timedelta(days=policy.max_days):
        raise ValidationError(
            _("有効期限は今から%(days)d日以内の将来の日時にしてください。") % {"days": policy.max_days}
        )
    previous = (
        LocalRoleGrant.objects.filter(user=user, role=role).values_list("expires_at", flat=True).first()
    )
    grant: LocalRoleGrant
    grant, _created = LocalRoleGrant.objects.update_or_create(
        ministry=ministry, user=user, role=role, defaults={"expires_at": expires_at, "granted_by": actor}
    )
    audit_record(
        actor=actor,
        action=LOCAL_GRANT,
        target_type="membership",
        target_id=membership.pk,
        ministry_id=ministry.pk,
        data={
            "user_id": user.pk,
            "role": role,
            "expires_at": expires_at.isoformat(),
            "previous_expires_at": previous.isoformat() if previous else None,
        },
    )
    _forget_now_and_after_commit(ministry_id=ministry.pk, user_id=user.pk)
    return grant


def local_grants_end_with_membership(*, user: User, ministry_id: int) -> int:
    """Revoke the user's local grants in a ministry whose SSO membership just ended (audited).

    Security: a grant extends one SSO membership and never outlives it; left in
    place it would come back, role and all, the day the identity provider adds
    the person to the ministry again (as plain staff, say), up to its expiry.
    """
    with ministry_scope(ministry_id=ministry_id):
        grants = list(LocalRoleGrant.objects.filter(user=user))
        for grant in grants:
            local_role_revoke(actor=None, grant=grant, reason="membership_ended")
    return len(grants)


@transaction.atomic
def local_role_revoke(*, actor: User | None, grant: LocalRoleGrant, reason: str = "admin") -> None:
    """End a local grant now (audited); the member's next request no longer has the role."""
    ministry_id, user_id = grant.ministry_id, grant.user_id
    audit_record(
        actor=actor,
        action=LOCAL_REVOKE,
        target_type="local_role_grant",
        target_id=grant.pk,
        ministry_id=ministry_id,
        data={
            "user_id": user_id,
            "role": grant.role,
            "expires_at": grant.expires_at.isoformat(),
            "reason": reason,
        },
    )
    grant.delete()
    _forget_now_and_after_commit(ministry_id=ministry_id, user_id=user_id)


@dataclass(frozen=True)
class LocalGrantPolicyChange:
    """What :func:`local_grant_policy_set` did: the override now in force and the grants it revoked."""

    #: The ministry's override after the change (``None``: the platform setting applies).
    policy: LocalGrantPolicy | None
    #: Grants the new policy no longer allows, revoked by the change (each audited, reason ``policy``).
    revoked: int


@transaction.atomic
def local_grant_policy_set(
    *,
    ministry: Ministry,
    enabled: bool | None,
    allow_ministry_admin: bool = False,
    actor: User | None = None,
) -> LocalGrantPolicyChange:
    """Set (or with ``enabled=None`` remove) the ministry's override of the platform policy.

    Platform work: the console's platform page (``actor``: the platform admin)
    or ``manage.py local_grant_policy`` (``actor=None``: ``system``). Audited
    with that actor. Grants the new policy no longer allows are revoked at once
    (each audited, reason ``policy``, same actor), so turning the policy off
    takes effect on every member's next request. Authorisation is the caller's:
    ministry admins must never reach this (the policy limits them).
    """
    with ministry_scope(ministry_id=ministry.pk):
        before = LocalGrantPolicy.objects.filter(ministry=ministry).first()
        row: LocalGrantPolicy | None = None
        if enabled is None:
            if before is not None:
                before.delete()
        else:
            row, _created = LocalGrantPolicy.objects.update_or_create(
                ministry=ministry, defaults={"enabled": enabled, "allow_ministry_admin": allow_ministry_admin}
            )
        allowed = set(grant_policy(ministry_id=ministry.pk).grantable_roles())
        audit_record(
            actor=actor,
            action=LOCAL_GRANT_POLICY,
            target_type="ministry",
            target_id=ministry.pk,
            ministry_id=ministry.pk,
            data={
                "before": None if before is None else [before.enabled, before.allow_ministry_admin],
                "after": None if row is None else [row.enabled, row.allow_ministry_admin],
                "grantable_roles": sorted(allowed),
            },
        )
        revoked = 0
        for grant in LocalRoleGrant.objects.exclude(role__in=allowed):
            local_role_revoke(actor=actor, grant=grant, reason="policy")
            revoked += 1
    return LocalGrantPolicyChange(policy=row, revoked=revoked)
