"""What the identity provider says about an API key's creator, asked without a login.

A key stops working when its creator stops being the ministry's admin
(:func:`apps.gateway.services.api_keys_revoke_for_lost_admin`). Gennai learns
about a role change when the creator's claims are mapped again: at login, or
when a signed-in session's claims cache expires. A creator who was demoted in
Keycloak and never signs in again would leave the key working; the periodic
task :func:`apps.gateway.tasks.api_key_creators_recheck` therefore asks
Keycloak directly, through this module.

Ministry roles are read exactly as at login: the user's groups and effective
client roles go through :func:`apps.accounts.claims.role_grants_from_claims`,
so the answer can never differ from what a login would grant.
"""

from __future__ import annotations

from typing import Any, Protocol

from keycloak.exceptions import KeycloakGetError

from apps.accounts.claims import role_grants_from_claims
from apps.tenancy.models import Role

HTTP_NOT_FOUND = 404


class CreatorDirectory(Protocol):
    """MUST answer the ministry codes in which ``subject`` is a ministry admin right now.

    ``frozenset()`` means "admin nowhere" (also: the account is disabled or
    deleted); ``None`` means "cannot tell" (the caller then leaves the keys alone).
    """

    def admin_ministry_codes(self, subject: str) -> frozenset[str] | None: ...


class KeycloakDirectory:
    """:class:`CreatorDirectory` over Keycloak's admin API (python-keycloak ``KeycloakAdmin``)."""

    def __init__(self, admin: Any, *, client_id: str) -> None:
        self.admin = admin
        self.client_id = client_id
        self._client_uuid: str | None = None

    def _client_roles(self, subject: str) -> list[str]:
        if self._client_uuid is None:
            self._client_uuid = self.admin.get_client_id(self.client_id) or ""
        if not self._client_uuid:
            return []
        roles = self.admin.get_composite_client_roles_of_user(
            user_id=subject, client_id=self._client_uuid, brief_representation=True
        )
        return [str(role.get("name", "")) for role in roles]

    def admin_ministry_codes(self, subject: str) -> frozenset[str] | None:
        try:
            user = self.admin.get_user(subject)
        except KeycloakGetError as exc:
            if exc.response_code == HTTP_NOT_FOUND:
                return frozenset()  # deleted in the IdP: admin nowhere
            raise
        if not user.get("enabled", False):
            return frozenset()
        groups = self.admin.get_user_groups(user_id=subject, brief_representation=True)
        claims = {
            "groups": [str(group.get("path", "")) for group in groups],
            "resource_access": {self.client_id: {"roles": self._client_roles(subject)}},
        }
        grants = role_grants_from_claims(claims, client_id=self.client_id)
        return frozenset(code for code, roles in grants.ministries.items() if Role.MINISTRY_ADMIN in roles)
