"""Pure mapping from Keycloak token claims to per-ministry roles (DESIGN invariant 9).

A ministry role comes only from a claim that names that ministry:

* the ``groups`` claim (full paths):

  - ``/ministries/<code>`` (or any subgroup that is not a role subgroup, e.g. a
    team ``/ministries/<code>/team-a``): ``staff`` of that ministry;
  - ``/ministries/<code>/admins``: ``ministry_admin`` of that ministry;
  - ``/ministries/<code>/procurement``: ``procurement_officer`` (with a home
    ministry);
  - ``/ministries/<code>/auditors``: ``ministry_auditor`` of that ministry;
  - a subgroup below a role subgroup (``/ministries/<code>/admins/x``) holds
    that role too, as Keycloak subgroups inherit their parent's role mappings;
  - ``/ministries/<code>/teams/<slug>``: ``staff`` of that ministry and a
    member of its team ``<slug>`` (:func:`team_grants_from_claims`); a subgroup
    below a team (``…/teams/<slug>/x``) is a unit of that team and counts as
    the team;

* client roles of our client, ``resource_access.<client_id>.roles``, named
  ``<code>:<role>`` (e.g. ``digital:ministry_admin``).

Realm roles (``realm_access.roles``) grant only the platform-wide roles
(:data:`PLATFORM_ROLES`); a realm role ``ministry_admin`` or ``staff`` grants
nothing, because it would make its holder admin of every ministry they belong
to. Being admin in A therefore never makes anyone admin in B.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apps.tenancy.models import Role

MINISTRY_GROUP_PREFIX = "/ministries/"
#: Subgroup of ``/ministries/<code>`` whose children are the ministry's teams.
TEAMS_SUBGROUP = "teams"
#: A team code as stored in ``Team.code`` (a Unicode slug: Keycloak group names may be Japanese).
TEAM_CODE = re.compile(r"^[-\w]{1,64}\Z")

#: Subgroup name under ``/ministries/<code>`` → the ministry role it grants.
ROLE_SUBGROUPS: dict[str, str] = {
    "admins": Role.MINISTRY_ADMIN.value,
    "procurement": Role.PROCUREMENT_OFFICER.value,
    "auditors": Role.MINISTRY_AUDITOR.value,
}
#: Roles that may come from a claim scoped to one ministry (group or client role).
MINISTRY_ROLES: frozenset[str] = frozenset(
    {
        Role.STAFF.value,
        Role.MINISTRY_ADMIN.value,
        Role.MINISTRY_AUDITOR.value,
        Role.PROCUREMENT_OFFICER.value,
    }
)
#: Roles that may come from a realm role; they are platform-wide by nature.
PLATFORM_ROLES: frozenset[str] = frozenset(
    {Role.PLATFORM_ADMIN.value, Role.AUDITOR.value, Role.PROCUREMENT_OFFICER.value}
)


@dataclass(frozen=True)
class RoleGrants:
    """What verified claims grant: roles per ministry code, and platform-wide roles.

    ``ministries`` keeps the order in which the claims name the ministries; a
    ministry is present iff some claim scoped to it exists (the user is a member).
    """

    ministries: dict[str, frozenset[str]] = field(default_factory=dict)
    platform_roles: frozenset[str] = frozenset()
    ignored_realm_roles: frozenset[str] = frozenset()

    def roles_in(self, code: str) -> list[str]:
        """The sorted roles of the membership in ``code``: its own plus the platform roles."""
        return sorted(self.ministries.get(code, frozenset()) | self.platform_roles)


def _add(grants: dict[str, set[str]], code: str, role: str) -> None:
    if code:
        grants.setdefault(code, set()).add(role)


def _group_grants(claims: Mapping[str, Any], grants: dict[str, set[str]]) -> None:
    groups = claims.get("groups")
    if not isinstance(groups, list):
        return
    for group in groups:
        if not isinstance(group, str) or not group.startswith(MINISTRY_GROUP_PREFIX):
            continue
        parts = group[len(MINISTRY_GROUP_PREFIX) :].split("/")
        code = parts[0]
        if len(parts) > 1 and parts[1] in ROLE_SUBGROUPS:
            _add(grants, code, ROLE_SUBGROUPS[parts[1]])
        else:
            _add(grants, code, Role.STAFF.value)


def _client_role_grants(claims: Mapping[str, Any], client_id: str, grants: dict[str, set[str]]) -> None:
    resource_access = claims.get("resource_access")
    if not isinstance(resource_access, Mapping):
        return
    client = resource_access.get(client_id)
    roles = client.get("roles") if isinstance(client, Mapping) else None
    if not isinstance(roles, list):
        return
    for entry in roles:
        if not isinstance(entry, str) or ":" not in entry:
            continue
        code, _, role = entry.partition(":")
        if role in MINISTRY_ROLES:
            _add(grants, code, role)


def _realm_roles(claims: Mapping[str, Any]) -> list[str]:
    realm_access = claims.get("realm_access")
    roles = realm_access.get("roles") if isinstance(realm_access, Mapping) else None
    if not isinstance(roles, list):
        return []
    return [r for r in roles if isinstance(r, str)]


def role_grants_from_claims(claims: Mapping[str, Any], *, client_id: str) -> RoleGrants:
    """Map verified ID-token/userinfo ``claims`` to :class:`RoleGrants`.

    Security: a ministry role is granted only by a group under
    ``/ministries/<code>`` or a client role ``<code>:<role>`` of ``client_id``
    (never another client's roles); realm roles grant only
    :data:`PLATFORM_ROLES`, and realm roles that look like ministry roles are
    reported in ``ignored_realm_roles`` instead of being granted.
    """
    grants: dict[str, set[str]] = {}
    _group_grants(claims, grants)
    _client_role_grants(claims, client_id, grants)
    realm = set(_realm_roles(claims))
    platform = frozenset(realm & PLATFORM_ROLES)
    ignored = frozenset((realm & set(Role.values)) - PLATFORM_ROLES)
    return RoleGrants(
        ministries={code: frozenset(roles) for code, roles in grants.items()},
        platform_roles=platform,
        ignored_realm_roles=ignored,
    )


def ministry_codes_from_claims(claims: Mapping[str, Any]) -> list[str]:
    """Ministry codes named by the ``groups`` claim (any path under ``/ministries/<code>``)."""
    grants: dict[str, set[str]] = {}
    _group_grants(claims, grants)
    return list(grants)


def team_grants_from_claims(claims: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Team codes per ministry code named by ``groups`` (``/ministries/<code>/teams/<slug>``).

    Security (invariant 9): a team is always read *under* the ministry the
    group path names, so ``/ministries/a/teams/x`` can only ever make its
    holder a member of team ``x`` of ministry ``a``; another ministry's team
    with the same slug is a different team. Only the ``groups`` claim names
    teams (client and realm roles never do). Slugs that are not a valid team
    code (empty, too long, characters other than letters, digits, ``-`` and
    ``_``) are ignored rather than mangled into another team's code.
    """
    teams: dict[str, set[str]] = {}
    groups = claims.get("groups")
    if not isinstance(groups, list):
        return {}
    for group in groups:
        if not isinstance(group, str) or not group.startswith(MINISTRY_GROUP_PREFIX):
            continue
        parts = group[len(MINISTRY_GROUP_PREFIX) :].split("/")
        if len(parts) < 3 or not parts[0] or parts[1] != TEAMS_SUBGROUP:
            continue
        if TEAM_CODE.match(parts[2]):
            teams.setdefault(parts[0], set()).add(parts[2])
    return {code: frozenset(slugs) for code, slugs in teams.items()}
