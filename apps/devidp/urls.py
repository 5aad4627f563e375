"""URLconf of the dev IdP (``ROOT_URLCONF``), laid out like Keycloak's realm ``gennai``.

django-oidc-provider reverses ``oidc_provider:<name>`` (discovery, issuer), so
the protocol endpoints live in that namespace under Keycloak's paths. The
issuer is ``SITE_URL`` + the discovery path minus ``/.well-known/...``, i.e.
``{SITE_URL}/realms/gennai``.
"""

from __future__ import annotations

from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView
from oidc_provider import views as oidc_views

from . import endpoints, views

REALM = "realms/gennai"
PROTOCOL = f"{REALM}/protocol/openid-connect"

oidc_provider_patterns = [
    path(
        f"{REALM}/.well-known/openid-configuration",
        endpoints.ProviderInfoView.as_view(),
        name="provider-info",
    ),
    path(f"{PROTOCOL}/auth", endpoints.AuthorizeView.as_view(), name="authorize"),
    path(f"{PROTOCOL}/token", csrf_exempt(endpoints.TokenView.as_view()), name="token"),
    path(
        f"{PROTOCOL}/token/introspect",
        oidc_views.TokenIntrospectionView.as_view(),
        name="token-introspection",
    ),
    path(f"{PROTOCOL}/certs", oidc_views.JwksView.as_view(), name="jwks"),
    path(f"{PROTOCOL}/userinfo", endpoints.userinfo, name="userinfo"),
    path(f"{PROTOCOL}/logout", views.LogoutView.as_view(), name="end-session"),
    path(
        f"{PROTOCOL}/logout/logout-confirm",
        views.LogoutConfirmView.as_view(),
        name="end-session-prompt",
    ),
]

devidp_patterns = [
    path(f"{REALM}/login", views.LoginView.as_view(), name="login"),
    path(
        f"{REALM}/dev/backchannel-logout",
        views.dev_backchannel_logout,
        name="dev-backchannel-logout",
    ),
    path("", RedirectView.as_view(pattern_name="devidp:login"), name="home"),
]

urlpatterns = [
    path("", include((oidc_provider_patterns, "oidc_provider"))),
    path("", include((devidp_patterns, "devidp"))),
]
