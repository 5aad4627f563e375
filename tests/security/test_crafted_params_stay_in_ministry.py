"""Crafted inputs that name another ministry never reach it (regression tests, all expected to pass).

* IdP group paths with ``..``, empty segments or a team path that climbs out
  grant nothing in the ministry the path only *mentions* (invariant 9);
* B's admin adding ``ministry=<A>`` (and other ids) to the usage CSV and the
  audit browser still gets B's rows only (the ministry comes from the membership).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.claims import role_grants_from_claims, team_grants_from_claims
from apps.audit.services import audit_record
from apps.console.tests.insight_support import People, add_usage, client_for, make_people


@pytest.mark.parametrize(
    "group",
    [
        "/ministries/digital/../soumu/admins",
        "/ministries/digital/teams/../../soumu/admins",
        "/ministries/digital/teams/x/../../../soumu/admins",
        "/ministries//soumu/admins",
        "/ministries/digital/admins/../../soumu/admins",
    ],
)
def test_crafted_group_paths_grant_nothing_in_the_mentioned_ministry(group: str) -> None:
    grants = role_grants_from_claims({"groups": [group]}, client_id="gennai")
    assert "soumu" not in grants.ministries
    assert "soumu" not in team_grants_from_claims({"groups": [group]})


@pytest.mark.parametrize(
    "group",
    ["/ministries/digital/teams/..", "/ministries/digital/teams/../soumu", "/ministries/digital/teams/a.b"],
)
def test_team_slugs_that_are_not_codes_make_no_team(group: str) -> None:
    assert team_grants_from_claims({"groups": [group]}) == {}


def test_team_group_never_grants_a_ministry_role() -> None:
    grants = role_grants_from_claims({"groups": ["/ministries/digital/teams/admins"]}, client_id="gennai")
    assert grants.roles_in("digital") == ["staff"]
    assert team_grants_from_claims({"groups": ["/ministries/digital/teams/admins"]}) == {
        "digital": frozenset({"admins"})
    }


@pytest.fixture
def people(ministries: tuple[Any, Any]) -> People:
    p = make_people(ministries)
    add_usage(p.a, model="secret-model-of-a", prompt=100, completion=50, user=p.staff_a, n=2)
    add_usage(p.b, model="model-of-b", prompt=7, completion=7, user=p.admin_b, n=1)
    audit_record(actor=None, action="test.sec_secret_a", target_type="x", target_id="1", ministry_id=p.a.pk)
    audit_record(actor=None, action="test.sec_own_b", target_type="x", target_id="1", ministry_id=p.b.pk)
    return p


@pytest.mark.parametrize("group_by", ["", "model", "user", "team", "feature"])
def test_usage_csv_ignores_a_crafted_ministry_parameter(people: People, group_by: str) -> None:
    response = client_for(people.admin_b).get(
        reverse("console:usage_csv"),
        {"ministry": people.a.pk, "ministry_id": people.a.pk, "group_by": group_by},
    )
    assert response.status_code == 200
    assert "soumu" in response["Content-Disposition"] and "digital" not in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode("utf-8-sig")  # type: ignore[attr-defined]
    assert "secret-model-of-a" not in body and people.staff_a.username not in body
    header, *rows = list(csv.reader(io.StringIO(body)))
    total = header.index("total_tokens")
    assert sum(int(row[total]) for row in rows) == 14  # B's one record: 7 + 7 tokens


def test_audit_browser_and_export_ignore_a_crafted_ministry_parameter(people: People) -> None:
    admin_b = client_for(people.admin_b)
    page = admin_b.get(reverse("console:audit_list"), {"ministry": people.a.pk, "action": "test."})
    assert page.status_code == 200
    html = page.content.decode()
    assert "test.sec_secret_a" not in html and "test.sec_own_b" in html
    export = admin_b.get(reverse("console:audit_export"), {"ministry": people.a.pk})
    assert export.status_code == 200 and "soumu" in export["Content-Disposition"]
    body = b"".join(export.streaming_content).decode()  # type: ignore[attr-defined]
    assert "test.sec_secret_a" not in body and "test.sec_own_b" in body


def test_auditor_cannot_write_through_the_console(people: People) -> None:
    auditor = client_for(people.auditor_a)
    for name in ("console:limit_create", "console:team_create", "console:retention"):
        assert (
            auditor.post(
                reverse(name),
                {"level": "ministry", "monthly_tokens": "1", "code": "x", "name": "x", "days": "1"},
            ).status_code
            == 403
        )
    assert auditor.post(reverse("console:audit_export")).status_code in (403, 405)
