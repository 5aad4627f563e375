"""Fixtures of the security tests, borrowed from the apps' own test packages (one definition each)."""

from apps.gateway.tests.conftest import (  # noqa: F401  (pytest fixtures)
    _asgi_server_process,
    _fresh_caches,
    _upstream_servers,
    asgi_server,
    make_key,
    upstreams,
    world,
)
from apps.quotas.tests.admission_support import quota_redis_fixture  # noqa: F401  (fixture quota_redis)
