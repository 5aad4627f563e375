"""Teams from SSO subgroups ``/ministries/<code>/teams/<slug>`` (issue 8, invariant 9)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.claims import role_grants_from_claims, team_grants_from_claims
from apps.accounts.services import user_sync_from_claims
from apps.audit.models import AuditEvent
from apps.tenancy.models import Team, TeamMembership, TeamSource
from apps.tenancy.scope import ministry_scope

CLIENT = "gennai-web"


def _claims(groups: list[str]) -> dict[str, Any]:
    return {"sub": "team-subject", "preferred_username": "kobayashi", "groups": groups}


def _teams(ministry: Any, user: Any) -> dict[str, str]:
    """The user's team codes in ``ministry`` → membership source."""
    with ministry_scope(ministry_id=ministry.pk):
        return dict(TeamMembership.objects.filter(user=user).values_list("team__code", "source"))


def _team_codes(ministry: Any) -> list[str]:
    with ministry_scope(ministry_id=ministry.pk):
        return list(Team.objects.values_list("code", flat=True))


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["/ministries/digital/teams/budget"], {"digital": {"budget"}}),
        (["/ministries/digital/teams/budget/east"], {"digital": {"budget"}}),
        (["/ministries/digital/teams/予算課"], {"digital": {"予算課"}}),
        (["/ministries/digital/teams", "/ministries/digital/teams/"], {}),
        (["/ministries/digital/teams/a b", "/ministries/digital/teams/" + "x" * 65], {}),
        (["/ministries/digital/admins/teams/x", "/other/digital/teams/x", "/ministries//teams/x"], {}),
        ("not-a-list", {}),
    ],
)
def test_team_codes_come_only_from_team_subgroups(groups: Any, expected: dict[str, set[str]]) -> None:
    assert team_grants_from_claims({"groups": groups}) == expected


def test_a_team_group_also_makes_its_holder_staff_of_that_ministry_only() -> None:
    grants = role_grants_from_claims({"groups": ["/ministries/digital/teams/budget"]}, client_id=CLIENT)
    assert grants.ministries == {"digital": frozenset({"staff"})}


def test_login_creates_the_team_and_the_membership_with_audit(ministries: Any) -> None:
    digital, _ = ministries
    user = user_sync_from_claims(claims=_claims(["/ministries/digital", "/ministries/digital/teams/budget"]))
    assert _teams(digital, user) == {"budget": TeamSource.SSO}
    with ministry_scope(ministry_id=digital.pk):
        team = Team.objects.get(code="budget")
    assert (team.source, team.name) == (TeamSource.SSO, "budget")
    actions = list(
        AuditEvent.objects.filter(ministry_id=digital.pk, action__startswith="team.").values_list(
            "action", "data"
        )
    )
    assert [a for a, _ in actions] == ["team.create", "team.member_add"]
    assert actions[1][1]["user_id"] == user.pk


def test_a_team_group_of_ministry_a_creates_nothing_in_b(ministries: Any) -> None:
    digital, soumu = ministries
    with ministry_scope(ministry_id=soumu.pk):
        Team.objects.create(code="budget", name="総務省 予算")
    user = user_sync_from_claims(claims=_claims(["/ministries/digital/teams/budget", "/ministries/soumu"]))
    assert _teams(digital, user) == {"budget": TeamSource.SSO}
    assert _teams(soumu, user) == {}, "B's team of the same slug is not joined"
    assert _team_codes(soumu) == ["budget"]
    # A group naming a ministry the user is not in (unknown) creates no team anywhere.
    user_sync_from_claims(claims=_claims(["/ministries/unknown/teams/x", "/ministries/soumu"]), user=user)
    assert _team_codes(digital) == ["budget"] and _team_codes(soumu) == ["budget"]
    assert _teams(digital, user) == {} and _teams(soumu, user) == {}


def test_leaving_the_group_removes_sso_membership_but_keeps_local_ones(ministries: Any) -> None:
    digital, _ = ministries
    user = user_sync_from_claims(
        claims=_claims(["/ministries/digital/teams/budget", "/ministries/digital/teams/policy"])
    )
    with ministry_scope(ministry_id=digital.pk):
        local_team = Team.objects.create(code="local-wg", name="作業部会", source=TeamSource.LOCAL)
        TeamMembership.objects.create(team=local_team, user=user, source=TeamSource.LOCAL)
    assert _teams(digital, user) == {"budget": "sso", "policy": "sso", "local-wg": "local"}

    user_sync_from_claims(claims=_claims(["/ministries/digital/teams/policy"]), user=user)
    assert _teams(digital, user) == {"policy": "sso", "local-wg": "local"}
    assert _team_codes(digital) == ["budget", "local-wg", "policy"], "teams outlive their members"
    removed = AuditEvent.objects.filter(ministry_id=digital.pk, action="team.member_remove")
    assert [e.data["team"] for e in removed] == ["budget"]


def test_losing_the_ministry_drops_its_sso_teams(ministries: Any) -> None:
    digital, soumu = ministries
    user = user_sync_from_claims(
        claims=_claims(["/ministries/digital/teams/budget", "/ministries/soumu/teams/budget"])
    )
    assert _teams(digital, user) == {"budget": "sso"} and _teams(soumu, user) == {"budget": "sso"}
    user_sync_from_claims(claims=_claims(["/ministries/soumu/teams/budget"]), user=user)
    assert _teams(digital, user) == {}
    assert _teams(soumu, user) == {"budget": "sso"}


def test_an_existing_local_team_is_joined_not_duplicated(ministries: Any) -> None:
    digital, _ = ministries
    with ministry_scope(ministry_id=digital.pk):
        Team.objects.create(code="budget", name="予算課", source=TeamSource.LOCAL)
    user = user_sync_from_claims(claims=_claims(["/ministries/digital/teams/budget"]))
    assert _teams(digital, user) == {"budget": "sso"}
    with ministry_scope(ministry_id=digital.pk):
        assert list(Team.objects.values_list("name", "source")) == [("予算課", "local")]


def test_a_repeated_login_changes_and_audits_nothing(ministries: Any) -> None:
    claims = _claims(["/ministries/digital/teams/budget"])
    user = user_sync_from_claims(claims=claims)
    count = AuditEvent.objects.filter(action__startswith="team.").count()
    user_sync_from_claims(claims=claims, user=user)
    assert AuditEvent.objects.filter(action__startswith="team.").count() == count


def test_demo_user_logs_in_through_the_dev_idp_with_their_team(dev_idp: Any, ministries: Any) -> None:
    """The dev IdP's demo tanaka is in /ministries/digital/teams/planning; a real login joins it."""
    from django.test import Client

    from apps.accounts.models import User
    from apps.devidp.demo_users import demo_groups, get_demo_user
    from tests.support.oidc import login_with_test_client

    entry = get_demo_user("tanaka")
    assert entry is not None
    assert "/ministries/digital/teams/planning" in demo_groups(entry["roles"], entry["teams"])
    login_with_test_client(Client(), "tanaka")
    user = User.objects.get(username="tanaka")
    assert _teams(ministries[0], user) == {"planning": "sso"}
