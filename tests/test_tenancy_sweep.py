"""Isolation sweep: every TenantModel is proven separated in the ORM *and* in PostgreSQL.

Adding a TenantModel without a factory here fails ``test_every_tenant_model_has_a_factory``,
so no tenant table escapes the sweep. Models are found through the app registry:
a model with a ministry foreign key that is neither a TenantModel nor declared
in ``PLATFORM_LEVEL`` fails ``test_every_model_with_a_ministry_is_tenant_or_declared``,
and every foreign key between ministry-owned rows is proven to refuse a row of
another ministry (``test_foreign_key_to_another_ministrys_row_is_refused``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.apps import apps
from django.db import connection, models, transaction
from django.db.utils import DatabaseError, IntegrityError
from django.utils import timezone

from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant
from apps.accounts.tests.factories import sweep_local_grant_policy, sweep_local_role_grant
from apps.aiapps.models import AppFavourite, AppRun, MinistryApp
from apps.aiapps.tests.factories import sweep_app_favourite, sweep_app_run, sweep_ministry_app
from apps.chat.models import Conversation, Message
from apps.chat.tests.factories import sweep_conversation, sweep_message
from apps.console.models import Announcement, Notification
from apps.console.tests.factories import sweep_notification
from apps.documents.models import Answer, Chunk, Document, DocumentRetention, Workspace, WorkspaceMember
from apps.documents.tests.factories import (
    sweep_answer,
    sweep_chunk,
    sweep_document,
    sweep_retention,
    sweep_workspace,
    sweep_workspace_member,
)
from apps.evaluation.arena_models import ArenaStream
from apps.evaluation.models import (
    ArenaBattle,
    ArenaVote,
    MinistryRun,
    MinistryRunCandidate,
    MinistryRunItem,
    MinistrySuite,
    MinistryTask,
)
from apps.evaluation.tests.arena_factories import sweep_arena_stream
from apps.evaluation.tests.factories import sweep_arena_battle, sweep_arena_vote
from apps.evaluation.tests.factories_suites import (
    sweep_ministry_run,
    sweep_ministry_run_candidate,
    sweep_ministry_run_item,
    sweep_ministry_suite,
    sweep_ministry_task,
)
from apps.quotas.models import GraceWindow, Limit, UsageDaily, UsageRecord
from apps.registry.models import Alias, AliasGrant
from apps.search.models import IndexedChunk
from apps.tenancy.constraints import (
    SameMinistryForeignKey,
    install_same_ministry_foreign_keys,
    same_ministry_foreign_keys,
)
from apps.tenancy.db import owner_mode
from apps.tenancy.managers import TenantManager
from apps.tenancy.models import Ministry, Team, TeamMembership, TenantModel
from apps.tenancy.operations import POLICY_NAME
from apps.tenancy.scope import GUC_NAME, ScopeError, ministry_scope
from apps.tenancy.tests.factories import sweep_team, sweep_team_membership

FACTORIES: dict[type[TenantModel], Callable[[Any], TenantModel]] = {
    Announcement: lambda ministry: Announcement(ministry=ministry, title="内部連絡", body="A only"),
    Notification: sweep_notification,
    LocalGrantPolicy: sweep_local_grant_policy,
    LocalRoleGrant: sweep_local_role_grant,
    AliasGrant: lambda ministry: AliasGrant(
        ministry=ministry,
        alias=Alias.objects.get_or_create(
            name="sweep-alias", defaults={"display_name_ja": "検証", "display_name_en": "Sweep"}
        )[0],
    ),
    UsageRecord: lambda ministry: UsageRecord(
        ministry=ministry, alias_name="sweep-alias", status="ok", prompt_tokens=3, completion_tokens=5
    ),
    Limit: lambda ministry: Limit(ministry=ministry, level="ministry", alias_name="sweep-alias", rpm=10),
    GraceWindow: lambda ministry: GraceWindow(ministry=ministry, zone="on_prem", minute=1, admitted=1),
    UsageDaily: lambda ministry: UsageDaily(
        ministry=ministry,
        day=timezone.localdate(),
        alias_name="sweep-alias",
        feature="chat",
        requests=1,
        updated_at=timezone.now(),
    ),
    Conversation: sweep_conversation,
    IndexedChunk: lambda ministry: IndexedChunk(
        ministry=ministry, chunk_id=1, workspace_id=1, document_id=1, ordinal=0, text="A only"
    ),
    Message: sweep_message,
    Workspace: sweep_workspace,
    WorkspaceMember: sweep_workspace_member,
    Document: sweep_document,
    Chunk: sweep_chunk,
    DocumentRetention: sweep_retention,
    Answer: sweep_answer,
    Team: sweep_team,
    MinistryApp: sweep_ministry_app,
    AppRun: sweep_app_run,
    AppFavourite: sweep_app_favourite,
    TeamMembership: sweep_team_membership,
    ArenaBattle: sweep_arena_battle,
    ArenaVote: sweep_arena_vote,
    ArenaStream: sweep_arena_stream,
    MinistrySuite: sweep_ministry_suite,
    MinistryTask: sweep_ministry_task,
    MinistryRun: sweep_ministry_run,
    MinistryRunCandidate: sweep_ministry_run_candidate,
    MinistryRunItem: sweep_ministry_run_item,
}


# Models that belong to a ministry but are not TenantModels (no RLS), and why.
# Each must filter on its ministry explicitly wherever it is read.
PLATFORM_LEVEL: dict[str, str] = {
    "tenancy.Membership": "identity: the middleware reads it before a scope exists; it names the scope",
    "gateway.ApiKey": "identity of /v1: authentication finds it before a scope exists; it names the ministry",
    "audit.AuditEvent": "platform-wide append-only chain (ministry may be null); auditors read across them",
    "evaluation.Run": "procurement platform data, no ministry content; the ministry is whose ledger pays",
}


def tenant_models() -> list[type[TenantModel]]:
    return [m for m in apps.get_models() if issubclass(m, TenantModel)]


def models_with_a_ministry() -> list[type[models.Model]]:
    """Every installed model with a foreign key to Ministry (under any field name)."""
    return [
        m
        for m in apps.get_models()
        if any(
            isinstance(f, models.ForeignKey) and f.related_model is Ministry for f in m._meta.concrete_fields
        )
    ]


def test_every_model_with_a_ministry_is_tenant_or_declared() -> None:
    undeclared = [
        m._meta.label
        for m in models_with_a_ministry()
        if not issubclass(m, TenantModel) and m._meta.label not in PLATFORM_LEVEL
    ]
    assert not undeclared, (
        f"{undeclared} carry a ministry: make them TenantModels, or list them in PLATFORM_LEVEL with a reason"
    )
    labels = {m._meta.label: m for m in models_with_a_ministry()}
    stale = [
        label for label in PLATFORM_LEVEL if label not in labels or issubclass(labels[label], TenantModel)
    ]
    assert not stale, f"no longer platform-level models with a ministry: {stale}"


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


def _table_and_partitions(cursor: Any, table: str) -> list[str]:
    """The table and, if it is partitioned, every partition (at any depth)."""
    cursor.execute("SELECT relid::text FROM pg_partition_tree(%s::regclass)", [table])
    return [table] + [name for (name,) in cursor.fetchall() if name != table]


@pytest.mark.django_db
def test_every_tenant_table_has_forced_rls_and_policy() -> None:
    """Partitions included: PostgreSQL does not apply the parent's RLS to a partition
    queried by name, so each needs its own (apps.quotas.partitions)."""
    with connection.cursor() as cursor:
        tables = [t for model in tenant_models() for t in _table_and_partitions(cursor, model._meta.db_table)]
        assert "quotas_usagerecord_default" in tables, "the usage ledger's partitions must be swept"
        for table in tables:
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


def test_moving_a_row_to_another_ministry_is_refused_by_the_database(
    model: type[TenantModel], row_of_a: TenantModel, ministries: tuple[Any, Any]
) -> None:
    """In A's own scope (so RLS lets A touch the row), UPDATE … SET ministry_id = B fails
    RLS ``WITH CHECK``: raw SQL and the ORM's ``update()`` alike."""
    a, b = ministries
    table = model._meta.db_table
    with pytest.raises(DatabaseError) as excinfo, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, str(a.pk)])
            cursor.execute(f'UPDATE "{table}" SET ministry_id = %s WHERE id = %s', [b.pk, row_of_a.pk])
    assert isinstance(excinfo.value.__cause__, psycopg.errors.InsufficientPrivilege)
    with pytest.raises(DatabaseError), ministry_scope(ministry_id=a.pk):
        model.objects.filter(pk=row_of_a.pk).update(ministry_id=b.pk)
    with ministry_scope(ministry_id=a.pk):
        assert model.objects.filter(pk=row_of_a.pk).exists(), "the row must still be A's"


# --- Foreign keys between ministry-owned rows -------------------------------------------


def _api_key_of(ministry: Any) -> int:
    from apps.gateway.services import api_key_create

    key, _plaintext = api_key_create(
        actor=None, ministry=ministry, name="sweep", expires_at=timezone.now() + timedelta(days=1)
    )
    return int(key.pk)


# Ministry-keyed models that are not TenantModels but are referenced by tenant rows.
TARGET_FACTORIES: dict[str, Callable[[Any], int]] = {"gateway.ApiKey": _api_key_of}

SAME_MINISTRY_FKS = same_ministry_foreign_keys()


def _saved_row(model: type[models.Model], ministry: Any) -> int:
    """The id of a new row of ``model`` in ``ministry``."""
    if issubclass(model, TenantModel):
        with ministry_scope(ministry_id=ministry.pk):
            obj = FACTORIES[model](ministry)
            obj.save()
        return int(obj.pk)
    factory = TARGET_FACTORIES.get(model._meta.label)
    assert factory is not None, f"add a factory for {model._meta.label} to TARGET_FACTORIES"
    return factory(ministry)


def test_same_ministry_foreign_keys_are_enumerated() -> None:
    found = {(fk.table, fk.column) for fk in SAME_MINISTRY_FKS}
    assert {("chat_message", "conversation_id"), ("quotas_usagerecord", "api_key_id")} <= found, found


@pytest.mark.parametrize("fk", SAME_MINISTRY_FKS, ids=str)
def test_foreign_key_to_another_ministrys_row_is_refused(
    fk: SameMinistryForeignKey, ministries: tuple[Any, Any]
) -> None:
    """A row of B cannot point at a row of A, although PostgreSQL checks foreign keys
    without RLS: the composite (ministry_id, id) constraint refuses it, on UPDATE and INSERT."""
    a, b = ministries
    target_of_a = _saved_row(fk.target_model, a)
    target_of_b = _saved_row(fk.target_model, b)
    row_of_b = _saved_row(fk.model, b)
    table, column = connection.ops.quote_name(fk.table), connection.ops.quote_name(fk.column)
    with ministry_scope(ministry_id=b.pk):  # B's own scope: RLS lets B change B's row
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [target_of_b, row_of_b])
            assert cursor.rowcount == 1, "a reference inside the ministry must work"
        with pytest.raises(IntegrityError) as excinfo, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [target_of_a, row_of_b])
        assert isinstance(excinfo.value.__cause__, psycopg.errors.ForeignKeyViolation)
        new_row = FACTORIES[fk.model](b)  # type: ignore[index]
        setattr(new_row, fk.model._meta.get_field(fk.field).attname, target_of_a)
        with pytest.raises(IntegrityError), transaction.atomic():
            fk.model._base_manager.bulk_create([new_row])


@pytest.mark.django_db
def test_same_ministry_constraints_are_installed_by_migrate() -> None:
    """``post_migrate`` installed every constraint already: running it again creates nothing."""
    with owner_mode():
        assert install_same_ministry_foreign_keys() == []
    with connection.cursor() as cursor:
        for fk in SAME_MINISTRY_FKS:
            cursor.execute("SELECT contype FROM pg_constraint WHERE conname = %s", [fk.constraint_name])
            assert cursor.fetchone() == ("f",), f"{fk}: constraint {fk.constraint_name} missing"
