"""Reads of ministries and memberships."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import User

from .models import Membership, Ministry


def membership_list_for_user(*, user: User) -> QuerySet[Membership]:
    """Active-ministry memberships of ``user``, in a stable order."""
    return (
        Membership.objects.filter(user=user, ministry__active=True)
        .select_related("ministry")
        .order_by("ministry_id")
    )


def membership_for_user(*, user: User, ministry_code: str | None) -> Membership | None:
    """The membership the user acts under.

    Security: the ministry is chosen only among the user's own memberships; a
    code the user is not a member of falls back to their first membership. Its
    roles are the SSO roles plus the member's unexpired local grants in *that*
    ministry (:mod:`apps.accounts.local_roles`).
    """
    from apps.accounts.local_roles import membership_apply_local_grants

    memberships = list(membership_list_for_user(user=user))
    if not memberships:
        return None
    chosen = memberships[0]
    for membership in memberships:
        if membership.ministry.code == ministry_code:
            chosen = membership
            break
    return membership_apply_local_grants(chosen)


def ministry_get_by_code(*, code: str) -> Ministry | None:
    return Ministry.objects.filter(code=code, active=True).first()
