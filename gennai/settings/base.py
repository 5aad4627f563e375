"""Settings shared by every environment.

Everything that differs between machines comes from the environment:
``DATABASE_URL``, ``REDIS_URL``, ``OIDC_ISSUER`` and friends. ``gennai.devstack``
fills these in with embedded servers for ``make run`` and ``make test``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env(name: str, default: str | None = None) -> str:
    """Read a required setting from the environment, with a clear error when missing."""
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(
            f"Environment variable {name} is not set. "
            "Start the platform with `make run`, which provides embedded defaults."
        )
    return value


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).lower() in {"1", "true", "yes", "on"}


#: Public (it is in the repository): development and tests only; production refuses it.
DEV_SECRET_KEY = "dev-insecure-gennai-secret-key-change-me"
SECRET_KEY = env("GENNAI_SECRET_KEY", DEV_SECRET_KEY)
# Rotation: the previous key(s), comma-separated. Django accepts what they signed (sessions,
# signed values) and the OIDC tokens they encrypted (apps/accounts/token_crypto.py); new writes
# use SECRET_KEY. Drop an old key once the sessions that used it have ended.
SECRET_KEY_FALLBACKS = [k.strip() for k in env("GENNAI_SECRET_KEY_FALLBACKS", "").split(",") if k.strip()]
DEBUG = env_bool("GENNAI_DEBUG", False)
ALLOWED_HOSTS = [h for h in env("GENNAI_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "mozilla_django_oidc",
    "apps.tenancy",
    "apps.accounts",
    "apps.console",
    "apps.audit",
    "apps.registry",
    "apps.gateway",
    "apps.quotas",
    "apps.chat",
    "apps.search",
    "apps.documents",
    "apps.aiapps",
    "apps.evaluation",
]

MIDDLEWARE = [
    # First: once every other middleware is done with a streaming response, give the
    # request thread's database connection back before the body starts (invariant 10).
    "apps.tenancy.connections.ReleaseConnectionsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy header on every response (policy: CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Re-checks OIDC claims when the session's claims cache expires (role changes on the next request).
    "apps.accounts.middleware.ClaimsRecheckMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Must come after authentication: the scope comes only from the user's membership.
    "apps.tenancy.middleware.MinistryScopeMiddleware",
]

ROOT_URLCONF = "gennai.urls"
WSGI_APPLICATION = "gennai.wsgi.application"
ASGI_APPLICATION = "gennai.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "gennai" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.tenancy.context_processors.tenancy",
                # {{ CSP_NONCE }} for an inline <script nonce=…> (none today: all scripts are files).
                "csp.context_processors.nonce",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# The app logs in with DATABASE_URL. Unless GENNAI_DB_APP_ROLE is empty, every
# connection then runs `SET ROLE <app role>`: a role that owns nothing and has
# no BYPASSRLS, so PostgreSQL row-level security applies to every query.
# Migrations switch to GENNAI_DB_OWNER_ROLE (see apps.tenancy.db).
DATABASES = {
    "default": {
        **dj_database_url.parse(env("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/gennai")),
        "ENGINE": "gennai.db_backend",
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": os.environ.get("GENNAI_TEST_DB_NAME", "test_gennai")},
    }
}
# Under ASGI every request runs in its own thread, so without a pool each request
# opens a new PostgreSQL connection (~3 ms here). The pool keeps them warm; every
# checkout still runs SET ROLE (apps.tenancy.db), and the ministry setting is
# transaction-local, so nothing leaks between requests. Off in tests (gennai.settings.test: test
# databases are created and dropped under the pool's feet).
if env_bool("GENNAI_DB_POOL", True):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 2, "max_size": int(os.environ.get("GENNAI_DB_POOL_MAX", "20"))}
    }
GENNAI_DB_APP_ROLE = os.environ.get("GENNAI_DB_APP_ROLE", "gennai_app")
GENNAI_DB_OWNER_ROLE = os.environ.get("GENNAI_DB_OWNER_ROLE", "gennai_owner")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- E-mail (budget and platform alerts: apps/quotas/alerts.py, apps/console/platform_alerts.py) ---
EMAIL_BACKEND = env("GENNAI_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("GENNAI_EMAIL_HOST", "localhost")
EMAIL_PORT = int(env("GENNAI_EMAIL_PORT", "25"))
EMAIL_HOST_USER = env("GENNAI_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("GENNAI_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("GENNAI_EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("GENNAI_EMAIL_USE_SSL", False)
# A mail server that does not answer must not hold an alert task for minutes.
EMAIL_TIMEOUT = int(env("GENNAI_EMAIL_TIMEOUT_SECONDS", "10"))
DEFAULT_FROM_EMAIL = env("GENNAI_DEFAULT_FROM_EMAIL", "gennai@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Cache / broker -------------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Values are JSON or bytes, never pickles, and signed with their key (gennai/cache_serializer.py): a
# value planted in Redis can neither run code in the web processes nor grant anything.
CACHES = {"default": {"BACKEND": "gennai.cache_serializer.SignedRedisCache", "LOCATION": REDIS_URL}}
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Embedding dominates ingestion on CPU: its own queue, so a worker pool can be sized
# for it (the devstack worker consumes both queues). See docs/documents.md.
# DDL on the usage ledger (create/drop monthly partitions) needs the owner role: its own
# queue, consumed only by a worker that logs in with the migration login, so ordinary
# workers keep the application role (DESIGN invariant 2; docs/admin.md).
CELERY_TASK_ROUTES = {
    "documents.embed": {"queue": "embed"},
    "quotas.usage_partitions_maintain": {"queue": "maintenance"},
}
# Periodic tasks, run by `celery beat` (or a worker started with -B). A probe that
# waited longer than its interval is dropped: the next one is already due.
CELERY_BEAT_SCHEDULE = {
    # Expired sessions and the OIDC token records of ended sessions (apps.accounts.services).
    "accounts-sessions": {
        "task": "accounts.sessions_sweep",
        "schedule": 3600.0,
        "options": {"expires": 3500},
    },
    # Per-ministry document retention (apps.documents.models.DocumentRetention) and
    # documents whose pipeline stalled (a worker that died without redelivery).
    "documents-retention": {
        "task": "documents.retention_sweep",
        "schedule": 3600.0,
        "options": {"expires": 3500},
    },
    "documents-stalled": {"task": "documents.stalled_sweep", "schedule": 300.0, "options": {"expires": 290}},
    # /v1 usage: the Redis journal → UsageRecord rows, in bulk (apps/quotas/journal.py).
    "quotas-usage-journal-drain": {
        "task": "quotas.usage_journal_drain",
        "schedule": 2.0,
        "options": {"expires": 10},
    },
    # Daily usage rollups (UsageDaily) of yesterday and today, every ministry (apps/quotas/rollups.py).
    "quotas-usage-rollup": {
        "task": "quotas.usage_rollup_recent",
        "schedule": float(os.environ.get("GENNAI_USAGE_ROLLUP_SECONDS", "300")),
        "options": {"expires": 290},
    },
    # Admission: release leaked reservations, reseed month counters from the ledger
    # (apps/quotas/reconcile.py).
    "quotas-admission-reconcile": {
        "task": "quotas.admission_reconcile",
        "schedule": float(os.environ.get("GENNAI_QUOTA_RECONCILE_SECONDS", "60")),
        "options": {"expires": 55},
    },
    "registry-deployment-health": {
        "task": "registry.deployment_health_check_all",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # Canary promotions (apps/evaluation/promotion.py): roll back a canary over its error/latency thresholds.
    "evaluation-promotion-watch": {
        "task": "evaluation.promotion_watch",
        "schedule": float(os.environ.get("GENNAI_PROMOTION_WATCH_SECONDS", "60")),
        "options": {"expires": 55},
    },
    # API keys of creators demoted or disabled in Keycloak who never sign in again.
    "gateway-api-key-creators": {
        "task": "gateway.api_key_creators_recheck",
        "schedule": float(os.environ.get("GENNAI_API_KEY_CREATOR_RECHECK_SECONDS", "300")),
        "options": {"expires": 290},
    },
    # Daily at 03:15 Japan time (beat's clock is UTC): walk the audit hash chain; a break
    # alerts the platform admins (apps/audit/tasks.py).
    "audit-verify": {
        "task": "audit.verify_chain",
        "schedule": crontab(hour=18, minute=15),
        "options": {"expires": 3600},
    },
    # Daily: usage ledger partitions twelve months ahead, months past GENNAI_USAGE_RETENTION_MONTHS
    # dropped (DDL: the worker needs the migration login; apps/quotas/partitions.py).
    "quotas-usage-partitions": {
        "task": "quotas.usage_partitions_maintain",
        "schedule": crontab(hour=18, minute=45),  # 03:45 Japan time
        "options": {"expires": 3600},
    },
}
# Months of raw usage (UsageRecord) kept, besides the current one; 0 keeps everything (docs/admin.md).
GENNAI_USAGE_RETENTION_MONTHS = int(os.environ.get("GENNAI_USAGE_RETENTION_MONTHS", "24"))
# Local role grants by ministry admins (apps/accounts/local_roles.py): off unless enabled here or per
# ministry (manage.py local_grant_policy); ministry_admin only where explicitly allowed.
GENNAI_LOCAL_ROLE_GRANTS = {
    "enabled": os.environ.get("GENNAI_LOCAL_ROLE_GRANTS", "") == "1",
    "allow_ministry_admin": False,
    "max_days": int(os.environ.get("GENNAI_LOCAL_ROLE_GRANT_MAX_DAYS", "90")),
}

# --- Sessions -------------------------------------------------------------
# The dev IdP runs on another port of the same host; cookies ignore ports, so
# the app's session cookie must have its own name.
SESSION_COOKIE_NAME = "gennai_sessionid"
CSRF_COOKIE_NAME = "gennai_csrftoken"
# Django's database engine on a table that holds only digests of session keys
# (apps/accounts/session_keys.py): a database backup yields no live session.
SESSION_ENGINE = "apps.accounts.session_store"
SESSION_COOKIE_AGE = int(env("GENNAI_SESSION_AGE_SECONDS", str(8 * 3600)))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# --- Auth / OIDC (Keycloak) -----------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["apps.accounts.oidc.KeycloakOIDCBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# Keycloak realm issuer, e.g. https://sso.example.go.jp/realms/gennai
OIDC_ISSUER = env("OIDC_ISSUER", "http://127.0.0.1:8001/realms/gennai").rstrip("/")
OIDC_RP_CLIENT_ID = env("OIDC_CLIENT_ID", "gennai-web")
OIDC_RP_CLIENT_SECRET = env("OIDC_CLIENT_SECRET", "gennai-dev-client-secret")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid profile email"
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True  # needed for RP-initiated logout (id_token_hint)
OIDC_TIMEOUT = 10
# Keycloak's endpoint layout under the realm issuer.
OIDC_OP_AUTHORIZATION_ENDPOINT = f"{OIDC_ISSUER}/protocol/openid-connect/auth"
OIDC_OP_TOKEN_ENDPOINT = f"{OIDC_ISSUER}/protocol/openid-connect/token"
OIDC_OP_USER_ENDPOINT = f"{OIDC_ISSUER}/protocol/openid-connect/userinfo"
OIDC_OP_JWKS_ENDPOINT = f"{OIDC_ISSUER}/protocol/openid-connect/certs"
OIDC_OP_LOGOUT_ENDPOINT = f"{OIDC_ISSUER}/protocol/openid-connect/logout"
OIDC_AUTHENTICATION_CALLBACK_URL = "accounts:oidc_callback"
OIDC_OP_LOGOUT_URL_METHOD = "apps.accounts.oidc.provider_logout_url"
# JWKS are cached this long; a key rotation is picked up on the next miss.
GENNAI_OIDC_JWKS_CACHE_SECONDS = 300
# An unknown ``kid`` refetches the JWKS at most once per this many seconds, then is refused.
GENNAI_OIDC_JWKS_REFETCH_SECONDS = int(env("GENNAI_OIDC_JWKS_REFETCH_SECONDS", "60"))
# Back-channel logout tokens older than this (by ``iat``) are refused; their ``jti`` is kept until then.
GENNAI_OIDC_LOGOUT_TOKEN_MAX_AGE_SECONDS = 300
# Claims are re-checked at the IdP (refresh token) when this much time has passed in a session.
GENNAI_OIDC_CLAIMS_TTL_SECONDS = float(env("GENNAI_OIDC_CLAIMS_TTL_SECONDS", "60"))
# If the IdP is unreachable, the last claims hold this long after the last successful check.
GENNAI_OIDC_CLAIMS_MAX_STALE_SECONDS = float(env("GENNAI_OIDC_CLAIMS_MAX_STALE_SECONDS", "300"))
GENNAI_OIDC_CLAIMS_RETRY_SECONDS = 5.0

# /readyz shows each check's detail, error class and timing (operators' view). Production
# turns this off: the probes read only the status code, and versions, backends and counts
# are nobody's business on the network (gennai.settings.prod, GENNAI_READYZ_DETAILS).
GENNAI_READYZ_DETAILS = env_bool("GENNAI_READYZ_DETAILS", True)

# Keycloak admin API for `manage.py sync_keycloak`.
KEYCLOAK_URL = os.environ.get("KEYCLOAK_URL", "")
KEYCLOAK_REALM = os.environ.get("KEYCLOAK_REALM", "gennai")
KEYCLOAK_ADMIN_CLIENT_ID = os.environ.get("KEYCLOAK_ADMIN_CLIENT_ID", "admin-cli")
KEYCLOAK_ADMIN_CLIENT_SECRET = os.environ.get("KEYCLOAK_ADMIN_CLIENT_SECRET", "")
KEYCLOAK_ADMIN_USERNAME = os.environ.get("KEYCLOAK_ADMIN_USERNAME", "")
KEYCLOAK_ADMIN_PASSWORD = os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "")

# --- Tenancy --------------------------------------------------------------
# Modules allowed to query TenantModels without a ministry scope. Every use is
# logged and audited; RLS still applies in the database. Empty outside tests:
# gennai.settings.test adds the test modules that prove the database layer alone,
# and a test asserts that production's list names no test module.
GENNAI_UNSCOPED_ALLOWLIST: list[str] = []

# --- Chat -----------------------------------------------------------------
# 機密性 level new conversations start at (1–3), until ministries can set their
# own; read it through apps.chat.conf.default_confidentiality().
GENNAI_DEFAULT_CONFIDENTIALITY = int(os.environ.get("GENNAI_DEFAULT_CONFIDENTIALITY", "2"))

# --- Process-local caches and API keys (docs/adr/0005) ---------------------
# Registry snapshot and API-key facts: each process re-reads the invalidation
# version in PostgreSQL at most every CHECK seconds, and reloads after MAX_AGE
# seconds regardless. 0.5 s leaves room for /v1's 0.25 s route-decision reuse
# (GENNAI_ROUTE_CACHE_SECONDS) inside the 1 s bound on a revocation; capped at 1 s.
GENNAI_CACHE_CHECK_SECONDS = min(float(os.environ.get("GENNAI_CACHE_CHECK_SECONDS", "0.5")), 1.0)
GENNAI_CACHE_MAX_AGE_SECONDS = float(os.environ.get("GENNAI_CACHE_MAX_AGE_SECONDS", "60"))
# Every API key expires; this is the longest lifetime a key may be given.
GENNAI_API_KEY_MAX_LIFETIME_DAYS = int(os.environ.get("GENNAI_API_KEY_MAX_LIFETIME_DAYS", "90"))

# --- Inference upstreams (seconds) -----------------------------------------
# Failover happens only before the first token, so the first-token timeout
# bounds how long a user waits for a dead deployment before the next is tried.
GENNAI_UPSTREAM_CONNECT_TIMEOUT = float(os.environ.get("GENNAI_UPSTREAM_CONNECT_TIMEOUT", "5"))
GENNAI_UPSTREAM_FIRST_TOKEN_TIMEOUT = float(os.environ.get("GENNAI_UPSTREAM_FIRST_TOKEN_TIMEOUT", "60"))
GENNAI_UPSTREAM_READ_TIMEOUT = float(os.environ.get("GENNAI_UPSTREAM_READ_TIMEOUT", "120"))

# --- Upstream egress and secrets (docs/security.md) ---------------------------
# Hosts the platform may call as model upstreams: hostnames, wildcard suffixes
# (*.gpu.svc.cluster.local) and CIDRs, comma-separated. Production allows nothing
# until configured; link-local and cloud-metadata addresses are refused always,
# and private/loopback addresses only inside an allowlisted CIDR (apps/registry/egress.py).
GENNAI_UPSTREAM_ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("GENNAI_UPSTREAM_ALLOWED_HOSTS", "").split(",") if h.strip()
]
# Hosts a deployment may be labelled on-prem for (same syntax; IP literals against CIDRs,
# names against names and wildcards, nothing resolved). Routing to on-prem needs no second
# approval, so set this wherever external hosts are allowlisted; unset = the allowlist itself.
GENNAI_UPSTREAM_ONPREM_HOSTS = [
    h.strip() for h in os.environ.get("GENNAI_UPSTREAM_ONPREM_HOSTS", "").split(",") if h.strip()
]
# Directory of mounted upstream API keys for ``file:<name>`` secret references.
GENNAI_UPSTREAM_SECRETS_DIR = os.environ.get("GENNAI_UPSTREAM_SECRETS_DIR", "")


# --- Content-Security-Policy (django-csp 4) -----------------------------------
# Scripts, styles, images and connections only from our own origin: no inline
# <script> (a nonce where one is unavoidable: {{ CSP_NONCE }}), no inline style=""
# attributes, no eval (htmx runs with allowEval=false, see base.html). Forms may post
# to us and to the IdP: login and RP-initiated logout redirect there after a POST,
# and Chrome checks form-action on every redirect of a form submission.
_idp = urlsplit(OIDC_ISSUER)
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF, f"{_idp.scheme}://{_idp.netloc}"],
        "base-uri": [NONE],
    },
}

# --- i18n -----------------------------------------------------------------
LANGUAGE_CODE = "ja"
LANGUAGES = [("ja", _("日本語")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "gennai" / "locale"]
TIME_ZONE = "Asia/Tokyo"
USE_I18N = True
USE_TZ = True

# --- Static ---------------------------------------------------------------
STATIC_URL = "/static/"
# Served by WhiteNoise straight from the finders in dev/test; prod collects to STATIC_ROOT.
WHITENOISE_USE_FINDERS = True
STATICFILES_DIRS = [BASE_DIR / "gennai" / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# OpenAPI schema of the management API at /api/schema/ (the /v1 API follows OpenAI's spec: docs/api.md).
SPECTACULAR_SETTINGS = {
    "TITLE": "Gennai management API",
    "DESCRIPTION": "API key management. The OpenAI-compatible /v1 API is described in docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("GENNAI_LOG_LEVEL", "INFO")},
    "loggers": {"mozilla_django_oidc": {"level": "WARNING"}},
}

# --- Documents (apps/documents, docs/documents.md) ------------------------------
# Originals go to STORAGES["documents"] when a settings module defines it (S3 via
# django-storages in production), else to a FileSystemStorage under this root.
GENNAI_DOCUMENTS_ROOT = Path(env("GENNAI_DOCUMENTS_ROOT", str(BASE_DIR / ".gennai" / "media" / "documents")))
GENNAI_DOCUMENT_MAX_BYTES = int(env("GENNAI_DOCUMENT_MAX_BYTES", str(50 * 1024 * 1024)))
GENNAI_DOCUMENT_MAX_PAGES = int(env("GENNAI_DOCUMENT_MAX_PAGES", "2000"))
GENNAI_DOCUMENT_MAX_FILES = int(env("GENNAI_DOCUMENT_MAX_FILES", "20"))
# Largest request body for any path but /v1 and the document upload (gennai/body_limit.py): an
# AI-app run's files, an evaluation import. The upload view allows MAX_FILES x MAX_BYTES + 1 MiB to
# signed-in, active users only; anyone else gets this limit there too.
GENNAI_MAX_REQUEST_BYTES = int(env("GENNAI_MAX_REQUEST_BYTES", str(64 * 1024 * 1024)))
# OOXML (zip) files: total uncompressed size and compression ratio limits (zip bombs).
GENNAI_DOCUMENT_MAX_UNZIPPED_BYTES = int(env("GENNAI_DOCUMENT_MAX_UNZIPPED_BYTES", str(300 * 1024 * 1024)))
GENNAI_DOCUMENT_MAX_ZIP_RATIO = int(env("GENNAI_DOCUMENT_MAX_ZIP_RATIO", "100"))
GENNAI_DOCUMENT_MAX_ZIP_ENTRIES = int(env("GENNAI_DOCUMENT_MAX_ZIP_ENTRIES", "10000"))
GENNAI_DOCUMENT_EMBED_BATCH = int(env("GENNAI_DOCUMENT_EMBED_BATCH", "16"))

# --- Search (apps/search, docs/search.md) ----------------------------------------
# "postgres" (pgvector + Sudachi full text, the default) or "elasticsearch".
GENNAI_SEARCH_BACKEND = env("GENNAI_SEARCH_BACKEND", "postgres")
GENNAI_EMBEDDING_ALIAS = env("GENNAI_EMBEDDING_ALIAS", "standard-embedding")
# The vector column's size (a migration fixes it: changing it means a new migration and a re-index).
GENNAI_EMBEDDING_DIMENSIONS = int(env("GENNAI_EMBEDDING_DIMENSIONS", "384"))
GENNAI_EMBEDDING_BATCH_SIZE = int(env("GENNAI_EMBEDDING_BATCH_SIZE", "32"))
# "auto": e5 "query: "/"passage: " prefixes when the deployed model is e5-family; "always" | "never".
GENNAI_EMBEDDING_E5_PREFIXES = env("GENNAI_EMBEDDING_E5_PREFIXES", "auto")
GENNAI_ELASTICSEARCH_URL = env("GENNAI_ELASTICSEARCH_URL", "")
# An API key allowed to manage indices, templates and API keys (per-ministry keys are derived from it).
GENNAI_ELASTICSEARCH_API_KEY = env("GENNAI_ELASTICSEARCH_API_KEY", "")
GENNAI_ELASTICSEARCH_INDEX_PREFIX = env("GENNAI_ELASTICSEARCH_INDEX_PREFIX", "gennai")
