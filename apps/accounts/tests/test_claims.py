from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.claims import ministry_codes_from_claims, roles_from_claims
from apps.accounts.models import User
from apps.accounts.services import user_sync_from_claims
from apps.tenancy.models import Membership


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


def test_roles_keep_only_known_realm_roles() -> None:
    claims = {"realm_access": {"roles": ["offline_access", "staff", "ministry_admin", "uma_authorization"]}}
    assert roles_from_claims(claims) == ["ministry_admin", "staff"]
    assert roles_from_claims({"realm_access": "bad"}) == []
    assert roles_from_claims({}) == []


def _claims(**extra: Any) -> dict[str, Any]:
    base = {
        "sub": "0b6f-subject",
        "preferred_username": "tanaka",
        "name": "田中 花子",
        "email": "tanaka@digital.example.go.jp",
        "groups": ["/ministries/digital"],
        "realm_access": {"roles": ["staff"]},
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
    user = user_sync_from_claims(claims=_claims(realm_access={"roles": ["staff", "ministry_admin"]}))
    assert Membership.objects.get(user=user).roles == ["ministry_admin", "staff"]
    user_sync_from_claims(claims=_claims(realm_access={"roles": []}), user=user)
    assert not Membership.objects.filter(user=user).exists(), "no role: no membership"


def test_unknown_or_inactive_ministry_grants_nothing(ministries: Any) -> None:
    ministries[1].active = False
    ministries[1].save()
    user = user_sync_from_claims(claims=_claims(groups=["/ministries/unknown", "/ministries/soumu"]))
    assert not Membership.objects.filter(user=user).exists()


def test_username_clash_gets_a_suffix(ministries: Any) -> None:
    User.objects.create(username="tanaka", subject="someone-else")
    user = user_sync_from_claims(claims=_claims())
    assert user.username == "tanaka-2"
