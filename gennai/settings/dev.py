"""Local development (`make run`, `make api-key`, or DJANGO_SETTINGS_MODULE=gennai.settings.dev).

While `make run` runs it writes the URLs of its embedded servers to
``.gennai/dev/env``; these settings read that file first (variables already in
the environment win), so a command from a second terminal reaches the same
database, Redis and IdP. See gennai/devstack/envfile.py.
"""

from gennai.devstack.envfile import load_into_environ

DEV_ENV_APPLIED = load_into_environ()

from .base import *  # noqa: E402,F403
from .base import env_bool  # noqa: E402

DEBUG = env_bool("GENNAI_DEBUG", True)
OIDC_REDIRECT_REQUIRE_HTTPS = False
# The local model server (`make run`) listens on loopback: allow it as an upstream.
GENNAI_UPSTREAM_ALLOWED_HOSTS = [*GENNAI_UPSTREAM_ALLOWED_HOSTS, "localhost", "127.0.0.0/8", "::1"]  # noqa: F405
# Alert e-mails are printed by the worker, unless a mail server is configured.
EMAIL_BACKEND = env("GENNAI_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")  # noqa: F405
