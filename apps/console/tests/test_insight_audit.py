"""The audit browser and its JSONL export: each ministry reads only its own trail; platform
auditors read any ministry's, and every such read is itself on the chain."""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.audit.services import AUDIT_EXPORT, CROSS_MINISTRY_AUDIT_READ, audit_record, audit_verify

from .insight_support import People, client_for, make_people

URL = reverse("console:audit_list")
EXPORT = reverse("console:audit_export")


@pytest.fixture
def people(ministries: tuple[Any, Any]) -> People:
    p = make_people(ministries)
    audit_record(
        actor=p.admin_a, action="test.secret_a", target_type="thing", target_id=1, ministry_id=p.a.pk
    )
    audit_record(
        actor=p.admin_b, action="test.secret_b", target_type="thing", target_id=2, ministry_id=p.b.pk
    )
    audit_record(actor=None, action="test.platform_only", target_type="thing", target_id=3)
    return p


def shown(response: Any) -> set[str]:
    """The actions of the events in the page's table (not the filter's suggestions)."""
    return set(re.findall(r'data-testid="audit-action-cell">([^<]*)</td>', response.content.decode()))


def _jsonl(response: Any) -> list[dict[str, Any]]:
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in body.splitlines() if line]


@pytest.mark.parametrize("who", ["admin_a", "auditor_a"])
def test_ministry_readers_see_their_own_ministry_only(people: People, who: str) -> None:
    client = client_for(getattr(people, who))
    actions = shown(client.get(URL))
    assert "test.secret_a" in actions
    assert "test.secret_b" not in actions and "test.platform_only" not in actions
    # Naming B in the query string changes nothing: the ministry comes from the membership.
    response = client.get(URL, {"ministry": people.b.pk})
    assert "test.secret_a" in shown(response) and "test.secret_b" not in response.content.decode()
    assert not AuditEvent.objects.filter(action=CROSS_MINISTRY_AUDIT_READ).exists()


def test_b_admin_sees_nothing_of_a(people: People) -> None:
    response = client_for(people.admin_b).get(URL, {"ministry": people.a.pk})
    assert "test.secret_b" in shown(response) and "test.secret_a" not in response.content.decode()
    export = _jsonl(client_for(people.admin_b).get(EXPORT, {"ministry": people.a.pk}))
    assert export and {line["ministry"] for line in export} == {"soumu"}


@pytest.mark.parametrize("who", ["staff_a", "procurement_a"])
def test_staff_and_procurement_cannot_read_the_audit_log(people: People, who: str) -> None:
    client = client_for(getattr(people, who))
    assert client.get(URL).status_code == 403
    assert client.get(EXPORT).status_code == 403


def test_anonymous_is_sent_to_login(people: People) -> None:
    response = client_for(None).get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_audit_log_is_read_only(people: People) -> None:
    assert client_for(people.admin_a).post(URL).status_code == 405
    assert client_for(people.platform_auditor).post(EXPORT).status_code == 405


def test_filters_by_action_actor_and_htmx_partial(people: People) -> None:
    audit_record(actor=people.auditor_a, action="other.thing", target_type="x", ministry_id=people.a.pk)
    client = client_for(people.admin_a)
    assert shown(client.get(URL, {"action": "test."})) == {"test.secret_a"}
    assert shown(client.get(URL, {"actor": "ins-auditor"})) == {"other.thing"}
    assert shown(client.get(URL, {"start": "2020-01-01", "end": "2020-01-31"})) == set()
    partial = client.get(URL, {"action": "test."}, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="audit-table"' in partial and "<html" not in partial


def test_platform_auditor_starts_on_own_ministry_and_cross_reads_are_audited(people: People) -> None:
    client = client_for(people.platform_auditor)
    actions = shown(client.get(URL))
    assert "test.secret_a" in actions and "test.secret_b" not in actions
    assert not AuditEvent.objects.filter(action=CROSS_MINISTRY_AUDIT_READ).exists()

    actions = shown(client.get(URL, {"ministry": people.b.pk}))
    assert "test.secret_b" in actions and "test.secret_a" not in actions
    event = AuditEvent.objects.get(action=CROSS_MINISTRY_AUDIT_READ)
    assert (event.actor_id, event.ministry_id) == (people.platform_auditor.pk, people.b.pk)
    assert event.data["reader_ministry_id"] == people.a.pk

    everything = shown(client.get(URL, {"ministry": ""}))  # every ministry
    assert {"test.secret_a", "test.secret_b", "test.platform_only"} <= everything
    assert AuditEvent.objects.filter(action=CROSS_MINISTRY_AUDIT_READ, ministry__isnull=True).count() == 1
    assert audit_verify().intact


def test_ministry_export_contains_only_the_callers_ministry_and_is_audited(people: People) -> None:
    response = client_for(people.auditor_a).get(EXPORT, {"ministry": people.b.pk})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert "attachment" in response["Content-Disposition"] and "digital" in response["Content-Disposition"]
    lines = _jsonl(response)
    assert {line["ministry"] for line in lines} == {"digital"}
    assert "test.secret_a" in {line["action"] for line in lines}
    assert all(len(line["hash"]) == 64 and len(line["prev_hash"]) == 64 for line in lines)
    export = AuditEvent.objects.get(action=AUDIT_EXPORT)
    assert (export.actor_id, export.ministry_id, export.data["via"]) == (
        people.auditor_a.pk,
        people.a.pk,
        "console",
    )


def test_platform_auditor_exports_one_chosen_ministry(people: People) -> None:
    client = client_for(people.platform_auditor)
    lines = _jsonl(client.get(EXPORT, {"ministry": people.b.pk}))
    assert {line["ministry"] for line in lines} == {"soumu"}
    assert AuditEvent.objects.get(action=AUDIT_EXPORT).ministry_id == people.b.pk


def test_export_refuses_a_bad_period(people: People) -> None:
    response = client_for(people.admin_a).get(EXPORT, {"start": "2026-05-10", "end": "2026-05-01"})
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action=AUDIT_EXPORT).exists()


def test_audit_export_command(people: People, tmp_path: Any) -> None:
    from django.utils import timezone

    today = timezone.localdate().isoformat()
    out, err = StringIO(), StringIO()
    call_command("audit_export", ministry="digital", start=today, end=today, stdout=out, stderr=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines and {line["ministry"] for line in lines} == {"digital"}
    assert "test.secret_a" in {line["action"] for line in lines}
    target = tmp_path / "a.jsonl"
    call_command("audit_export", ministry="soumu", start=today, end=today, output=str(target), stderr=err)
    assert {json.loads(line)["ministry"] for line in target.read_text().splitlines()} == {"soumu"}
    assert AuditEvent.objects.filter(action=AUDIT_EXPORT, data__via="command").count() == 2
    with pytest.raises(CommandError, match="unknown ministry"):
        call_command("audit_export", ministry="nope", start=today, end=today, stdout=out)
    with pytest.raises(CommandError, match="not a date"):
        call_command("audit_export", ministry="digital", start="yesterday", end=today, stdout=out)
    # The past is empty: nothing of today leaks into an earlier period.
    out = StringIO()
    call_command(
        "audit_export", ministry="digital", start="2020-01-01", end="2020-01-31", stdout=out, stderr=err
    )
    assert out.getvalue() == ""


def test_export_reads_in_batches_the_same_under_wsgi_and_asgi(people: People, monkeypatch: Any) -> None:
    """Under ASGI the export streams from an async iterator (one database hop per batch)."""
    from asgiref.sync import async_to_sync

    from apps.audit.selectors import AuditFilter, audit_event_export
    from apps.console import views_audit

    for n in range(5):
        audit_record(actor=None, action=f"test.batch{n}", target_type="thing", ministry_id=people.a.pk)
    monkeypatch.setattr(views_audit, "EXPORT_BATCH", 2)
    events = audit_event_export(ministry_id=people.a.pk, filters=AuditFilter())

    async def collect() -> list[str]:
        return [line async for line in views_audit.export_lines_async(events)]

    sync_lines = list(views_audit.export_lines(events))
    assert async_to_sync(collect)() == sync_lines
    ids = [json.loads(line)["id"] for line in sync_lines]
    assert ids == sorted(ids) and len(ids) == events.count() >= 6
