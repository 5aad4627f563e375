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
