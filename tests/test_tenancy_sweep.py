"""Isolation sweep: every TenantModel is proven separated in the ORM *and* in PostgreSQL.

Adding a TenantModel without a factory here fails ``test_every_tenant_model_has_a_factory``,
so no tenant table escapes the sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.apps import apps
from django.db import connection, transaction
from django.db.utils import DatabaseError

from apps.chat.models import Conversation, Message
from apps.chat.tests.factories import sweep_conversation, sweep_message
from apps.console.models import Announcement
from apps.quotas.models import UsageRecord
from apps.registry.models import Alias, AliasGrant
from apps.tenancy.managers import TenantManager
from apps.tenancy.models import TenantModel
from apps.tenancy.operations import POLICY_NAME
from apps.tenancy.scope import GUC_NAME, ScopeError, ministry_scope

FACTORIES: dict[type[TenantModel], Callable[[Any], TenantModel]] = {
    Announcement: lambda ministry: Announcement(ministry=ministry, title="内部連絡", body="A only"),
    AliasGrant: lambda ministry: AliasGrant(
        ministry=ministry,
        alias=Alias.objects.get_or_create(
            name="sweep-alias", defaults={"display_name_ja": "検証", "display_name_en": "Sweep"}
        )[0],
    ),
    UsageRecord: lambda ministry: UsageRecord(
        ministry=ministry, alias_name="sweep-alias", status="ok", prompt_tokens=3, completion_tokens=5
    ),
    Conversation: sweep_conversation,
    Message: sweep_message,
}


def tenant_models() -> list[type[TenantModel]]:
    return [m for m in apps.get_models() if issubclass(m, TenantModel)]


def test_every_tenant_model_has_a_factory() -> None:
    assert tenant_models(), "expected at least one TenantModel"
    missing = [m.__name__ for m in tenant_models() if m not in FACTORIES]
    assert not missing, f"add these TenantModels to the isolation sweep: {missing}"


@pytest.fixture(params=sorted(FACTORIES, key=lambda m: m.__name__), ids=lambda m: m.__name__)
def model(request: pytest.FixtureRequest) -> type[TenantModel]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def row_of_a(model: type[TenantModel], ministries: tuple[Any, Any]) -> TenantModel:
    a, _ = ministries
    with ministry_scope(ministry_id=a.pk):
        obj = FACTORIES[model](a)
        obj.save()
    return obj


def test_scoped_manager_is_default(model: type[TenantModel]) -> None:
    assert isinstance(model._default_manager, TenantManager)
    field = model._meta.get_field("ministry")
    assert not field.null


def test_indexes_lead_with_ministry(model: type[TenantModel]) -> None:
    for index in model._meta.indexes:
        assert index.fields[0] in ("ministry", "ministry_id"), f"{model.__name__}.{index.name}"


@pytest.mark.django_db
def test_unscoped_query_raises(model: type[TenantModel]) -> None:
    with pytest.raises(ScopeError):
        list(model.objects.all())
    with pytest.raises(ScopeError):
        model.objects.filter(pk=1).exists()


def test_other_ministry_cannot_read_update_delete(
    model: type[TenantModel], row_of_a: TenantModel, ministries: tuple[Any, Any]
) -> None:
    a, b = ministries
    with ministry_scope(ministry_id=b.pk):
        assert not model.objects.filter(pk=row_of_a.pk).exists()
        assert model.objects.filter(pk=row_of_a.pk).update(ministry_id=b.pk) == 0
        assert model.objects.filter(pk=row_of_a.pk).delete()[0] == 0
        with pytest.raises(ScopeError):
            row_of_a.save()
    with ministry_scope(ministry_id=a.pk):
        assert model.objects.filter(pk=row_of_a.pk).exists(), "A must still see its row"


def _raw_count(table: str, pk: int, ministry_id: int | None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config(%s, %s, true)", [GUC_NAME, "" if ministry_id is None else str(ministry_id)]
        )
        cursor.execute(f'SELECT count(*) FROM "{table}" WHERE id = %s', [pk])
        return int(cursor.fetchone()[0])


def test_rls_hides_rows_from_raw_sql(
    model: type[TenantModel], row_of_a: TenantModel, ministries: tuple[Any, Any]
) -> None:
    """The database alone enforces separation: no ORM manager involved."""
    a, b = ministries
    table = model._meta.db_table
    with transaction.atomic():
        assert _raw_count(table, row_of_a.pk, a.pk) == 1
        assert _raw_count(table, row_of_a.pk, b.pk) == 0
        assert _raw_count(table, row_of_a.pk, None) == 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, str(b.pk)])
            cursor.execute(f'UPDATE "{table}" SET ministry_id = ministry_id WHERE id = %s', [row_of_a.pk])
            assert cursor.rowcount == 0
            cursor.execute(f'DELETE FROM "{table}" WHERE id = %s', [row_of_a.pk])
            assert cursor.rowcount == 0


def test_insert_into_other_ministry_rejected_by_database(
    model: type[TenantModel], ministries: tuple[Any, Any]
) -> None:
    a, b = ministries
    obj = FACTORIES[model](a)
    with pytest.raises(DatabaseError) as excinfo, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, str(b.pk)])
        # Bypass the ORM guard (no scope active): only RLS stands in the way.
        model._base_manager.bulk_create([obj])
    assert isinstance(excinfo.value.__cause__, psycopg.errors.InsufficientPrivilege)


@pytest.mark.django_db
def test_every_tenant_table_has_forced_rls_and_policy() -> None:
    with connection.cursor() as cursor:
        for model in tenant_models():
            table = model._meta.db_table
            cursor.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table]
            )
            assert cursor.fetchone() == (True, True), f"{table} lacks ENABLE/FORCE ROW LEVEL SECURITY"
            cursor.execute(
                "SELECT qual, with_check FROM pg_policies WHERE tablename = %s AND policyname = %s",
                [table, POLICY_NAME],
            )
            row = cursor.fetchone()
            assert row is not None, f"{table} lacks the {POLICY_NAME} policy"
            assert "gennai.ministry_id" in row[0] and "gennai.ministry_id" in row[1]


@pytest.mark.django_db
def test_app_role_cannot_bypass_rls() -> None:
    """The connection acts as a role that owns nothing and cannot bypass RLS."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        user, is_super, bypass = cursor.fetchone()
        assert (is_super, bypass) == (False, False)
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = %s", [user]
        )
        assert cursor.fetchone()[0] == 0
        with pytest.raises(DatabaseError), transaction.atomic():
            cursor.execute("ALTER TABLE console_announcement DISABLE ROW LEVEL SECURITY")
