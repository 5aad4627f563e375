"""Root conftest: real PostgreSQL as the unprivileged app role for every test, the
shared fixtures, and browser tests ordered last.

It must be the root conftest (not a ``-p`` plugin): only a conftest overrides
pytest-django's own ``django_db_setup``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: Any, django_db_blocker: Any) -> Iterator[None]:
    """Create and migrate the test database as the owner role, then drop to the app role.

    The tests themselves run as ``gennai_app`` (no ownership, no BYPASSRLS), so
    row-level security is in force exactly as in production.
    """
    from django.test.utils import setup_databases, teardown_databases

    from apps.tenancy.db import owner_mode

    with django_db_blocker.unblock(), owner_mode():
        config = setup_databases(verbosity=0, interactive=False, keepdb=False)
    yield
    with django_db_blocker.unblock(), owner_mode():
        teardown_databases(config, verbosity=0)


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """Every test starts in the default language (ja).

    A request through the test client leaves its language active in the thread
    (LocaleMiddleware activates and nothing deactivates), so a test that asked
    for English pages made a later test's service messages English.
    """
    from django.conf import settings
    from django.utils import translation

    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.deactivate()


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in the
    main thread while a browser is open, which breaks ``asyncio.run`` in other tests."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
