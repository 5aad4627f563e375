"""Attacks on the ministry scope found or checked in the security review (apps/tenancy)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from apps.console.models import Announcement
from apps.tenancy.scope import GUC_NAME, ScopeError, current_ministry_id, ministry_scope
from apps.tenancy.tasks import TenantTask
from gennai.celery import app as celery_app

pytestmark = pytest.mark.django_db


def _guc() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [GUC_NAME])
        return str(cursor.fetchone()[0] or "")


def test_a_nested_scope_that_fails_in_the_database_gives_the_outer_ministry_back(
    ministries: tuple[Any, Any],
) -> None:
    """A platform page of ministry A's request that works in B (nested scope) and hits a
    database error: the rest of A's request must run as A in both layers, never as B."""
    a, b = ministries
    with ministry_scope(ministry_id=a.pk):
        Announcement.objects.create(title="a", body="a")
        with pytest.raises(DatabaseError), ministry_scope(ministry_id=b.pk):
            Announcement.objects.create(title="b", body="b")
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")
        assert current_ministry_id() == a.pk
        assert _guc() == str(a.pk)
        assert list(Announcement.objects.values_list("title", flat=True)) == ["a"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM console_announcement WHERE ministry_id = %s", [b.pk])
            assert cursor.fetchone()[0] == 0, "B's row rolled back with the nested scope"


def test_a_nested_scope_left_by_a_python_error_gives_the_outer_ministry_back(
    ministries: tuple[Any, Any],
) -> None:
    a, b = ministries
    with ministry_scope(ministry_id=a.pk):
        with pytest.raises(KeyError), ministry_scope(ministry_id=b.pk):
            raise KeyError("boom")
        assert (current_ministry_id(), _guc()) == (a.pk, str(a.pk))


def test_a_scope_inside_a_broken_transaction_does_not_outlive_it(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    with pytest.raises(DatabaseError), transaction.atomic():
        with ministry_scope(ministry_id=a.pk), connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
    assert current_ministry_id() is None
    assert _guc() == ""


@pytest.mark.parametrize("bad", [True, False])
def test_a_boolean_is_not_a_ministry_id(bad: bool) -> None:
    """``True`` is an ``int`` in Python: the ORM would filter on ministry 1 while PostgreSQL
    got the text 'True'. A ministry id is a positive integer, never a boolean (e.g. from a
    task's JSON arguments)."""
    with pytest.raises(ScopeError), ministry_scope(ministry_id=bad):
        pass


def test_a_tenant_task_refuses_a_boolean_ministry_id() -> None:
    @celery_app.task(base=TenantTask, name="tests.review_bool_scope")
    def task(*, ministry_id: int) -> int | None:
        return current_ministry_id()

    with pytest.raises(ScopeError):
        task(ministry_id=True)
