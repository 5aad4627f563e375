"""Platform pages: ministries, cross-ministry usage (audited reads), the platform budget."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.audit.services import CROSS_MINISTRY_USAGE_READ
from apps.quotas.budget_models import PlatformLimit

from .insight_support import People, add_usage, client_for, make_people

MINISTRIES = reverse("console:platform_ministries")
USAGE = reverse("console:platform_usage")
BUDGET = reverse("console:platform_budget")


@pytest.fixture
def people(ministries: tuple[Any, Any]) -> People:
    p = make_people(ministries)
    add_usage(p.a, model="m", prompt=100, completion=0, n=2)
    add_usage(p.b, model="m", prompt=1000, completion=0, n=1)
    return p


@pytest.mark.parametrize("who", ["staff_a", "admin_a", "auditor_a", "admin_b", "procurement_a"])
def test_ministry_roles_cannot_reach_platform_pages(people: People, who: str) -> None:
    client = client_for(getattr(people, who))
    for url in (MINISTRIES, USAGE, BUDGET):
        assert client.get(url).status_code == 403, url
    assert client.post(BUDGET, {"monthly_tokens": "1"}).status_code == 403
    assert not PlatformLimit.objects.exists()


@pytest.mark.parametrize("who", ["platform_admin", "platform_auditor"])
def test_ministry_list_with_member_counts_is_an_audited_read(people: People, who: str) -> None:
    html = client_for(getattr(people, who)).get(MINISTRIES).content.decode()
    # A: staff, admin, auditor, procurement, platform auditor; B: admin, platform admin.
    assert 'data-testid="members-digital">5<' in html and 'data-testid="members-soumu">2<' in html
    event = AuditEvent.objects.get(action="tenancy.cross_ministry_read")
    assert event.actor_id == getattr(people, who).pk and event.ministry_id is None


def test_cross_ministry_usage_totals_per_ministry_are_an_audited_read(people: People) -> None:
    response = client_for(people.platform_auditor).get(USAGE)
    html = response.content.decode()
    assert 'data-testid="platform-tokens-digital">200<' in html
    assert 'data-testid="platform-tokens-soumu">1,000<' in html
    event = AuditEvent.objects.get(action=CROSS_MINISTRY_USAGE_READ)
    assert event.actor_id == people.platform_auditor.pk and event.data["reader_ministry_id"] == people.a.pk


def test_platform_admin_sets_the_platform_budget_auditor_only_reads(people: People) -> None:
    admin = client_for(people.platform_admin)
    response = admin.post(BUDGET, {"alias_name": "", "monthly_tokens": "5000000", "rpm": "600"})
    assert response.status_code == 302
    row = PlatformLimit.objects.get(alias_name="")
    assert (row.monthly_tokens, row.rpm, row.tpm) == (5_000_000, 600, None)
    assert AuditEvent.objects.filter(action="quota.platform_limit_set", actor=people.platform_admin).exists()
    assert admin.post(BUDGET, {"monthly_tokens": "-1"}).status_code == 400

    auditor = client_for(people.platform_auditor)
    html = auditor.get(BUDGET).content.decode()
    assert 'data-testid="platform-limit-all"' in html and 'data-testid="platform-limit-form"' not in html
    assert auditor.post(BUDGET, {"monthly_tokens": "1"}).status_code == 403
    assert PlatformLimit.objects.get(alias_name="").monthly_tokens == 5_000_000


def test_platform_roles_find_the_console_from_the_header(people: People) -> None:
    html = client_for(people.platform_auditor).get("/").content.decode()
    assert f'href="{MINISTRIES}" class="gn-btn gn-btn-tertiary gn-btn-sm" data-testid="nav-console"' in html
    assert 'data-testid="nav-console"' not in client_for(people.staff_a).get("/").content.decode()
    nav = client_for(people.platform_admin).get(MINISTRIES).content.decode()
    assert 'data-testid="console-nav-platform"' in nav and 'data-testid="console-nav-audit"' in nav
    assert 'data-testid="console-nav-usage"' not in nav  # no ministry role: no ministry usage
    assert 'data-testid="console-nav-members"' not in nav  # nor the ministry pages (they answer 403)
