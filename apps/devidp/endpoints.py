"""django-oidc-provider endpoints adjusted to behave like Keycloak's.

* authorize: PKCE with ``S256`` is required (Keycloak client policy
  ``pkce.code.challenge.method=S256``); the IdP session's ``sid`` is recorded
  with each issued code so that the token endpoint can put it in the ID token;
* token: ``token_type: "Bearer"``, ``scope`` and ``session_state`` in responses;
* userinfo: the same Keycloak-shaped claims as the ID token, whatever the scope;
* discovery: Keycloak's metadata (back-channel logout, PKCE, claims, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from oidc_provider import settings as oidc_settings
from oidc_provider import views as oidc_views
from oidc_provider.lib.endpoints.authorize import AuthorizeEndpoint
from oidc_provider.lib.endpoints.token import TokenEndpoint
from oidc_provider.lib.errors import AuthorizeError, TokenError
from oidc_provider.lib.utils.common import cors_allow_any
from oidc_provider.lib.utils.oauth2 import protected_resource_view
from oidc_provider.models import Code, Token

from .claims import keycloak_claims
from .models import AuthorizationCodeSession, IdpSession
from .services import current_sid

#: Claims this IdP can emit (advertised in discovery).
CLAIMS_SUPPORTED = [
    "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "azp", "sid",
    "preferred_username", "name", "given_name", "family_name",
    "email", "email_verified", "groups", "realm_access",
]  # fmt: skip


def _authorize_error(endpoint: AuthorizeEndpoint, description: str) -> AuthorizeError:
    """Return an ``invalid_request`` error with Keycloak's wording."""
    error = AuthorizeError(endpoint.params["redirect_uri"], "invalid_request", endpoint.grant_type)
    error.description = description
    return error


class KeycloakAuthorizeEndpoint(AuthorizeEndpoint):  # type: ignore[misc]  # untyped library
    """Authorize endpoint that requires PKCE S256 and records the ``sid`` per code."""

    def validate_params(self) -> None:
        """Validate like django-oidc-provider, then enforce PKCE S256 for code flows."""
        super().validate_params()
        if self.grant_type not in ("authorization_code", "hybrid"):
            return
        if not getattr(settings, "GENNAI_IDP_REQUIRE_PKCE", True):
            return
        if not self.params["code_challenge"]:
            raise _authorize_error(self, "Missing parameter: code_challenge")
        if self.params["code_challenge_method"] != "S256":
            raise _authorize_error(self, "Invalid parameter: code challenge method is not configured one")

    def create_code(self) -> Code:
        """Create the code and remember which IdP session it was issued in."""
        code = super().create_code()
        sid = current_sid(self.request)
        idp_session = IdpSession.objects.filter(sid=sid).first() if sid else None
        if idp_session is not None:
            expired = timezone.now() - timedelta(seconds=oidc_settings.get("OIDC_CODE_EXPIRE") + 60)
            AuthorizationCodeSession.objects.filter(created_at__lt=expired).delete()
            AuthorizationCodeSession.objects.create(code=code.code, idp_session=idp_session)
        return code


class AuthorizeView(oidc_views.AuthorizeView):  # type: ignore[misc]  # untyped library
    """``/protocol/openid-connect/auth``."""

    authorize_endpoint_class = KeycloakAuthorizeEndpoint


def _keycloak_token_error(error: str, description: str) -> TokenError:
    """A token-endpoint error with Keycloak's ``error_description``."""
    exc = TokenError(error)
    exc.description = description
    return exc


class KeycloakTokenEndpoint(TokenEndpoint):  # type: ignore[misc]  # untyped library
    """Token endpoint whose responses carry Keycloak's extra fields.

    Refresh grants fail like Keycloak's (``invalid_grant``) when the user has
    been disabled (``is_active=False``) or the IdP session the token belongs to
    has ended (logout), so a client that re-checks its session with the refresh
    token learns of both.
    """

    def validate_params(self) -> None:
        """Validate like django-oidc-provider; refuse refreshes of disabled users and ended sessions."""
        super().validate_params()
        if self.params["grant_type"] != "refresh_token":
            return
        user = self.token.user
        if user is None or not user.is_active:
            raise _keycloak_token_error("invalid_grant", "User disabled")
        sid = (self.token.id_token or {}).get("sid")
        if sid and IdpSession.objects.filter(sid=sid, ended_at__isnull=False).exists():
            raise _keycloak_token_error("invalid_grant", "Session not active")

    def create_response_dic(self) -> dict[str, Any]:
        """Add ``token_type: Bearer``, ``scope``, ``session_state`` and ``not-before-policy``."""
        dic: dict[str, Any] = super().create_response_dic()
        if not dic or "access_token" not in dic:
            return dic
        dic["token_type"] = "Bearer"  # noqa: S105  (Keycloak capitalises it)
        dic["not-before-policy"] = 0
        token = Token.objects.filter(access_token=dic["access_token"]).first()
        if token is not None:
            dic["scope"] = " ".join(token.scope)
        if dic.get("id_token"):
            claims = jwt.decode(dic["id_token"], options={"verify_signature": False})
            if claims.get("sid"):
                dic["session_state"] = claims["sid"]
        return dic


class TokenView(oidc_views.TokenView):  # type: ignore[misc]  # untyped library
    """``/protocol/openid-connect/token``."""

    token_endpoint_class = KeycloakTokenEndpoint


def _userinfo(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """``/protocol/openid-connect/userinfo``: ``sub``, Keycloak claims and ``sid``.

    ``kwargs["token"]`` is the access token's ``Token``, set by
    django-oidc-provider's ``protected_resource_view`` (which answers 401 itself).
    """
    response: HttpResponse
    if request.method == "OPTIONS":
        response = HttpResponse()
    else:
        token: Token = kwargs["token"]
        if token.user is None or not token.user.is_active:
            # Keycloak answers 401 for the token of a disabled user.
            response = HttpResponse(status=401)
            response["WWW-Authenticate"] = 'Bearer error="invalid_token", error_description="User disabled"'
            return response
        id_token = token.id_token or {}
        dic: dict[str, Any] = {"sub": id_token.get("sub")}
        if token.user is not None:
            dic.update(keycloak_claims(token.user))
        if id_token.get("sid"):
            dic["sid"] = id_token["sid"]
        response = JsonResponse(dic)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    cors_allow_any(request, response)
    return response


userinfo: Callable[..., HttpResponse] = csrf_exempt(
    require_http_methods(["GET", "POST", "OPTIONS"])(protected_resource_view(["openid"])(_userinfo))
)


class ProviderInfoView(oidc_views.ProviderInfoView):  # type: ignore[misc]  # untyped library
    """``/.well-known/openid-configuration`` with Keycloak's metadata."""

    def _build_response_dict(self, request: HttpRequest) -> dict[str, Any]:
        """Endpoints come from ``reverse()``, hence already have Keycloak's paths."""
        dic: dict[str, Any] = super()._build_response_dict(request)
        dic.update(
            {
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "response_modes_supported": ["query", "fragment"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "roles", "groups"],
                "claims_supported": CLAIMS_SUPPORTED,
                "claims_parameter_supported": False,
                "request_uri_parameter_supported": False,
                "code_challenge_methods_supported": ["S256"],
                "backchannel_logout_supported": True,
                "backchannel_logout_session_supported": True,
                "frontchannel_logout_supported": False,
            }
        )
        return dic
