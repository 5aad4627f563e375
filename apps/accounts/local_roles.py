"""Local role grants: who may grant what, and the effective roles of each request.

Roles come from the identity provider (``Membership.roles``, synced from the
claims at login and at every claims re-check). Where the policy allows, a
ministry admin may *add* a ministry role to a member of their ministry for a
limited period (:class:`~apps.accounts.models.LocalRoleGrant`). What this
module guarantees:

* **Policy.** ``GENNAI_LOCAL_ROLE_GRANTS`` (platform, default off) or the
  ministry's :class:`~apps.accounts.models.LocalGrantPolicy` (set by the
  platform team) decides whether grants exist at all. Grantable:
  ``ministry_auditor`` (never ``procurement_officer``); ``ministry_admin`` only where
  the policy says so explicitly; ``staff`` and the platform roles never.
* **Effective roles** = SSO roles ∪ the unexpired grants the policy allows, on
  the *active* membership only (:func:`membership_apply_local_grants`, called
  by :func:`apps.tenancy.selectors.membership_for_user` on every request). A
  grant in A never adds anything in B; a grant without an SSO membership adds
  nothing; an expired grant stops counting on the first request after
  ``expires_at`` (the expiry is compared on every request, also when cached).
* **Grantor.** A grant counts only while the admin who made it still holds
  ``ministry_admin`` *from the IdP* in that ministry (the same rule as API
  keys, whose creator must stay an admin): when the IdP demotes or removes the
  grantor, every grant they made stops counting within ``CACHE_SECONDS``, and
  a grant whose grantor was deleted counts for nothing. Another SSO admin
  re-grants what should stay.
* **Cost.** The grants of (ministry, user) are cached for at most
  ``CACHE_SECONDS``; every grant, revoke and policy change deletes the entry,
  so a change applies on the member's next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from apps.tenancy.models import Role
from apps.tenancy.scope import ministry_scope

#: Roles a local grant may ever give (ministry_admin additionally needs the policy's consent).
#: Not ``procurement_officer``: the registry and procurement evaluation it opens are
#: platform-wide and read the IdP's roles only, so a local grant of it could do nothing
#: (and must never be made to: it would let a ministry admin hand out platform powers).
GRANTABLE_ROLES: tuple[str, ...] = (Role.MINISTRY_AUDITOR.value,)
CACHE_SECONDS = 60
DEFAULT_MAX_DAYS = 90


@dataclass(frozen=True)
class GrantPolicy:
    """The local-grant policy in force for one ministry."""

    enabled: bool
    allow_ministry_admin: bool
    max_days: int

    def grantable_roles(self) -> tuple[str, ...]:
        """Security: never staff (membership already is), never a platform role."""
        if not self.enabled:
            return ()
        if self.allow_ministry_admin:
            return (Role.MINISTRY_ADMIN.value, *GRANTABLE_ROLES)
        return GRANTABLE_ROLES


def _platform_policy() -> dict[str, Any]:
    return dict(getattr(settings, "GENNAI_LOCAL_ROLE_GRANTS", {}) or {})


def grant_policy(*, ministry_id: int) -> GrantPolicy:
    """The ministry's override if it has one, else the platform setting (needs the ministry's scope)."""
    from .models import LocalGrantPolicy

    platform = _platform_policy()
    max_days = int(platform.get("max_days", DEFAULT_MAX_DAYS))
    row = LocalGrantPolicy.objects.filter(ministry_id=ministry_id).first()
    if row is not None:
        return GrantPolicy(row.enabled, row.allow_ministry_admin, max_days)
    return GrantPolicy(
        bool(platform.get("enabled", False)), bool(platform.get("allow_ministry_admin", False)), max_days
    )


def grants_cache_key(*, ministry_id: int, user_id: int) -> str:
    return f"gennai:local-grants:{ministry_id}:{user_id}"


def grants_forget(*, ministry_id: int, user_id: int) -> None:
    """Drop the cached grants of (ministry, user): the member's next request reads them anew."""
    cache.delete(grants_cache_key(ministry_id=ministry_id, user_id=user_id))


def _now() -> datetime:
    return timezone.now()


def sso_admins_among(*, ministry_id: int, user_ids: set[int]) -> set[int]:
    """Security: those of ``user_ids`` who hold ``ministry_admin`` from the IdP in ``ministry_id`` now.

    Reads ``Membership.roles`` (what the IdP sync wrote), never the effective
    roles, so an admin by local grant does not keep anyone's grant alive.
    """
    if not user_ids:
        return set()
    from apps.tenancy.models import Membership

    return set(
        Membership.objects.filter(
            user_id__in=user_ids, ministry_id=ministry_id, roles__contains=[Role.MINISTRY_ADMIN.value]
        ).values_list("user_id", flat=True)
    )


def _load(*, ministry_id: int, user_id: int) -> dict[str, Any]:
    from .models import LocalRoleGrant

    now = _now()
    with ministry_scope(ministry_id=ministry_id):
        rows = list(
            LocalRoleGrant.objects.filter(user_id=user_id, expires_at__gt=now).values_list(
                "role", "expires_at", "granted_by_id"
            )
        )
        # Most members hold no grant: the policy and the grantors are read only for those who do.
        allowed = set(grant_policy(ministry_id=ministry_id).grantable_roles()) if rows else set()
        grantors = (
            sso_admins_among(ministry_id=ministry_id, user_ids={g for _r, _e, g in rows if g})
            if rows
            else set()
        )
    grants = [
        [role, expires_at.timestamp()]
        for role, expires_at, granted_by in rows
        if role in allowed and granted_by in grantors
    ]
    entry = {"grants": grants}
    # Never cached past the soonest expiry (it is also compared on every read).
    seconds = min([CACHE_SECONDS, *(expires - now.timestamp() for _role, expires in grants)])
    if seconds >= 1:
        cache.set(grants_cache_key(ministry_id=ministry_id, user_id=user_id), entry, timeout=int(seconds))
    return entry


def local_roles_of(*, ministry_id: int, user_id: int) -> list[str]:
    """The unexpired, allowed local roles of ``user_id`` in ``ministry_id`` (sorted)."""
    entry = cache.get(grants_cache_key(ministry_id=ministry_id, user_id=user_id))
    if not isinstance(entry, dict):
        entry = _load(ministry_id=ministry_id, user_id=user_id)
    now = _now().timestamp()
    return sorted({str(role) for role, expires in entry.get("grants", []) if float(expires) > now})


def membership_apply_local_grants(membership: Any) -> Any:
    """Add the active local grants to ``membership.roles`` (in memory, for this request only).

    ``membership.sso_roles`` keeps what the IdP granted and
    ``membership.local_roles`` what the grants added, for display. The row in
    the database is never changed: the IdP sync stays the only writer of
    ``Membership.roles``.
    """
    sso = list(membership.roles)
    local = [
        r
        for r in local_roles_of(ministry_id=membership.ministry_id, user_id=membership.user_id)
        if r not in sso
    ]
    membership.sso_roles = sso
    membership.local_roles = local
    if local:
        membership.roles = sorted({*sso, *local})
    return membership
