"""Attacks on the ministry console found in review: each test failed before its fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.quotas.budget_models import Limit
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user
from tests.support.races import race_through

from .url_matrix import World, build_world


@pytest.fixture
def world(ministries: Any) -> World:
    return build_world(ministries)


def _as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _local_grant(world: World, username: str, role: str, *, allow_admin: bool = False) -> Any:
    """A staff member of A who holds ``role`` by a local grant of A's SSO admin (policy on)."""
    from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant

    user = make_user(username, world.a, ["staff"])
    with ministry_scope(ministry_id=world.a.pk):
        LocalGrantPolicy.objects.update_or_create(
            ministry=world.a, defaults={"enabled": True, "allow_ministry_admin": allow_admin}
        )
        LocalRoleGrant.objects.create(
            ministry=world.a,
            user=user,
            role=role,
            expires_at=timezone.now() + timedelta(days=7),
            granted_by=world.users["admin_a"],
        )
    return user


# --- Local grants count in the quota service as everywhere else in the console ----------------


def test_a_locally_granted_auditor_reads_the_member_and_limit_pages(world: World) -> None:
    """The console let a local auditor in, but the quota selector read ``Membership.roles`` (SSO
    only) and answered 403 on the member page and the limits page."""
    auditor = _local_grant(world, "review-local-auditor", "ministry_auditor")
    client = _as(auditor)
    assert client.get("/console/").status_code == 200
    assert client.get(f"/console/members/{world.users['member_a'].pk}/").status_code == 200
    assert client.get("/console/limits/").status_code == 200
    assert client.get(f"/console/limits/{world.ids['limit_id']}/edit/").status_code == 403  # read only
    response = client.post("/console/limits/new/", {"level": "ministry", "monthly_tokens": "1"})
    assert response.status_code == 403


def test_a_locally_granted_admin_sets_limits_and_is_audited(world: World) -> None:
    """Where the policy lets a ministry admin be granted locally, the console showed the limit
    forms to that admin, and the quota service refused the save with a 403."""
    admin = _local_grant(world, "review-local-admin", "ministry_admin", allow_admin=True)
    client = _as(admin)
    response = client.post("/console/limits/new/", {"level": "ministry", "monthly_tokens": "12345"})
    assert response.status_code == 302, response.content.decode()[:500]
    with ministry_scope(ministry_id=world.a.pk):
        row = Limit.objects.get(level="ministry", alias_name="")
    assert row.monthly_tokens == 12345 and row.updated_by == admin
    event = AuditEvent.objects.filter(action="quota.limit_set").order_by("-id").first()
    assert event is not None and event.actor == admin and event.ministry_id == world.a.pk


def test_a_lapsed_local_grant_gives_no_access_to_the_quota_service(world: World) -> None:
    """The other direction: a grant whose policy was switched off counts nowhere."""
    from apps.accounts import local_roles
    from apps.accounts.models import LocalGrantPolicy
    from apps.quotas.limits import limit_set

    admin = _local_grant(world, "review-lapsed-admin", "ministry_admin", allow_admin=True)
    with ministry_scope(ministry_id=world.a.pk):
        LocalGrantPolicy.objects.filter(ministry=world.a).update(allow_ministry_admin=False)
        local_roles.grants_forget(ministry_id=world.a.pk, user_id=admin.pk)
        from django.core.exceptions import PermissionDenied

        with pytest.raises(PermissionDenied):
            limit_set(actor=admin, level="ministry", monthly_tokens=1)
    assert _as(admin).get("/console/limits/").status_code == 403


# --- Two admins (or one double-submitted form) at once -------------------------------------------


def _in_scope(ministry: Any, call: Any) -> Any:
    def scoped() -> None:
        with ministry_scope(ministry_id=ministry.pk):
            call()

    return scoped


@pytest.mark.django_db(transaction=True)
def test_a_team_created_twice_at_once_is_one_team_and_one_clear_refusal(
    ministries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests passed "no team with this code" and both inserted: the second was a 500."""
    from django.core.exceptions import ValidationError

    from apps.console import services
    from apps.tenancy.models import Team

    a, _ = ministries
    admins = [make_user(f"race-team-admin-{n}", a, ["ministry_admin"]) for n in (1, 2)]
    calls = [
        _in_scope(a, lambda admin=admin: services.team_create(actor=admin, ministry=a, code="dup", name="x"))
        for admin in admins
    ]
    results = race_through(monkeypatch, Team, "full_clean", calls)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "ValidationError"]
    assert isinstance(next(r for r in results if r is not None), ValidationError)
    with ministry_scope(ministry_id=a.pk):
        assert Team.objects.filter(code="dup").count() == 1
    assert AuditEvent.objects.filter(action="team.create").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_team_member_added_twice_at_once_is_one_membership(
    ministries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.exceptions import ValidationError

    from apps.console import services
    from apps.tenancy.models import Team, TeamMembership

    a, _ = ministries
    admin = make_user("race-member-admin", a, ["ministry_admin"])
    member = make_user("race-member", a, ["staff"])
    with ministry_scope(ministry_id=a.pk):
        team = Team.objects.create(code="race", name="race", source="local")
    calls = [
        _in_scope(a, lambda: services.team_member_add(actor=admin, ministry=a, team=team, user=member))
        for _n in range(2)
    ]
    results = race_through(monkeypatch, TeamMembership.objects, "create", calls)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "ValidationError"]
    assert isinstance(next(r for r in results if r is not None), ValidationError)
    with ministry_scope(ministry_id=a.pk):
        assert TeamMembership.objects.filter(team=team, user=member).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_first_retention_set_twice_at_once_keeps_one_row(
    ministries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.console import services
    from apps.documents.models import DocumentRetention

    a, _ = ministries
    admin = make_user("race-retention-admin", a, ["ministry_admin"])
    calls = [
        _in_scope(a, lambda days=days: services.document_retention_set(actor=admin, ministry=a, days=days))
        for days in (30, 60)
    ]
    results = race_through(monkeypatch, DocumentRetention, "full_clean", calls)
    assert results == [None, None]
    with ministry_scope(ministry_id=a.pk):
        assert DocumentRetention.objects.count() == 1
    events = list(AuditEvent.objects.filter(action="documents.retention_set").order_by("id"))
    assert [e.data["from"] for e in events] == [None, events[0].data["to"]]


# --- A platform reader's view of every ministry's trail is on each ministry's own trail -----------


def test_reading_every_ministrys_trail_at_once_is_visible_to_each_ministry(ministries: Any) -> None:
    """Choosing "all ministries" wrote one ``audit.cross_ministry_read`` with no ministry: B's events
    were shown to a platform auditor of A, and B's admins, who read only B's trail, never saw it
    (choosing B itself is recorded in B's trail)."""
    from apps.audit.services import CROSS_MINISTRY_AUDIT_READ, audit_record, audit_verify

    from .insight_support import client_for, make_people

    people = make_people(ministries)
    audit_record(actor=None, action="test.secret_b", target_type="thing", ministry_id=people.b.pk)
    audit_record(actor=None, action="test.secret_a", target_type="thing", ministry_id=people.a.pk)
    response = client_for(people.platform_auditor).get("/console/audit/", {"ministry": ""})
    assert response.status_code == 200 and "test.secret_b" in response.content.decode()
    reads = AuditEvent.objects.filter(action=CROSS_MINISTRY_AUDIT_READ)
    assert reads.filter(ministry__isnull=True).count() == 1  # the platform's own record stays
    [in_b] = reads.filter(ministry=people.b)
    assert in_b.actor == people.platform_auditor and in_b.data["reader_ministry_id"] == people.a.pk
    assert in_b.data["view"] == "all"
    assert not reads.filter(ministry=people.a).exists(), "the reader's own ministry is no cross read"
    # B's admin finds it in B's trail.
    trail_b = client_for(people.admin_b).get("/console/audit/").content.decode()
    assert CROSS_MINISTRY_AUDIT_READ in trail_b
    assert audit_verify().intact


def test_the_period_is_at_most_366_days_both_ends_inclusive() -> None:
    from datetime import date

    from apps.console.forms_insight import PeriodForm

    assert PeriodForm({"start": "2024-01-01", "end": "2024-12-31"}).is_valid()  # 366 days (leap year)
    too_long = PeriodForm({"start": "2024-01-01", "end": "2025-01-01"})  # 367 days
    assert not too_long.is_valid() and "366" in str(too_long.errors)
    assert date(2025, 1, 1) - date(2024, 1, 1) == timedelta(days=366)


def test_the_platform_limit_form_has_the_services_ranges() -> None:
    from apps.console.forms_insight import PlatformLimitForm

    assert not PlatformLimitForm({"max_tokens": "0"}).is_valid()  # every answer cut to one token
    assert not PlatformLimitForm({"monthly_tokens": str(2**63)}).is_valid()  # past bigint: was a 500
    assert PlatformLimitForm({"max_tokens": "1", "monthly_tokens": str(2**63 - 1)}).is_valid()
