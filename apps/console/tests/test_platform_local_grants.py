"""The platform page of one ministry's local-grant policy (console:platform_local_grants).

Platform admins enable, disable or reset a ministry's override in the browser
(the same change as ``manage.py local_grant_policy``, audited with their name);
grants the new policy no longer allows are revoked and counted in the message;
platform auditors only read; ministry roles never reach the page.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant
from apps.audit.models import AuditEvent
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user

from .insight_support import People, client_for, make_people

POLICY_SET = "membership.local_grant_policy"
REVOKE = "membership.local_revoke"
CROSS_READ = "tenancy.cross_ministry_read"
JAPANESE = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")


def page(ministry: Any) -> str:
    return reverse("console:platform_local_grants", args=[ministry.pk])


def override(ministry: Any) -> tuple[bool, bool] | None:
    with ministry_scope(ministry_id=ministry.pk):
        row = LocalGrantPolicy.objects.filter(ministry=ministry).first()
    return None if row is None else (row.enabled, row.allow_ministry_admin)


def grant_rows(ministry: Any) -> list[tuple[int, str]]:
    with ministry_scope(ministry_id=ministry.pk):
        return sorted(LocalRoleGrant.objects.values_list("user_id", "role"))


def add_grant(ministry: Any, user: Any, role: str, granted_by: Any, days: int = 7) -> None:
    with ministry_scope(ministry_id=ministry.pk):
        LocalRoleGrant.objects.create(
            ministry=ministry,
            user=user,
            role=role,
            expires_at=timezone.now() + timedelta(days=days),
            granted_by=granted_by,
        )


def message_texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def people(ministries: tuple[Any, Any]) -> People:
    return make_people(ministries)


def test_platform_admin_enables_disables_and_resets_audited_with_their_name(people: People) -> None:
    a, admin = people.a, people.platform_admin
    client = client_for(admin)

    response = client.post(page(a), {"mode": "enable", "allow_ministry_admin": "on"})
    assert response.status_code == 302 and response["Location"] == page(a)
    assert override(a) == (True, True)
    html = client.get(page(a)).content.decode()
    assert re.search(r'data-testid="local-grants-roles">.*府省庁管理者.*府省庁監査担当', html)
    assert not re.search(r'data-testid="local-grants-roles">[^<]*調達担当', html)
    # The form shows what is set now.
    assert re.search(r'value="enable"[^>]*checked', html)

    assert client.post(page(a), {"mode": "disable"}).status_code == 302
    assert override(a) == (False, False)
    assert "なし（付与できません）" in client.get(page(a)).content.decode()

    assert client.post(page(a), {"mode": "platform_default"}).status_code == 302
    assert override(a) is None
    html = client.get(page(a)).content.decode()
    assert "なし（プラットフォームの既定を適用）" in html
    assert re.search(r'value="platform_default"[^>]*checked', html)

    events = list(AuditEvent.objects.filter(action=POLICY_SET).order_by("id"))
    assert [e.actor_id for e in events] == [admin.pk] * 3
    assert [e.ministry_id for e in events] == [a.pk] * 3
    assert [(e.data["before"], e.data["after"]) for e in events] == [
        (None, [True, True]),
        ([True, True], [False, False]),
        ([False, False], None),
    ]
    assert override(people.b) is None  # the other ministry is untouched


def test_revokes_what_the_new_policy_disallows_and_says_how_many(people: People) -> None:
    a = people.a
    call_command("local_grant_policy", "--ministry", a.code, "--enable", "--allow-ministry-admin")
    other = make_user("plg-other-a", a, ["staff"])
    add_grant(a, people.staff_a, "ministry_admin", people.admin_a)
    add_grant(a, other, "ministry_auditor", people.admin_a)
    third = make_user("plg-third-a", a, ["staff"])
    add_grant(a, third, "ministry_auditor", people.admin_a, days=-1)  # expired, still a row
    client = client_for(people.platform_admin)
    html = client.get(page(a)).content.decode()
    assert 'data-testid="local-grants-unexpired">2<' in html

    response = client.post(page(a), {"mode": "enable"})  # ministry_admin no longer grantable
    assert response.status_code == 302
    assert grant_rows(a) == sorted([(other.pk, "ministry_auditor"), (third.pk, "ministry_auditor")])
    assert any("取り消した付与: 1件" in m for m in message_texts(response))

    response = client.post(page(a), {"mode": "disable"}, follow=True)
    assert grant_rows(a) == []
    assert "取り消した付与: 2件" in response.content.decode()  # shown on the page after the redirect
    revokes = AuditEvent.objects.filter(action=REVOKE).exclude(actor=None)
    assert revokes.count() == 3 and {e.actor_id for e in revokes} == {people.platform_admin.pk}
    assert set(revokes.values_list("data__reason", flat=True)) == {"policy"}


def test_platform_auditor_reads_but_cannot_post(people: People) -> None:
    a = people.a
    call_command("local_grant_policy", "--ministry", a.code, "--enable")
    add_grant(a, people.staff_a, "ministry_auditor", people.admin_a)
    auditor = client_for(people.platform_auditor)
    response = auditor.get(page(a))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="local-grants-form"' not in html and 'data-testid="platform-read-only"' in html
    assert 'data-testid="local-grants-unexpired">1<' in html
    before = AuditEvent.objects.count()
    for data in ({"mode": "disable"}, {"mode": "platform_default"}, {}):
        assert auditor.post(page(a), data).status_code == 403
    assert override(a) == (True, False) and len(grant_rows(a)) == 1
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize("who", ["staff_a", "admin_a", "auditor_a", "admin_b", "procurement_a"])
def test_ministry_roles_get_403_for_their_own_and_other_ministries(people: People, who: str) -> None:
    """As the URL matrix says: the platform check comes first, so every ministry id (or none) is a 403."""
    call_command("local_grant_policy", "--ministry", people.a.code, "--enable")
    client = client_for(getattr(people, who))
    for ministry_id in (people.a.pk, people.b.pk, 999_999):
        url = reverse("console:platform_local_grants", args=[ministry_id])
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"mode": "enable", "allow_ministry_admin": "on"}).status_code == 403, url
    assert override(people.a) == (True, False) and override(people.b) is None
    assert not AuditEvent.objects.filter(action=CROSS_READ).exists()


def test_anonymous_is_sent_to_login(people: People) -> None:
    response = client_for(None).get(page(people.a))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_unknown_ministry_is_404_for_platform_roles(people: People) -> None:
    url = reverse("console:platform_local_grants", args=[999_999])
    assert client_for(people.platform_auditor).get(url).status_code == 404
    admin = client_for(people.platform_admin)
    assert admin.get(url).status_code == 404
    assert admin.post(url, {"mode": "enable"}).status_code == 404
    assert not AuditEvent.objects.filter(action=POLICY_SET).exists()


@pytest.mark.parametrize(
    "data",
    [
        {"mode": "disable", "allow_ministry_admin": "on"},
        {"mode": "platform_default", "allow_ministry_admin": "on"},
        {"mode": "everything"},
        {},
    ],
)
def test_bad_form_is_400_and_changes_nothing(people: People, data: dict[str, str]) -> None:
    a = people.a
    call_command("local_grant_policy", "--ministry", a.code, "--enable")
    add_grant(a, people.staff_a, "ministry_auditor", people.admin_a)
    client = client_for(people.platform_admin)  # (logging in is audited too)
    before = AuditEvent.objects.exclude(action=CROSS_READ).count()
    response = client.post(page(a), data)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'role="alert"' in html and 'data-testid="local-grants-form"' in html
    if "allow_ministry_admin" in data:
        assert 'data-testid="local-grants-allow-admin-error"' in html
    assert override(a) == (True, False) and len(grant_rows(a)) == 1
    assert AuditEvent.objects.exclude(action=CROSS_READ).count() == before


def test_reading_another_ministry_is_an_audited_cross_ministry_read(people: People) -> None:
    a, b = people.a, people.b
    # The platform admin's home ministry is B: reading A is cross-ministry, reading B is not.
    admin = client_for(people.platform_admin)
    assert admin.get(page(a)).status_code == 200
    event = AuditEvent.objects.get(action=CROSS_READ)
    assert (event.actor_id, event.ministry_id) == (people.platform_admin.pk, a.pk)
    assert event.data["reader_ministry_id"] == b.pk and event.data["page"] == "local_grants"
    assert admin.get(page(b)).status_code == 200
    assert AuditEvent.objects.filter(action=CROSS_READ).count() == 1
    # A failed POST re-shows A's page: also a read of A.
    assert admin.post(page(a), {}).status_code == 400
    assert AuditEvent.objects.filter(action=CROSS_READ, ministry_id=a.pk).count() == 2


@override_settings(GENNAI_LOCAL_ROLE_GRANTS={"enabled": True, "allow_ministry_admin": False, "max_days": 30})
def test_shows_the_platform_default_and_the_override(people: People) -> None:
    a = people.a
    client = client_for(people.platform_admin)
    html = client.get(page(a)).content.decode()
    assert re.search(r'data-testid="local-grants-platform-default">有効 · 期限は最長30日<', html)
    assert "なし（プラットフォームの既定を適用）" in html
    assert re.search(r'data-testid="local-grants-roles">.*府省庁監査担当', html)  # the default applies
    call_command("local_grant_policy", "--ministry", a.code, "--disable")
    html = client.get(page(a)).content.decode()
    assert 'data-testid="local-grants-override">無効<' in html
    assert "なし（付与できません）" in html


def test_ministries_list_links_to_each_ministry_policy(people: People) -> None:
    html = client_for(people.platform_admin).get(reverse("console:platform_ministries")).content.decode()
    for ministry in (people.a, people.b):
        assert f'href="{page(ministry)}" class="gn-link" data-testid="local-grants-{ministry.code}"' in html
    assert "ポリシーを設定" in html
    html = client_for(people.platform_auditor).get(reverse("console:platform_ministries")).content.decode()
    assert f'data-testid="local-grants-{people.a.code}">ポリシーを表示<' in html


def test_the_page_its_errors_and_its_message_in_english(people: People) -> None:
    a = people.a
    call_command("local_grant_policy", "--ministry", a.code, "--enable", "--allow-ministry-admin")
    add_grant(a, people.staff_a, "ministry_admin", people.admin_a)
    client = client_for(people.platform_admin)
    client.cookies["django_language"] = "en"

    def below_nav(html: str) -> str:
        main = html[html.index('<main id="main"') : html.index("</main>")]
        return main[main.index('data-testid="console-nav"') :].split("</nav>", 1)[1]

    for response in (
        client.get(page(a), HTTP_ACCEPT_LANGUAGE="en"),
        client.post(page(a), {"mode": "disable", "allow_ministry_admin": "on"}, HTTP_ACCEPT_LANGUAGE="en"),
        client.post(page(a), {"mode": "enable"}, HTTP_ACCEPT_LANGUAGE="en", follow=True),
        client.get(reverse("console:platform_ministries"), HTTP_ACCEPT_LANGUAGE="en"),
    ):
        text = below_nav(response.content.decode())
        assert not JAPANESE.findall(text), sorted(set(JAPANESE.findall(text)))[:20]
    response = client.post(page(a), {"mode": "disable"}, HTTP_ACCEPT_LANGUAGE="en")
    assert message_texts(response) == [
        "The local grant policy of Digital Agency was saved. "
        "Grants revoked because the new policy no longer allows them: 0."
    ]


def test_management_command_still_works_and_is_audited_as_system(people: People, capsys: Any) -> None:
    a = people.a
    call_command("local_grant_policy", "--ministry", a.code, "--enable", "--allow-ministry-admin")
    add_grant(a, people.staff_a, "ministry_admin", people.admin_a)
    call_command("local_grant_policy", "--ministry", a.code, "--enable")
    out = capsys.readouterr().out
    assert "digital: grantable roles: ministry_auditor" in out
    assert "digital: revoked 1 grant(s) no longer allowed" in out
    assert override(a) == (True, False) and grant_rows(a) == []
    actors = AuditEvent.objects.filter(action__in=[POLICY_SET, REVOKE]).values_list("actor", flat=True)
    assert set(actors) == {None}  # system
