"""The audit log is append-only for the application and tamper-evident for everyone else."""

from __future__ import annotations

from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record, audit_verify
from apps.tenancy.db import owner_mode


@pytest.fixture
def chain(ministries: tuple[Any, Any]) -> list[AuditEvent]:
    a, b = ministries
    return [
        audit_record(actor=None, action="test.one", target_type="thing", target_id=1, ministry_id=a.pk),
        audit_record(actor=None, action="test.two", target_type="thing", target_id=2, ministry_id=b.pk),
        audit_record(actor=None, action="test.three", target_type="thing", target_id=3, data={"k": "v"}),
    ]


def _verify() -> str:
    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def test_audit_verify_reports_an_intact_chain(chain: list[AuditEvent]) -> None:
    assert "audit chain intact: 3 events verified" in _verify()


def test_audit_verify_reports_an_edited_row(chain: list[AuditEvent]) -> None:
    """Someone with the owner role (a DBA, a stolen migration login) edits an event."""
    victim = chain[1]
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET data = %s WHERE id = %s", ['{"changed": true}', victim.pk]
        )
    with pytest.raises(CommandError) as excinfo:
        _verify()
    assert f"event id={victim.pk}" in str(excinfo.value)
    assert "edited" in str(excinfo.value)


def test_audit_verify_reports_a_deleted_row(chain: list[AuditEvent]) -> None:
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [chain[1].pk])
    report = audit_verify()
    assert (report.intact, report.first_bad_id) == (False, chain[2].pk)
    with pytest.raises(CommandError, match=f"event id={chain[2].pk}"):
        _verify()


def test_audit_verify_reports_a_rewritten_hash(chain: list[AuditEvent]) -> None:
    """Recomputing the edited row's own hash does not help: the next row no longer links to it."""
    from apps.audit.services import _digest, _payload

    victim = chain[0]
    victim.action = "test.forged"
    forged = _digest(victim.prev_hash, _payload(victim))
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET action = %s, hash = %s WHERE id = %s",
            [victim.action, forged, victim.pk],
        )
    assert audit_verify().first_bad_id == chain[1].pk


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET action = 'erased' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ],
    ids=["update", "delete"],
)
def test_app_role_cannot_change_or_delete_audit_events(chain: list[AuditEvent], statement: str) -> None:
    with pytest.raises(DatabaseError) as excinfo, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, [chain[0].pk])
    assert isinstance(excinfo.value.__cause__, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(excinfo.value)
    assert "audit chain intact: 3 events verified" in _verify()


def test_app_role_cannot_truncate_the_audit_log(chain: list[AuditEvent]) -> None:
    with pytest.raises(DatabaseError) as excinfo, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_auditevent")
    assert isinstance(excinfo.value.__cause__, psycopg.errors.InsufficientPrivilege)


def test_audit_verify_reports_a_backdated_row(chain: list[AuditEvent]) -> None:
    """The time is hashed too: moving an event out of an export period is tampering."""
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET created_at = created_at - interval '30 days' WHERE id = %s",
            [chain[1].pk],
        )
    assert audit_verify().first_bad_id == chain[1].pk
