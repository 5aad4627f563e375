"""Ministry console forms and services: cross-ministry ids refused, every change audited."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.quotas.budget_models import Limit
from apps.registry import snapshot
from apps.registry.router import allowed_aliases
from apps.tenancy.models import Team, TeamMembership, TeamSource
from apps.tenancy.scope import ministry_scope

from .url_matrix import World, build_world


@pytest.fixture
def world(ministries: Any) -> World:
    return build_world(ministries)


def _as(world: World, role: str) -> Client:
    client = Client()
    client.force_login(world.users[role])
    return client


def _actions(world: World, ministry: Any = None) -> list[str]:
    return list(
        AuditEvent.objects.filter(ministry=ministry or world.a)
        .order_by("id")
        .values_list("action", flat=True)
    )


def _b_objects(world: World) -> dict[str, Any]:
    """Ministry B's own team, member and API key (what an admin of A might try to post)."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.gateway.services import api_key_create
    from tests.support.fixtures import make_user

    member_b = make_user("console-member-b", world.b, ["staff"])
    with ministry_scope(ministry_id=world.b.pk):
        team_b = Team.objects.create(code="b-team", name="B のチーム", source=TeamSource.LOCAL)
        key_b, _ = api_key_create(
            actor=world.users["admin_b"],
            ministry=world.b,
            name="b key",
            expires_at=timezone.now() + timedelta(days=5),
        )
    return {"member": member_b, "team": team_b, "key": key_b}


# --- Limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["team", "user", "api_key"])
def test_limit_form_refuses_another_ministrys_subject(world: World, level: str) -> None:
    b = _b_objects(world)
    foreign = {"team": b["team"].pk, "user": b["member"].pk, "api_key": b["key"].pk}[level]
    with ministry_scope(ministry_id=world.a.pk):
        before = Limit.objects.count()
    client = _as(world, "admin_a")  # the login itself is audited: count after it
    audit_before = AuditEvent.objects.count()
    response = client.post("/console/limits/new/", {"level": level, level: foreign, "monthly_tokens": "10"})
    assert response.status_code == 400
    assert "この府省庁の" in response.content.decode()  # the choice error, in Japanese
    with ministry_scope(ministry_id=world.a.pk):
        assert Limit.objects.count() == before
    with ministry_scope(ministry_id=world.b.pk):
        assert not Limit.objects.exists()
    assert AuditEvent.objects.count() == audit_before


def test_limit_form_ignores_references_the_level_does_not_use(world: World) -> None:
    """A ministry-level limit posted with a foreign team id is stored as ministry level, team dropped."""
    b = _b_objects(world)
    response = _as(world, "admin_a").post(
        "/console/limits/new/", {"level": "ministry", "team": b["team"].pk, "rpm": "60"}
    )
    assert response.status_code == 400  # the foreign id is not a valid choice, even if unused
    response = _as(world, "admin_a").post("/console/limits/new/", {"level": "ministry", "rpm": "60"})
    assert response.status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        row = Limit.objects.get(level="ministry")
    assert (row.rpm, row.team_id, row.user_id, row.api_key_id) == (60, None, None, None)
    assert _actions(world)[-1] == "quota.limit_set"


def test_limit_create_edit_delete_are_audited(world: World) -> None:
    client = _as(world, "admin_a")
    user = world.users["member_a"]
    response = client.post(
        "/console/limits/new/", {"level": "user", "user": user.pk, "monthly_yen": "1500.50"}
    )
    assert response.status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        row = Limit.objects.get(level="user", user=user)
    assert str(row.monthly_yen) == "1500.50"
    assert client.post(f"/console/limits/{row.pk}/edit/", {"monthly_tokens": "42"}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        row.refresh_from_db()
    assert (row.monthly_tokens, row.monthly_yen) == (42, None)  # an emptied field is "no limit"
    page = client.get(f"/console/members/{user.pk}/").content.decode()
    assert f'data-testid="limit-{row.pk}"' in page
    assert client.post(f"/console/limits/{row.pk}/delete/").status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        assert not Limit.objects.filter(pk=row.pk).exists()
    assert _actions(world)[-3:] == ["quota.limit_set", "quota.limit_set", "quota.limit_delete"]


def test_limit_form_errors_in_both_languages(world: World) -> None:
    client = _as(world, "admin_a")
    ja = client.post("/console/limits/new/", {"level": "ministry"}).content.decode()
    assert "少なくとも1つの上限を入力してください。" in ja
    client.cookies["django_language"] = "en"
    en = client.post("/console/limits/new/", {"level": "team"}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Enter at least one limit." in en  # a default row with no values means nothing
    en = client.post(
        "/console/limits/new/", {"level": "team", "team": "999999", "rpm": "5"}, HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    assert "Choose a team of this ministry." in en


# --- Teams -----------------------------------------------------------------------------------


def test_team_member_add_refuses_a_user_of_another_ministry(world: World) -> None:
    b = _b_objects(world)
    team_id = world.ids["team_id"]
    response = _as(world, "admin_a").post(f"/console/teams/{team_id}/members/add/", {"user": b["member"].pk})
    assert response.status_code == 400
    with ministry_scope(ministry_id=world.a.pk):
        assert not TeamMembership.objects.filter(user=b["member"]).exists()


def test_team_lifecycle_is_audited(world: World) -> None:
    client = _as(world, "admin_a")
    assert client.post("/console/teams/new/", {"code": "kikaku", "name": "企画室"}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        team = Team.objects.get(code="kikaku")
    assert team.source == TeamSource.LOCAL
    duplicate = client.post("/console/teams/new/", {"code": "kikaku", "name": "二つ目"})
    assert duplicate.status_code == 400
    assert "このコードのチームは既にあります。" in duplicate.content.decode()
    staff = world.users["staff_a"]
    assert client.post(f"/console/teams/{team.pk}/members/add/", {"user": staff.pk}).status_code == 302
    assert client.post(f"/console/teams/{team.pk}/rename/", {"name": "企画課"}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        row = TeamMembership.objects.get(team=team, user=staff)
    assert row.source == TeamSource.LOCAL
    assert client.post(f"/console/teams/{team.pk}/members/{row.pk}/remove/").status_code == 302
    assert client.post(f"/console/teams/{team.pk}/delete/").status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        assert not Team.objects.filter(pk=team.pk).exists()
    assert _actions(world)[-5:] == [
        "team.create",
        "team.member_add",
        "team.rename",
        "team.member_remove",
        "team.delete",
    ]


def test_sso_teams_and_memberships_stay_with_the_idp(world: World) -> None:
    client = _as(world, "admin_a")
    with ministry_scope(ministry_id=world.a.pk):
        sso = Team.objects.get(code="walk-sso")
        row = TeamMembership.objects.create(team=sso, user=world.users["staff_a"], source=TeamSource.SSO)
    refused = client.post(f"/console/teams/{sso.pk}/delete/")
    assert refused.status_code == 400
    assert "IdP" in refused.content.decode()
    client.post(f"/console/teams/{sso.pk}/members/{row.pk}/remove/")
    with ministry_scope(ministry_id=world.a.pk):
        assert Team.objects.filter(pk=sso.pk).exists()
        assert TeamMembership.objects.filter(pk=row.pk).exists()
    # The display name is the admin's to choose; the code stays the IdP's.
    assert client.post(f"/console/teams/{sso.pk}/rename/", {"name": "広報室"}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        sso.refresh_from_db()
    assert (sso.code, sso.name) == ("walk-sso", "広報室")


def test_deleting_a_team_removes_its_limits_through_the_quota_service(world: World) -> None:
    """The team's limits go with an audit row each and a cache bump, not by a silent cascade."""
    team_id, limit_id = world.ids["team_id"], world.ids["limit_id"]
    assert _as(world, "admin_a").post(f"/console/teams/{team_id}/delete/").status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        assert not Limit.objects.filter(pk=limit_id).exists()
    assert _actions(world)[-2:] == ["quota.limit_delete", "team.delete"]


# --- Members ---------------------------------------------------------------------------------


def test_member_list_searches_by_name_and_paginates(world: World) -> None:
    from tests.support.fixtures import make_user

    for i in range(55):
        make_user(f"page-user-{i:02d}", world.a, ["staff"])
    client = _as(world, "admin_a")
    first = client.get("/console/members/").content.decode()
    assert 'data-testid="pagination-next"' in first
    assert len(re.findall(r'data-testid="member-\d+"', first)) == 50
    found = client.get("/console/members/", {"q": "page-user-07"}).content.decode()
    assert "page-user-07" in found and "page-user-08" not in found
    partial = client.get("/console/members/", {"q": "walk-member"}, HTTP_HX_REQUEST="true").content.decode()
    assert partial.startswith('<div id="member-table"') and "<html" not in partial


def test_member_detail_shows_teams_and_usage(world: World) -> None:
    from apps.quotas.models import UsageRecord

    member = world.users["member_a"]
    with ministry_scope(ministry_id=world.a.pk):
        for _ in range(3):
            UsageRecord.objects.create(user=member, alias_name="walk-granted", status="ok", prompt_tokens=5)
    page = _as(world, "auditor_a").get(f"/console/members/{member.pk}/").content.decode()
    assert 'data-testid="usage-requests">3<' in page
    assert "ローカル" in page  # the team list
    assert 'data-testid="member-limit-create"' not in page  # auditors do not get change links


# --- Model allowlist -------------------------------------------------------------------------


def test_disallowing_a_model_reaches_the_router_and_is_audited(world: World, settings: Any) -> None:
    settings.GENNAI_CACHE_CHECK_SECONDS = 0
    snapshot.reset_for_tests()
    granted = world.extra["alias_granted"]
    with ministry_scope(ministry_id=world.a.pk):
        assert "walk-granted" in {a.name for a in allowed_aliases()}
    response = _as(world, "admin_a").post(f"/console/models/{granted}/disallow/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "許可する" in response.content.decode()  # the swapped row now offers to allow again
    with ministry_scope(ministry_id=world.a.pk):
        assert "walk-granted" not in {a.name for a in allowed_aliases()}
    with ministry_scope(ministry_id=world.b.pk):  # B's grant of the same alias is untouched
        assert "walk-granted" in {a.name for a in allowed_aliases()}
    assert _actions(world)[-1] == "registry.alias.revoke"
    assert _as(world, "admin_a").post(f"/console/models/{granted}/allow/").status_code == 302
    assert _actions(world)[-1] == "registry.alias.grant"


# --- Retention -------------------------------------------------------------------------------


def test_retention_set_clear_and_validation(world: World) -> None:
    from apps.documents.models import DocumentRetention

    client = _as(world, "admin_a")
    assert client.post("/console/retention/", {"days": "0"}).status_code == 400
    assert client.post("/console/retention/", {"days": "365"}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        assert DocumentRetention.objects.get().days == 365
    assert "365" in _as(world, "auditor_a").get("/console/retention/").content.decode()
    assert client.post("/console/retention/", {"days": ""}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        assert not DocumentRetention.objects.exists()
    with ministry_scope(ministry_id=world.b.pk):
        assert not DocumentRetention.objects.exists()
    events = AuditEvent.objects.filter(ministry=world.a, action="documents.retention_set").order_by("id")
    assert [e.data for e in events] == [{"from": None, "to": 365}, {"from": 365, "to": None}]


def test_console_nav_and_read_only_badge(world: World) -> None:
    admin = _as(world, "admin_a").get("/console/").content.decode()
    assert 'data-testid="console-nav-keys"' in admin and 'data-testid="read-only"' not in admin
    auditor = _as(world, "auditor_a").get("/console/").content.decode()
    assert 'data-testid="read-only"' in auditor and 'data-testid="console-nav-keys"' not in auditor


def test_header_links_the_console_for_admins_and_auditors_only(world: World) -> None:
    for role, shown in (("admin_a", True), ("auditor_a", True), ("staff_a", False)):
        page = _as(world, role).get("/").content.decode()
        assert ('data-testid="nav-console"' in page) is shown, role


def test_limit_list_filters_by_level_and_keeps_the_filter_across_pages(world: World) -> None:
    from apps.quotas.limits import limit_set
    from tests.support.fixtures import make_user

    with ministry_scope(ministry_id=world.a.pk):
        for i in range(51):
            user = make_user(f"limited-{i:02d}", world.a, ["staff"])
            limit_set(actor=world.users["admin_a"], level="user", user=user, rpm=10 + i)
    page = _as(world, "auditor_a").get("/console/limits/", {"level": "user"}).content.decode()
    assert len(re.findall(r'data-testid="limit-\d+"', page)) == 50
    assert "?level=user&amp;page=2" in page
    teams = _as(world, "auditor_a").get("/console/limits/", {"level": "team"}).content.decode()
    assert len(re.findall(r'data-testid="limit-\d+"', teams)) == 1
    assert 'data-testid="limit-create"' not in teams  # read-only for auditors


def test_ministry_pages_are_translated(world: World) -> None:
    """In English, nothing Japanese is left below the console nav but the names people gave things."""
    japanese = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")
    client = _as(world, "admin_a")
    client.cookies["django_language"] = "en"
    member, team, limit = world.users["member_a"].pk, world.ids["team_id"], world.ids["limit_id"]
    pages = [
        "/console/",
        "/console/members/",
        f"/console/members/{member}/",
        "/console/teams/",
        "/console/teams/new/",
        f"/console/teams/{team}/",
        f"/console/teams/{team}/delete/",
        "/console/models/",
        "/console/limits/",
        "/console/limits/new/",
        f"/console/limits/{limit}/edit/",
        f"/console/limits/{limit}/delete/",
        "/console/retention/",
    ]
    for url in pages:
        html = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
        main = html[html.index('data-testid="console-nav"') : html.index("</main>")].split("</nav>", 1)[1]
        # Names people gave things (the world's team names and the alias display names) are data.
        text = re.sub(r"WALKMARK [^<]*|許可済み|未許可", "", main)
        assert not japanese.findall(text), (url, sorted(set(japanese.findall(text)))[:20])


def test_default_rows_and_exemptions(world: World) -> None:
    """No subject at the user level: the default for each user; one user's empty row exempts them."""
    client = _as(world, "admin_a")
    assert client.post("/console/limits/new/", {"level": "user", "monthly_tokens": "100"}).status_code == 302
    member = world.users["member_a"]
    assert client.post("/console/limits/new/", {"level": "user", "user": member.pk}).status_code == 302
    with ministry_scope(ministry_id=world.a.pk):
        default = Limit.objects.get(level="user", user=None)
        exempt = Limit.objects.get(level="user", user=member)
    assert default.monthly_tokens == 100 and exempt.monthly_tokens is None and exempt.rpm is None
    page = client.get("/console/limits/", {"level": "user"}).content.decode()
    assert 'data-testid="limit-default"' in page and 'data-testid="limit-exempt"' in page
    # Editing: the default row needs a value, the exemption may stay empty.
    assert client.post(f"/console/limits/{default.pk}/edit/", {}).status_code == 400
    assert client.post(f"/console/limits/{exempt.pk}/edit/", {}).status_code == 302
