"""OpenID Connect against Keycloak: login backend, token checks, logout.

Built on mozilla-django-oidc (code flow with PKCE S256 and nonce). We add the
checks it leaves out (issuer, audience, expiry) and map Keycloak's claims to
users and ministry memberships.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
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

logger = logging.getLogger("gennai.accounts")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
CLOCK_SKEW_SECONDS = 60


def _jwks_cache_key() -> str:
    return f"gennai:oidc:jwks:{settings.OIDC_OP_JWKS_ENDPOINT}"


def _jwks() -> dict[str, Any]:
    """The provider's JWKS, cached briefly (shared by login and back-channel logout)."""
    jwks = cache.get(_jwks_cache_key())
    if jwks is None:
        response = requests.get(settings.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        jwks = response.json()
        cache.set(_jwks_cache_key(), jwks, settings.GENNAI_OIDC_JWKS_CACHE_SECONDS)
    return dict(jwks)


def _matching_key(jwks: dict[str, Any], header: dict[str, Any]) -> jwt.PyJWK | None:
    for jwk in jwks.get("keys", []):
        if jwk.get("kid") == header.get("kid") and jwk.get("alg", header["alg"]) == header["alg"]:
            return jwt.PyJWK(jwk)
    return None


#: Where a token came from: each source has its own JWKS refetch budget.
FROM_TOKEN_ENDPOINT = "token-endpoint"  # noqa: S105  (our own back-end call to the IdP: login, refresh)
FROM_BACKCHANNEL = "backchannel"  # anyone can POST to the back-channel logout endpoint


def jwks_refetch_budget_key(source: str) -> str:
    """Cache key of the refetch budget of one token source."""
    return f"gennai:oidc:jwks-refetch:{source}:{settings.OIDC_OP_JWKS_ENDPOINT}"


def signing_key_for(token: str, *, source: str = FROM_TOKEN_ENDPOINT) -> jwt.PyJWK:
    """The JWKS key whose ``kid`` and ``alg`` match the token header.

    Security: a ``kid`` missing from the cached JWKS may be a key rotation, so
    the JWKS is fetched again, but at most once per
    ``GENNAI_OIDC_JWKS_REFETCH_SECONDS`` per token ``source`` (a cache-wide
    token taken with ``cache.add``, shared by all processes): a stream of tokens
    with invented ``kid`` values cannot make us hammer the IdP, and within that
    interval an unknown ``kid`` is refused without a fetch. The budgets are
    separate so that junk posted to the unauthenticated back-channel endpoint
    cannot use up the refetch that a real key rotation needs at login.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise SuspiciousOperation(f"token rejected: {exc}") from exc
    if header.get("alg") != settings.OIDC_RP_SIGN_ALGO:
        raise SuspiciousOperation("unexpected token algorithm")
    key = _matching_key(_jwks(), header)
    if key is not None:
        return key
    if not cache.add(jwks_refetch_budget_key(source), 1, timeout=settings.GENNAI_OIDC_JWKS_REFETCH_SECONDS):
        logger.warning("unknown signing key %r: JWKS refetched recently, refusing", header.get("kid"))
        raise SuspiciousOperation("no matching signing key")
    cache.delete(_jwks_cache_key())
    key = _matching_key(_jwks(), header)
    if key is None:
        raise SuspiciousOperation("no matching signing key")
    return key


def decode_provider_token(
    token: str, *, require: list[str], source: str = FROM_TOKEN_ENDPOINT
) -> dict[str, Any]:
    """Verify a provider-signed JWT: signature, issuer, audience, time claims, ``azp``.

    Security: rejects tokens signed by another key or algorithm, issued by
    another realm, meant for another client, expired, or not yet valid. An
    ``azp`` (authorized party) must be our client; a token for several
    audiences must carry one (OpenID Connect Core 1.0, 3.1.3.7 steps 4-5).
    """
    try:
        claims = dict(
            jwt.decode(
                token,
                signing_key_for(token, source=source),
                algorithms=[settings.OIDC_RP_SIGN_ALGO],
                audience=settings.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": require},
            )
        )
    except jwt.PyJWTError as exc:
        raise SuspiciousOperation(f"token rejected: {exc}") from exc
    audiences = claims.get("aud")
    if isinstance(audiences, list) and len(audiences) > 1 and "azp" not in claims:
        raise SuspiciousOperation("token rejected: several audiences and no azp")
    if "azp" in claims and claims["azp"] != settings.OIDC_RP_CLIENT_ID:
        raise SuspiciousOperation("token rejected: issued to another party (azp)")
    return claims


def verify_logout_token(token: str) -> dict[str, Any]:
    """Validate a back-channel logout token (OIDC Back-Channel Logout 1.0, 2.6).

    Security: signature/iss/aud as for ID tokens; ``iat``, ``exp`` and ``jti``
    are required; the token must be recent (``iat`` within
    ``GENNAI_OIDC_LOGOUT_TOKEN_MAX_AGE_SECONDS``); the logout event, a ``sub``
    or ``sid``, and no ``nonce`` (so an ID token cannot be replayed as a logout
    token). Each ``jti`` is accepted once: it is remembered in the cache until
    the token could no longer be accepted anyway (``exp``, or ``iat`` + max
    age, plus the clock skew), so a captured logout token cannot be replayed.
    """
    claims = decode_provider_token(
        token, require=["iss", "aud", "iat", "exp", "jti"], source=FROM_BACKCHANNEL
    )
    events = claims.get("events")
    if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
        raise SuspiciousOperation("logout token lacks the back-channel logout event")
    if not claims.get("sub") and not claims.get("sid"):
        raise SuspiciousOperation("logout token names neither sub nor sid")
    if "nonce" in claims:
        raise SuspiciousOperation("logout token must not contain a nonce")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise SuspiciousOperation("logout token has no usable jti")
    now = time.time()
    max_age = settings.GENNAI_OIDC_LOGOUT_TOKEN_MAX_AGE_SECONDS
    if float(claims["iat"]) < now - max_age - CLOCK_SKEW_SECONDS:
        raise SuspiciousOperation("logout token is too old")
    accept_until = min(float(claims["exp"]), float(claims["iat"]) + max_age) + CLOCK_SKEW_SECONDS
    jti_key = "gennai:oidc:logout-jti:" + hashlib.sha256(f"{claims['iss']}|{jti}".encode()).hexdigest()
    if not cache.add(jti_key, 1, timeout=max(1, math.ceil(accept_until - now))):
        raise SuspiciousOperation("logout token replayed (jti already used)")
    return claims


#: Request attribute where the backend leaves the token response for the callback view.
TOKENS_ATTR = "_gennai_oidc_tokens"
#: Request attribute where the backend names why a login failed (for the audit, no details).
LOGIN_FAILURE_ATTR = "_gennai_oidc_failure"


class KeycloakOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """Authenticates with Keycloak's ID token and syncs memberships from its claims."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        """Code flow; a token endpoint that refuses the code (e.g. a replayed one) fails the login."""
        try:
            return super().authenticate(request, **kwargs)  # type: ignore[no-any-return]
        except requests.HTTPError as exc:
            logger.warning("OIDC token request refused: %s", getattr(exc.response, "status_code", exc))
            if request is not None:
                setattr(request, LOGIN_FAILURE_ATTR, "token_error")
            return None

    def get_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Exchange the code; keep the refresh/access tokens for the session's record.

        They are stored server-side by :class:`apps.accounts.views.CallbackView`
        (``OIDCSession``), never in the browser.
        """
        token_info: dict[str, Any] = super().get_token(payload)
        if self.request is not None:
            setattr(self.request, TOKENS_ATTR, token_info)
        return token_info

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
