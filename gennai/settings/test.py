"""Test settings: same stack as dev, real PostgreSQL, faster hashing."""

from .base import *  # noqa: F403
from .base import DATABASES

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
OIDC_REDIRECT_REQUIRE_HTTPS = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# No connection pool: pytest-django creates and drops the test database.
DATABASES["default"]["OPTIONS"] = {}
# Tests that prove the database layer alone (RLS without the ORM guard) may leave
# the ministry scope. Only here: base/dev/prod allow no module (see base.py).
GENNAI_UNSCOPED_ALLOWLIST = ["apps.tenancy.tests", "tests"]
# Fake upstreams listen on loopback; tests of the production policy override this.
GENNAI_UPSTREAM_ALLOWED_HOSTS = ["localhost", "127.0.0.0/8", "::1"]
