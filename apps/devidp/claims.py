"""Keycloak-shaped claims for ID tokens and userinfo (``sub``, groups, roles, ``sid``)."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from oidc_provider.models import Token

from .models import AuthorizationCodeSession, DemoIdentity


def get_identity(user: Any) -> DemoIdentity:
    """Return the user's :class:`DemoIdentity`, creating a minimal one if missing.

    ``idp_seed`` creates identities (with deterministic subjects) for the demo
    users; any other user (e.g. a manual superuser) gets a random, stored UUID.
    """
    try:
        return user.demo_identity  # type: ignore[no-any-return]
    except DemoIdentity.DoesNotExist:
        pass
    full_name = f"{user.last_name} {user.first_name}".strip() or user.get_username()
    identity, _ = DemoIdentity.objects.get_or_create(
        user=user, defaults={"subject": uuid.uuid4(), "display_name": full_name}
    )
    return identity


def sub_generator(user: Any) -> str:
    """``OIDC_IDTOKEN_SUB_GENERATOR``: the identity's stable UUID."""
    return str(get_identity(user).subject)


def keycloak_claims(user: Any) -> dict[str, Any]:
    """Profile, email, ``groups`` and ``realm_access`` claims, as Keycloak emits them.

    ``groups`` are full paths, role subgroups included
    (``/ministries/digital/admins``); ``realm_access.roles`` holds only the
    platform-wide roles (see ``demo_users.py``). Both are read from the database
    on every token and userinfo request, refreshes included, so a change made
    at the IdP reaches the app at its next claims re-check.

    Keycloak applies its default client scopes (profile, email, roles, groups
    mapper) whatever ``scope`` was requested, so these do not depend on scope.
    Unset values are omitted, as Keycloak omits unset attributes.
    """
    identity = get_identity(user)
    name = identity.display_name or f"{user.last_name} {user.first_name}".strip()
    claims: dict[str, Any] = {
        "preferred_username": user.get_username(),
        "name": name or user.get_username(),
        "given_name": user.first_name,
        "family_name": user.last_name,
        "email": user.email,
        "email_verified": bool(user.email),
        "groups": list(identity.groups),
        "realm_access": {"roles": list(identity.realm_roles)},
    }
    return {key: value for key, value in claims.items() if value not in ("", None)}


def userinfo(claims: dict[str, Any], user: Any) -> dict[str, Any]:
    """``OIDC_USERINFO``: fill django-oidc-provider's standard claims dict."""
    claims.update(keycloak_claims(user))
    return claims


def resolve_sid(request: HttpRequest | None) -> str | None:
    """Find the IdP session id (``sid``) that an ID token is being issued for.

    * token endpoint, ``authorization_code``: the session recorded with the code;
    * token endpoint, ``refresh_token``: the ``sid`` of the token being refreshed;
    * otherwise (implicit/hybrid at the authorize endpoint): the browser session.
    """
    if request is None:
        return None
    grant_type = request.POST.get("grant_type", "") if request.method == "POST" else ""
    if grant_type == "authorization_code":
        link = (
            AuthorizationCodeSession.objects.select_related("idp_session")
            .filter(code=request.POST.get("code", ""))
            .first()
        )
        if link is None:
            return None
        sid = str(link.idp_session.sid)
        link.delete()  # single use, like the code itself
        return sid
    if grant_type == "refresh_token":
        old = Token.objects.filter(refresh_token=request.POST.get("refresh_token", "")).first()
        old_claims = (old.id_token or {}) if old is not None else {}
        old_sid = old_claims.get("sid")
        return str(old_sid) if old_sid else None
    from .services import current_sid  # local import: services imports this module

    return current_sid(request)


def idtoken_processing_hook(
    id_token: dict[str, Any],
    user: Any,
    token: Token | None = None,
    request: HttpRequest | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``OIDC_IDTOKEN_PROCESSING_HOOK``: add Keycloak's claims to the ID token.

    Adds ``typ``/``azp``/``acr`` like Keycloak, the profile/email/groups/roles
    claims and ``sid`` (the IdP login session).
    """
    id_token["typ"] = "ID"
    id_token["azp"] = id_token.get("aud")
    id_token["acr"] = "1"
    id_token.update(keycloak_claims(user))
    sid = resolve_sid(request)
    if sid:
        id_token["sid"] = sid
    return id_token
