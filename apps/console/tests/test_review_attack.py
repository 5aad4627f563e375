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
