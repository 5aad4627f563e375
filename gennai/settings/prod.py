"""Production: every secret and endpoint must come from the environment."""

from .base import *  # noqa: F403
from .base import BASE_DIR, DATABASES, env

DEBUG = False
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = False
SECRET_KEY = env("GENNAI_SECRET_KEY")
# No development fallbacks in production: each of these must be set explicitly.
for _name in ("DATABASE_URL", "REDIS_URL", "OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"):
    env(_name)
# pgbouncer in transaction mode cannot keep server-side cursors across statements.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 31536000
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
