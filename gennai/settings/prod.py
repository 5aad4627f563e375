"""Production: every secret and endpoint must come from the environment.

This is the default of ``manage.py``, ``gennai/asgi.py``, ``gennai/wsgi.py`` and
``gennai/celery.py``: a process started without ``DJANGO_SETTINGS_MODULE`` runs
with these settings and refuses to start without its secrets. Development and
tests select ``gennai.settings.dev`` / ``gennai.settings.test`` explicitly
(``make run``, ``make test``, ``make api-key``; see docs/development.md).
"""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import BASE_DIR, DATABASES, DEV_SECRET_KEY, OIDC_ISSUER, env_bool

REQUIRED = (
    "GENNAI_SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
)


def _required(name: str) -> str:
    """A production setting that has no default: missing or empty refuses to start."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. gennai.settings.prod (the default of manage.py, asgi.py, wsgi.py "
            f"and celery.py) needs {', '.join(REQUIRED)} from the environment. For development use "
            "`make run`, or set DJANGO_SETTINGS_MODULE=gennai.settings.dev explicitly."
        )
    return value


# No development fallbacks in production: each of these must be set explicitly
# (base.py's defaults point at loopback servers and a public dev secret).
for _name in REQUIRED:
    _required(_name)


def _strong_secret_key(key: str, *, name: str = "GENNAI_SECRET_KEY") -> str:
    """Security: never the repository's development key, nor a short or repetitive one.

    The key signs the messages cookie and keys every HMAC Django derives from
    it; the development default is public (base.py). Same strength rule as
    Django's ``security.W009`` (50 characters, 5 distinct), but enforced at
    start-up rather than only by ``check --deploy``.
    """
    weak = (
        key == DEV_SECRET_KEY
        or key.startswith("django-insecure-")
        or len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE
    )
    if weak:
        raise ImproperlyConfigured(
            f"{name} is the public development key or too weak: use at least "
            f"{SECRET_KEY_MIN_LENGTH} random characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(64))')."
        )
    return key


SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE = 5
SECRET_KEY = _strong_secret_key(_required("GENNAI_SECRET_KEY"))
# A fallback verifies signatures and decrypts tokens just as the key does: the same rule for each
# (a public development key among them would let anyone sign a session).
SECRET_KEY_FALLBACKS = [
    _strong_secret_key(key.strip(), name="GENNAI_SECRET_KEY_FALLBACKS")
    for key in os.environ.get("GENNAI_SECRET_KEY_FALLBACKS", "").split(",")
    if key.strip()
]


def _https_issuer(issuer: str) -> str:
    """Security: the IdP only over HTTPS.

    The JWKS, token and userinfo endpoints derive from the issuer: over plain
    HTTP anyone on the path could swap the signing keys (and so sign ID tokens
    naming any user and any ``/ministries/<code>/admins`` group) and would read
    the client secret sent with every code exchange and refresh.
    """
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname:
        raise ImproperlyConfigured(
            f"OIDC_ISSUER must be an https:// URL with a host, not {issuer!r}: the signing keys "
            "and tokens are fetched from it (e.g. https://sso.example.go.jp/realms/gennai)."
        )
    return issuer


_https_issuer(OIDC_ISSUER)

DEBUG = False
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = False
# pgbouncer in transaction mode cannot keep server-side cursors across statements.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- HTTPS ------------------------------------------------------------------
# Plain HTTP is redirected to HTTPS. Kubernetes probes reach the pod over plain
# HTTP without the proxy's header, so the health endpoints are exempt.
SECURE_SSL_REDIRECT = env_bool("GENNAI_SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Behind the TLS-terminating reverse proxy (ingress) Django sees plain HTTP; it
# trusts X-Forwarded-Proto only when told it runs behind such a proxy, which must
# overwrite (never pass through) that header. Without a proxy, set it to 0.
if env_bool("GENNAI_BEHIND_TLS_PROXY", True):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = int(os.environ.get("GENNAI_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("GENNAI_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading commits the whole registrable domain in browsers' built-in lists: the
# domain's owner decides (GENNAI_HSTS_PRELOAD=1), so the check that asks for it is
# silenced only while it is off. `manage.py check --deploy` passes otherwise (tested).
SECURE_HSTS_PRELOAD = env_bool("GENNAI_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# __Host- cookies are accepted only from this exact host, over HTTPS, for path /: another
# service under the same registrable domain cannot toss a session or CSRF cookie onto ours.
SESSION_COOKIE_NAME = "__Host-gennai_sessionid"
CSRF_COOKIE_NAME = "__Host-gennai_csrftoken"
# The language cookie (i18n/setlang) is only ever read by the server: HTTPS-only, no script access.
LANGUAGE_COOKIE_SECURE = True
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
# /readyz answers only status and per-check ok to the network (GENNAI_READYZ_DETAILS=1 for more).
GENNAI_READYZ_DETAILS = env_bool("GENNAI_READYZ_DETAILS", False)
# Production allows no module unscoped tenant access (base.py); stated again here
# so that no later edit of base.py can widen it for production by accident.
GENNAI_UNSCOPED_ALLOWLIST = []
