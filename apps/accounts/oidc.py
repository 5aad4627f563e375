"""OpenID Connect against Keycloak: login backend, token checks, logout.

Built on mozilla-django-oidc (code flow with PKCE S256 and nonce). We add the
checks it leaves out (issuer, audience, expiry) and map Keycloak's claims to
users and ministry memberships.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .models import User
from .services import user_sync_from_claims

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
CLOCK_SKEW_SECONDS = 60


def _jwks() -> dict[str, Any]:
    """The provider's JWKS, cached briefly (shared by login and back-channel logout)."""
    key = f"gennai:oidc:jwks:{settings.OIDC_OP_JWKS_ENDPOINT}"
    jwks = cache.get(key)
    if jwks is None:
        response = requests.get(settings.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        jwks = response.json()
        cache.set(key, jwks, settings.GENNAI_OIDC_JWKS_CACHE_SECONDS)
    return dict(jwks)


def signing_key_for(token: str) -> jwt.PyJWK:
    """The JWKS key whose ``kid`` and ``alg`` match the token header."""
    header = jwt.get_unverified_header(token)
    if header.get("alg") != settings.OIDC_RP_SIGN_ALGO:
        raise SuspiciousOperation("unexpected token algorithm")
    for refresh in (False, True):
        if refresh:
            cache.delete(f"gennai:oidc:jwks:{settings.OIDC_OP_JWKS_ENDPOINT}")
        for jwk in _jwks().get("keys", []):
            if jwk.get("kid") == header.get("kid") and jwk.get("alg", header["alg"]) == header["alg"]:
                return jwt.PyJWK(jwk)
    raise SuspiciousOperation("no matching signing key")


def decode_provider_token(token: str, *, require: list[str]) -> dict[str, Any]:
    """Verify a provider-signed JWT: signature, issuer, audience, time claims.

    Security: rejects tokens signed by another key or algorithm, issued by
    another realm, meant for another client, expired, or not yet valid.
    """
    try:
        return dict(
            jwt.decode(
                token,
                signing_key_for(token),
                algorithms=[settings.OIDC_RP_SIGN_ALGO],
                audience=settings.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": require},
            )
        )
    except jwt.PyJWTError as exc:
        raise SuspiciousOperation(f"token rejected: {exc}") from exc


def verify_logout_token(token: str) -> dict[str, Any]:
    """Validate a back-channel logout token (OIDC Back-Channel Logout 1.0, 2.6).

    Security: signature/iss/aud/iat as for ID tokens, plus the logout event, a
    ``sub`` or ``sid``, and no ``nonce`` (so an ID token cannot be replayed as a
    logout token).
    """
    claims = decode_provider_token(token, require=["iss", "aud", "iat"])
    events = claims.get("events")
    if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
        raise SuspiciousOperation("logout token lacks the back-channel logout event")
    if not claims.get("sub") and not claims.get("sid"):
        raise SuspiciousOperation("logout token names neither sub nor sid")
    if "nonce" in claims:
        raise SuspiciousOperation("logout token must not contain a nonce")
    return claims


class KeycloakOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """Authenticates with Keycloak's ID token and syncs memberships from its claims."""

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Security: full ID-token validation, then the nonce bound to this login."""
        payload = decode_provider_token(token, require=["iss", "aud", "exp", "iat", "sub"])
        if settings.OIDC_USE_NONCE and kwargs.get("nonce") != payload.get("nonce"):
            raise SuspiciousOperation("JWT nonce verification failed")
        if self.request is not None:
            # Remember the IdP session so a back-channel logout can end ours.
            self.request.session["oidc_sid"] = str(payload.get("sid") or "")
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        # The verified ID token carries everything we need (Keycloak mappers put
        # groups and realm roles in it); skip the userinfo round trip.
        return payload

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return User.objects.filter(subject=str(claims["sub"]))

    def create_user(self, claims: dict[str, Any]) -> User:
        return user_sync_from_claims(claims=claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        return user_sync_from_claims(claims=claims, user=user)

    def get_user(self, user_id: int) -> User | None:
        return User.objects.filter(pk=user_id, is_active=True).first()


def provider_logout_url(request: HttpRequest) -> str:
    """RP-initiated logout: Keycloak's end-session URL with ``id_token_hint``."""
    params = {
        "client_id": settings.OIDC_RP_CLIENT_ID,
        "post_logout_redirect_uri": request.build_absolute_uri(reverse("home")),
    }
    id_token = request.session.get("oidc_id_token")
    if id_token:
        params["id_token_hint"] = id_token
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}?{urlencode(params)}"
