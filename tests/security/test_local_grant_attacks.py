"""Local role grants (81b266d) against a member who leaves the ministry and comes back.

A grant extends one SSO membership ("a grant never outlives the SSO membership it
extends"). When the identity provider ends the membership, the grant must end
with it: a person removed from the ministry's groups and added back later (as
plain staff, by someone who knows nothing of the old grant) must not find the
old ministry role waiting for them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.accounts.models import LocalRoleGrant
from apps.accounts.services import local_role_grant, user_sync_from_claims
from apps.audit.models import AuditEvent
from apps.tenancy.scope import ministry_scope
from apps.tenancy.selectors import membership_for_user
from tests.support.fixtures import make_user

pytestmark = pytest.mark.django_db


def test_a_grant_ends_with_the_membership_it_extends(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    call_command("local_grant_policy", "--ministry", a.code, "--enable")
    admin = make_user("lga-admin", a, ["staff", "ministry_admin"])
    member = make_user("lga-member", a, ["staff"])
    with ministry_scope(ministry_id=a.pk):
        local_role_grant(
            actor=admin,
            ministry=a,
            user=member,
            role="ministry_auditor",
            expires_at=timezone.now() + timedelta(days=30),
        )
    active = membership_for_user(user=member, ministry_code=a.code)
    assert active is not None and "ministry_auditor" in active.roles

    # The IdP removes the member from ministry A (they move to B) ...
    user_sync_from_claims(claims={"sub": member.subject, "groups": [f"/ministries/{b.code}"]}, user=member)
    # ... and later adds them back to A as plain staff.
    user_sync_from_claims(
        claims={"sub": member.subject, "groups": [f"/ministries/{a.code}", f"/ministries/{b.code}"]},
        user=member,
    )
    back = membership_for_user(user=member, ministry_code=a.code)
    assert back is not None and back.ministry_id == a.pk
    assert "ministry_auditor" not in back.roles
    with ministry_scope(ministry_id=a.pk):
        assert not LocalRoleGrant.objects.filter(user=member).exists()
    assert AuditEvent.objects.filter(action="membership.local_revoke", ministry_id=a.pk).exists()
