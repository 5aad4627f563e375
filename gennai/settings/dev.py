"""Local development (`make run`)."""

from .base import *  # noqa: F403
from .base import env_bool

DEBUG = env_bool("GENNAI_DEBUG", True)
OIDC_REDIRECT_REQUIRE_HTTPS = False
