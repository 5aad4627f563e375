"""Standalone settings for the loopback development IdP (Keycloak look-alike).

Run it as its own process, e.g.::

    GENNAI_IDP_DATABASE_URL=postgresql://... \\
    DJANGO_SETTINGS_MODULE=gennai.settings.idp python manage.py runserver 127.0.0.1:8001

Environment:
    GENNAI_IDP_DATABASE_URL   PostgreSQL URL (required).
    GENNAI_IDP_SECRET_KEY     Django secret key (dev default).
    GENNAI_IDP_DEBUG          "1"/"true" to enable DEBUG (default: true).
    GENNAI_IDP_URL            Public base URL; the issuer is ``{GENNAI_IDP_URL}/realms/gennai``.
    GENNAI_IDP_DEV_TOOLS      Enable the ``/realms/gennai/dev/...`` endpoints even when
                              DEBUG is off (default: same as GENNAI_IDP_DEBUG).
    GENNAI_IDP_REQUIRE_PKCE   Require PKCE S256 on the code flow (default: true).
    GENNAI_IDP_BACKCHANNEL_ON_LOGOUT  Send back-channel logout on RP-initiated logout
                              (default: true, as Keycloak does).

This module deliberately does not import ``gennai.settings.base``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def _env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get(
    "GENNAI_IDP_SECRET_KEY", "dev-only-gennai-idp-secret-key-not-for-production-use-0123456789"
)
DEBUG = _env_bool("GENNAI_IDP_DEBUG", True)
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oidc_provider",
    "apps.devidp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "apps.devidp.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = os.environ.get("GENNAI_IDP_DATABASE_URL", "").strip()
if not _database_url:
    raise ImproperlyConfigured(
        "GENNAI_IDP_DATABASE_URL is not set. The dev IdP needs its own PostgreSQL database, "
        "e.g. GENNAI_IDP_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/gennai_idp"
    )
DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=0)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cookies ignore ports: the app runs on another port of 127.0.0.1, so the IdP's
# cookies must have names of their own.
SESSION_COOKIE_NAME = "gennai_idp_sessionid"
CSRF_COOKIE_NAME = "gennai_idp_csrftoken"

LANGUAGE_CODE = "ja"
TIME_ZONE = "Asia/Tokyo"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/idp-static/"

LOGIN_URL = "/realms/gennai/login"

# --- django-oidc-provider ----------------------------------------------------
# Issuer = SITE_URL + path of "oidc_provider:provider-info" minus the
# well-known suffix = {SITE_URL}/realms/gennai (see apps/devidp/urls.py).
SITE_URL = os.environ.get("GENNAI_IDP_URL", "http://127.0.0.1:8001").rstrip("/")
OIDC_LOGIN_URL = LOGIN_URL
OIDC_IDTOKEN_SUB_GENERATOR = "apps.devidp.claims.sub_generator"
OIDC_IDTOKEN_PROCESSING_HOOK = "apps.devidp.claims.idtoken_processing_hook"
OIDC_USERINFO = "apps.devidp.claims.userinfo"
OIDC_IDTOKEN_EXPIRE = 5 * 60  # Keycloak's default token lifespan
OIDC_TOKEN_EXPIRE = 5 * 60
OIDC_CODE_EXPIRE = 60  # Keycloak's default code lifespan
OIDC_SESSION_MANAGEMENT_ENABLE = False
OIDC_GRANT_TYPE_PASSWORD_ENABLE = False

# --- dev IdP -----------------------------------------------------------------
GENNAI_IDP_DEV_TOOLS = _env_bool("GENNAI_IDP_DEV_TOOLS", DEBUG)
GENNAI_IDP_REQUIRE_PKCE = _env_bool("GENNAI_IDP_REQUIRE_PKCE", True)
GENNAI_IDP_BACKCHANNEL_ON_LOGOUT = _env_bool("GENNAI_IDP_BACKCHANNEL_ON_LOGOUT", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"apps.devidp": {"level": "INFO"}},
}
