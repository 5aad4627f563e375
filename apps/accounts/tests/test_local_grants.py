"""Local role grants: policy, expiry, no self-grant, ministry boundary, audit, next-request effect."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts import local_roles
from apps.accounts.models import LocalRoleGrant
from apps.audit.models import AuditEvent
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


@pytest.fixture
def people(ministries: tuple[Any, Any]) -> dict[str, Any]:
    a, b = ministries
    return {
        "a": a,
        "b": b,
        "admin": make_user("lg-admin-a", a, ["staff", "ministry_admin"]),
        "member": make_user("lg-member-a", a, ["staff"]),
        "admin_b": make_user("lg-admin-b", b, ["staff", "ministry_admin"]),
    }


def policy(ministry: Any, *flags: str) -> None:
    call_command("local_grant_policy", "--ministry", ministry.code, *flags)


def as_user(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def grant(client: Client, user: Any, role: str, days: int = 10) -> Any:
    expires = (timezone.localdate() + timedelta(days=days)).isoformat()
    return client.post(
        reverse("console:member_grant_create", args=[user.pk]), {"role": role, "expires_on": expires}
    )


def grants(ministry: Any) -> list[LocalRoleGrant]:
    with ministry_scope(ministry_id=ministry.pk):
        return list(LocalRoleGrant.objects.all())


def test_off_by_default_nothing_can_be_granted(people: dict[str, Any]) -> None:
    admin = as_user(people["admin"])
    page = admin.get(reverse("console:member_detail", args=[people["member"].pk]))
    assert page.status_code == 200 and b'data-testid="local-grant-form"' not in page.content
    assert grant(admin, people["member"], "ministry_auditor").status_code == 400
    assert grants(people["a"]) == []


def test_a_grant_applies_on_the_next_request_and_is_audited(people: dict[str, Any]) -> None:
    a, member = people["a"], people["member"]
    policy(a, "--enable")
    member_client = as_user(member)
    assert member_client.get(reverse("console:home")).status_code == 403, "staff: no console"
    admin = as_user(people["admin"])
    assert b"local-grant-form" in admin.get(reverse("console:member_detail", args=[member.pk])).content

    response = grant(admin, member, "ministry_auditor")

    assert response.status_code == 302
    [row] = grants(a)
    assert (row.role, row.granted_by_id) == ("ministry_auditor", people["admin"].pk)
    assert member_client.get(reverse("console:home")).status_code == 200, "auditor now, on the next request"
    assert member_client.post(reverse("console:retention"), {"days": "5"}).status_code == 403, "read only"
    stored = Membership.objects.get(user=member, ministry=a)
    assert stored.roles == ["staff"], "the SSO roles stay as the IdP sent them"
    event = AuditEvent.objects.filter(action="membership.local_grant").get()
    assert (event.actor_id, event.ministry_id) == (people["admin"].pk, a.pk)
    assert event.data["role"] == "ministry_auditor" and event.data["user_id"] == member.pk
    page = admin.get(reverse("console:member_detail", args=[member.pk])).content.decode()
    assert 'data-testid="local-grant"' in page and "ローカル" in page


def test_an_expired_grant_stops_counting_even_while_cached(
    people: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy(people["a"], "--enable")
    assert grant(as_user(people["admin"]), people["member"], "ministry_auditor", days=1).status_code == 302
    member_client = as_user(people["member"])
    assert member_client.get(reverse("console:home")).status_code == 200  # cached now
    later = timezone.now() + timedelta(days=3)
    monkeypatch.setattr(local_roles, "_now", lambda: later)
    assert member_client.get(reverse("console:home")).status_code == 403


def test_revoke_takes_effect_on_the_next_request(people: dict[str, Any]) -> None:
    policy(people["a"], "--enable")
    admin = as_user(people["admin"])
    grant(admin, people["member"], "ministry_auditor")
    member_client = as_user(people["member"])
    assert member_client.get(reverse("console:home")).status_code == 200
    [row] = grants(people["a"])
    url = reverse("console:member_grant_revoke", args=[people["member"].pk, row.pk])
    assert admin.post(url).status_code == 302
    assert grants(people["a"]) == []
    assert member_client.get(reverse("console:home")).status_code == 403
    event = AuditEvent.objects.filter(action="membership.local_revoke").get()
    assert event.actor_id == people["admin"].pk and event.data["role"] == "ministry_auditor"


def test_a_grant_lapses_when_the_idp_demotes_its_grantor(people: dict[str, Any]) -> None:
    """Like an API key, a grant lives only while its maker is an SSO admin of the ministry."""
    a, member = people["a"], people["member"]
    policy(a, "--enable")
    grant(as_user(people["admin"]), member, "ministry_auditor")
    member_client = as_user(member)
    assert member_client.get(reverse("console:home")).status_code == 200
    assert local_roles.local_roles_of(ministry_id=a.pk, user_id=member.pk) == ["ministry_auditor"]

    Membership.objects.filter(user=people["admin"], ministry=a).update(roles=["staff"])  # the IdP's sync
    local_roles.grants_forget(ministry_id=a.pk, user_id=member.pk)  # i.e. once CACHE_SECONDS have passed

    assert local_roles.local_roles_of(ministry_id=a.pk, user_id=member.pk) == []
    assert member_client.get(reverse("console:home")).status_code == 403
    [row] = grants(a)
    assert row.granted_by_id == people["admin"].pk, "kept for the record; it simply counts for nothing"
    # Promoted again by the IdP: the grant counts again (it never stopped existing).
    Membership.objects.filter(user=people["admin"], ministry=a).update(roles=["staff", "ministry_admin"])
    local_roles.grants_forget(ministry_id=a.pk, user_id=member.pk)
    assert member_client.get(reverse("console:home")).status_code == 200


def test_what_may_not_be_granted(people: dict[str, Any]) -> None:
    a, member = people["a"], people["member"]
    policy(a, "--enable")
    admin = as_user(people["admin"])
    assert grant(admin, people["admin"], "ministry_auditor").status_code == 400, "not to oneself"
    assert grant(admin, member, "ministry_admin").status_code == 400, "admin needs explicit policy"
    assert grant(admin, member, "platform_admin").status_code == 400, "platform roles never"
    assert grant(admin, member, "staff").status_code == 400
    assert grant(admin, member, "ministry_auditor", days=400).status_code == 400, "max 90 days"
    assert grant(admin, member, "ministry_auditor", days=-1).status_code == 400, "not in the past"
    no_expiry = admin.post(
        reverse("console:member_grant_create", args=[member.pk]), {"role": "ministry_auditor"}
    )
    assert no_expiry.status_code == 400, "the expiry is mandatory"
    assert grants(a) == []
    assert not AuditEvent.objects.filter(action="membership.local_grant").exists()


def test_ministry_admin_only_where_the_policy_says_so_and_not_passed_on(people: dict[str, Any]) -> None:
    a, member = people["a"], people["member"]
    policy(a, "--enable", "--allow-ministry-admin")
    assert grant(as_user(people["admin"]), member, "ministry_admin").status_code == 302
    local_admin = as_user(member)
    assert local_admin.get(reverse("console:home")).status_code == 200
    other = make_user("lg-other-a", a, ["staff"])
    # An admin by local grant cannot hand out grants: the chain ends with the SSO admin's.
    assert grant(local_admin, other, "ministry_auditor").status_code == 403
    assert [g.user_id for g in grants(a)] == [member.pk]


def test_another_ministrys_admin_cannot_grant_and_grants_stay_in_their_ministry(
    people: dict[str, Any],
) -> None:
    a, b, member = people["a"], people["b"], people["member"]
    policy(a, "--enable")
    policy(b, "--enable")
    assert grant(as_user(people["admin_b"]), member, "ministry_auditor").status_code == 404
    assert grants(a) == [] and grants(b) == []
    # A member of both: a grant in A adds nothing while B is the active ministry.
    Membership.objects.create(user=member, ministry=b, roles=["staff"])
    grant(as_user(people["admin"]), member, "ministry_auditor")
    client = as_user(member)
    session = client.session
    session["gennai_ministry"] = b.code
    session.save()
    assert client.get(reverse("console:home")).status_code == 403
    session["gennai_ministry"] = a.code
    session.save()
    assert client.get(reverse("console:home")).status_code == 200


def test_turning_the_policy_off_revokes_the_grants(people: dict[str, Any]) -> None:
    a, member = people["a"], people["member"]
    policy(a, "--enable", "--allow-ministry-admin")
    admin = as_user(people["admin"])
    grant(admin, member, "ministry_admin")
    other = make_user("lg-other2-a", a, ["staff"])
    grant(admin, other, "ministry_auditor")
    policy(a, "--enable")  # admin no longer grantable: that grant goes, the auditor one stays
    assert [(g.user_id, g.role) for g in grants(a)] == [(other.pk, "ministry_auditor")]
    policy(a, "--disable")
    assert grants(a) == []
    assert as_user(other).get(reverse("console:home")).status_code == 403
    reasons = list(
        AuditEvent.objects.filter(action="membership.local_revoke").values_list("data__reason", flat=True)
    )
    assert reasons == ["policy", "policy"]
    assert AuditEvent.objects.filter(action="membership.local_grant_policy").count() == 3


def test_procurement_officer_is_not_locally_grantable(people: dict[str, Any]) -> None:
    """The registry and procurement evaluation are platform-wide: only the IdP gives that role.

    They read the SSO roles of every membership, so a local grant could do nothing there;
    offering it would mislead, and honouring it would let a ministry admin hand out
    platform powers. The form refuses it and the registry stays closed.
    """
    a, member = people["a"], people["member"]
    policy(a, "--enable")
    assert grant(as_user(people["admin"]), member, "procurement_officer").status_code == 400
    assert grants(a) == []
    member_client = as_user(member)
    assert member_client.get(reverse("registry:dashboard")).status_code == 403
    assert member_client.post(reverse("registry:vendor_create"), {"name": "Vendor"}).status_code == 403
