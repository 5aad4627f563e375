from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.claims import ministry_codes_from_claims, role_grants_from_claims
from apps.accounts.models import User
from apps.accounts.services import user_sync_from_claims
from apps.tenancy.models import Membership

CLIENT = "gennai-web"


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["/ministries/digital"], ["digital"]),
        (["/ministries/digital/team-a", "/ministries/soumu", "/ministries/digital"], ["digital", "soumu"]),
        (["/other/digital", "digital", "/ministries/", 5], []),
        ("not-a-list", []),
        (None, []),
    ],
)
def test_ministry_codes_from_groups(groups: Any, expected: list[str]) -> None:
    assert ministry_codes_from_claims({"groups": groups}) == expected


def test_subgroups_grant_roles_only_in_their_ministry() -> None:
    grants = role_grants_from_claims(
        {"groups": ["/ministries/digital", "/ministries/digital/admins", "/ministries/soumu"]},
        client_id=CLIENT,
    )
    assert grants.roles_in("digital") == ["ministry_admin", "staff"]
    assert grants.roles_in("soumu") == ["staff"]


@pytest.mark.parametrize(
    ("group", "roles"),
    [
        ("/ministries/digital", ["staff"]),
        ("/ministries/digital/team-a", ["staff"]),
        ("/ministries/digital/admins", ["ministry_admin"]),
        ("/ministries/digital/admins/regional", ["ministry_admin"]),
        ("/ministries/digital/procurement", ["procurement_officer"]),
        ("/ministries/digital/auditors", ["ministry_auditor"]),
    ],
)
def test_each_subgroup_maps_to_its_role(group: str, roles: list[str]) -> None:
    assert role_grants_from_claims({"groups": [group]}, client_id=CLIENT).roles_in("digital") == roles


def test_realm_roles_grant_only_platform_roles() -> None:
    """The defect: realm ``ministry_admin`` made its holder admin of every ministry they were in."""
    claims = {
        "groups": ["/ministries/digital", "/ministries/soumu"],
        "realm_access": {"roles": ["offline_access", "staff", "ministry_admin", "platform_admin", "auditor"]},
    }
    grants = role_grants_from_claims(claims, client_id=CLIENT)
    assert grants.platform_roles == {"platform_admin", "auditor"}
    assert grants.ignored_realm_roles == {"staff", "ministry_admin"}
    for code in ("digital", "soumu"):
        assert grants.roles_in(code) == ["auditor", "platform_admin", "staff"]
    assert role_grants_from_claims({"realm_access": "bad"}, client_id=CLIENT).platform_roles == set()


def test_realm_role_alone_creates_no_membership() -> None:
    grants = role_grants_from_claims({"realm_access": {"roles": ["platform_admin"]}}, client_id=CLIENT)
    assert grants.ministries == {}


def test_client_roles_are_scoped_to_their_ministry_and_our_client() -> None:
    claims = {
        "groups": ["/ministries/soumu"],
        "resource_access": {
            CLIENT: {"roles": ["digital:ministry_admin", "soumu:bogus", "platform_admin", "x:"]},
            "other-client": {"roles": ["soumu:ministry_admin"]},
        },
    }
    grants = role_grants_from_claims(claims, client_id=CLIENT)
    assert grants.roles_in("digital") == ["ministry_admin"]
    assert grants.roles_in("soumu") == ["staff"], "another client's roles and unknown roles grant nothing"
    assert grants.platform_roles == set()


def _claims(**extra: Any) -> dict[str, Any]:
    base = {
        "sub": "0b6f-subject",
        "preferred_username": "tanaka",
        "name": "田中 花子",
        "email": "tanaka@digital.example.go.jp",
        "groups": ["/ministries/digital"],
        "realm_access": {"roles": []},
    }
    base.update(extra)
    return base


def test_first_login_creates_user_and_membership(ministries: Any) -> None:
    user = user_sync_from_claims(claims=_claims())
    assert user.subject == "0b6f-subject" and user.display_name == "田中 花子"
    assert not user.has_usable_password()
    membership = Membership.objects.get(user=user)
    assert membership.ministry.code == "digital" and membership.roles == ["staff"]


def test_group_removal_revokes_membership_at_next_login(ministries: Any) -> None:
    user = user_sync_from_claims(claims=_claims(groups=["/ministries/digital", "/ministries/soumu"]))
    assert Membership.objects.filter(user=user).count() == 2
    user_sync_from_claims(claims=_claims(groups=["/ministries/soumu"]), user=user)
    assert list(Membership.objects.filter(user=user).values_list("ministry__code", flat=True)) == ["soumu"]
    user_sync_from_claims(claims=_claims(groups=[]), user=user)
    assert not Membership.objects.filter(user=user).exists()


def test_roles_follow_the_token(ministries: Any) -> None:
    user = user_sync_from_claims(claims=_claims(groups=["/ministries/digital", "/ministries/digital/admins"]))
    assert Membership.objects.get(user=user).roles == ["ministry_admin", "staff"]
    user_sync_from_claims(claims=_claims(groups=["/ministries/digital"]), user=user)
    assert Membership.objects.get(user=user).roles == ["staff"], "demotion applies"
    user_sync_from_claims(claims=_claims(groups=[]), user=user)
    assert not Membership.objects.filter(user=user).exists(), "no group: no membership"


def test_admin_in_a_staff_in_b_is_not_admin_in_b(ministries: Any) -> None:
    claims = _claims(
        groups=["/ministries/digital", "/ministries/digital/admins", "/ministries/soumu"],
        realm_access={"roles": ["ministry_admin", "staff"]},  # legacy realm roles: ignored
    )
    user = user_sync_from_claims(claims=claims)
    roles = dict(Membership.objects.filter(user=user).values_list("ministry__code", "roles"))
    assert roles == {"digital": ["ministry_admin", "staff"], "soumu": ["staff"]}


def test_platform_roles_are_recorded_on_every_membership(ministries: Any) -> None:
    claims = _claims(groups=["/ministries/digital", "/ministries/soumu"], realm_access={"roles": ["auditor"]})
    user = user_sync_from_claims(claims=claims)
    roles = dict(Membership.objects.filter(user=user).values_list("ministry__code", "roles"))
    assert roles == {"digital": ["auditor", "staff"], "soumu": ["auditor", "staff"]}


def test_unknown_or_inactive_ministry_grants_nothing(ministries: Any) -> None:
    ministries[1].active = False
    ministries[1].save()
    user = user_sync_from_claims(claims=_claims(groups=["/ministries/unknown", "/ministries/soumu"]))
    assert not Membership.objects.filter(user=user).exists()


def test_username_clash_gets_a_suffix(ministries: Any) -> None:
    User.objects.create(username="tanaka", subject="someone-else")
    user = user_sync_from_claims(claims=_claims())
    assert user.username == "tanaka-2"
