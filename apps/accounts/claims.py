"""Pure mapping from Keycloak token claims to ministries and roles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apps.tenancy.models import Role

MINISTRY_GROUP_PREFIX = "/ministries/"


def ministry_codes_from_claims(claims: Mapping[str, Any]) -> list[str]:
    """Ministry codes from the ``groups`` claim (``/ministries/<code>``).

    Sub-groups (``/ministries/digital/team``) count as their ministry; anything
    else in ``groups`` is ignored. Order is kept, duplicates dropped.
    """
    groups = claims.get("groups") or []
    if not isinstance(groups, list):
        return []
    codes: list[str] = []
    for group in groups:
        if not isinstance(group, str) or not group.startswith(MINISTRY_GROUP_PREFIX):
            continue
        code = group[len(MINISTRY_GROUP_PREFIX) :].split("/", 1)[0]
        if code and code not in codes:
            codes.append(code)
    return codes


def roles_from_claims(claims: Mapping[str, Any]) -> list[str]:
    """Known platform roles from ``realm_access.roles``; unknown roles are ignored."""
    realm_access = claims.get("realm_access") or {}
    roles = realm_access.get("roles") if isinstance(realm_access, Mapping) else None
    if not isinstance(roles, list):
        return []
    known = set(Role.values)
    return sorted({r for r in roles if isinstance(r, str) and r in known})
