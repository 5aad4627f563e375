"""The async database hop helpers give the connection back after each call."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction

from apps.tenancy.connections import db_hop, release_connections, scoped_db_hop
from apps.tenancy.scope import GUC_NAME, ScopeError, current_ministry_id


def _setting_and_scope() -> tuple[str | None, int | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [GUC_NAME])
        return cursor.fetchone()[0], current_ministry_id()


@pytest.mark.django_db(transaction=True)
def test_db_hop_returns_the_result_and_releases_the_connection() -> None:
    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    assert async_to_sync(db_hop)(backend_pid) > 0
    assert connection.connection is None, "db_hop must close (or pool) the connection it used"


@pytest.mark.django_db(transaction=True)
def test_scoped_db_hop_scopes_the_call_and_releases(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    setting, scope = async_to_sync(scoped_db_hop(_setting_and_scope, ministry_id=a.pk))()
    assert (setting, scope) == (str(a.pk), a.pk)
    assert connection.connection is None
    assert current_ministry_id() is None
    with pytest.raises(ScopeError):  # a bad id is refused before any query
        async_to_sync(scoped_db_hop(_setting_and_scope, ministry_id=0))()


@pytest.mark.django_db(transaction=True)
def test_db_hop_releases_even_when_the_call_fails() -> None:
    def fails() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        async_to_sync(db_hop)(fails)
    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_a_connection_inside_a_transaction_is_left_to_its_owner() -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert release_connections() == 0
        assert connection.connection is not None
    assert release_connections() == 1
    assert connection.connection is None
