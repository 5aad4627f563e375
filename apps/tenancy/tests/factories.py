"""Unsaved rows for the tenancy sweep (tests/test_tenancy_sweep.py): teams."""

from __future__ import annotations

from typing import Any

from apps.tenancy.models import Team, TeamMembership
from apps.tenancy.scope import ministry_scope


def sweep_team(ministry: Any) -> Team:
    return Team(ministry=ministry, code=f"sweep-{ministry.code}", name="検証チーム")


def sweep_team_membership(ministry: Any) -> TeamMembership:
    from apps.accounts.models import User

    user, _ = User.objects.get_or_create(username="sweep-team-member", defaults={"subject": "sub-sweep-team"})
    with ministry_scope(ministry_id=ministry.pk):
        team, _ = Team.objects.get_or_create(code="sweep-members", defaults={"name": "検証"})
    return TeamMembership(ministry=ministry, team=team, user=user)
