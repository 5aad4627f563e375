"""Procurement screens: permission matrix, create/edit flows, canary → full → rollback, grants, health."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.audit.services import audit_verify_chain
from apps.registry.models import Alias, AliasGrant, ChangeRequest, Deployment, HealthState, Model, Vendor
from apps.registry.tests.test_services import (  # the autouse fixture resets snapshot and breaker
    chosen,
    clean_registry_state,  # noqa: F401
    make_alias,
    make_deployment,
    route_map,
)
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
JAPANESE = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")


def registry_events(user: Any) -> Any:
    """The user's audit events other than signing in (the test client's login is audited too)."""
    return AuditEvent.objects.filter(actor=user).exclude(action__startswith="accounts.")


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def users(ministries: Any) -> dict[str, Any]:
    a, b = ministries
    return {
        "staff": make_user("staff-user", a, ["staff"]),
        "ministry_admin": make_user("ministry-admin", a, ["staff", "ministry_admin"]),
        "procurement": make_user("procurement", a, ["staff", "procurement_officer"]),
        "platform_admin": make_user("platform-admin", a, ["platform_admin"]),
        "auditor": make_user("auditor-user", b, ["auditor"]),
    }


@pytest.fixture
def registry(ministries: Any) -> dict[str, Any]:
    a, _b = ministries
    old = make_deployment("current-model")
    new = make_deployment("new-model")
    alias = make_alias([(old, 100)], grant=[a])
    return {"old": old, "new": new, "alias": alias, "vendor": old.model.vendor, "model": old.model}


def read_urls(r: dict[str, Any]) -> list[str]:
    return [
        reverse("registry:dashboard"),
        reverse("registry:vendor_list"),
        reverse("registry:model_list"),
        reverse("registry:deployment_list"),
        reverse("registry:alias_list"),
        reverse("registry:alias_detail", args=[r["alias"].pk]),
        reverse("registry:change_list"),
    ]


def edit_pages(r: dict[str, Any]) -> list[str]:
    return [
        reverse("registry:vendor_create"),
        reverse("registry:vendor_edit", args=[r["vendor"].pk]),
        reverse("registry:model_create"),
        reverse("registry:model_edit", args=[r["model"].pk]),
        reverse("registry:deployment_create"),
        reverse("registry:deployment_edit", args=[r["old"].pk]),
        reverse("registry:alias_create"),
    ]


def posts(r: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    alias = r["alias"].pk
    return [
        (reverse("registry:vendor_create"), {"name": "Intruder"}),
        (reverse("registry:deployment_check", args=[r["old"].pk]), {}),
        (reverse("registry:alias_routes", args=[alias]), {f"weight_{r['new'].pk}": "100", "reason": "x"}),
        (reverse("registry:alias_rollback", args=[alias]), {}),
        (reverse("registry:alias_grants", args=[alias]), {"ministry": "soumu", "action": "grant"}),
    ]


# --- Permission matrix ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["procurement", "platform_admin"])
def test_procurement_and_platform_admin_may_view_and_edit(
    role: str, users: dict[str, Any], registry: dict[str, Any]
) -> None:
    client = login(users[role])
    for url in read_urls(registry) + edit_pages(registry):
        response = client.get(url)
        assert response.status_code == 200, url
    assert b'data-testid="nav-registry"' in response.content


@pytest.mark.parametrize("role", ["staff", "ministry_admin"])
def test_everyone_else_gets_403_and_no_nav_link(
    role: str, users: dict[str, Any], registry: dict[str, Any]
) -> None:
    client = login(users[role])
    for url in read_urls(registry) + edit_pages(registry):
        assert client.get(url).status_code == 403, url
    for url, data in posts(registry):
        assert client.post(url, data).status_code == 403, url
    assert b"nav-registry" not in client.get("/").content
    assert registry_events(users[role]).count() == 0


def test_auditor_reads_but_cannot_change_anything(users: dict[str, Any], registry: dict[str, Any]) -> None:
    client = login(users["auditor"])  # an auditor of another ministry: the registry is platform-wide
    for url in read_urls(registry):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'data-testid="read-only"' in response.content
    detail = client.get(reverse("registry:alias_detail", args=[registry["alias"].pk])).content.decode()
    assert 'data-testid="history"' in detail and 'data-testid="audit-trail"' in detail
    for marker in ("routes-form", "rollback-form", "grant-digital", "grant-soumu", "revoke-", "check-now-"):
        assert f'data-testid="{marker}' not in detail
    assert "check-now-" not in client.get(reverse("registry:deployment_list")).content.decode()
    for url in edit_pages(registry):
        assert client.get(url).status_code == 403, url
    for url, data in posts(registry):
        assert client.post(url, data).status_code == 403, url
    assert route_map(registry["alias"]) == {"current-model": 100}
    assert not Vendor.objects.filter(name="Intruder").exists()


def test_any_membership_counts(ministries: Any, registry: dict[str, Any]) -> None:
    """Procurement role in the second membership, while the first (staff only) is active."""
    a, b = ministries
    user = make_user("two-hats", a, ["staff"])
    Membership.objects.create(user=user, ministry=b, roles=["procurement_officer"])
    assert login(user).get(reverse("registry:alias_list")).status_code == 200
    b.active = False
    b.save()
    assert login(user).get(reverse("registry:alias_list")).status_code == 403


def test_anonymous_is_sent_to_login(registry: dict[str, Any]) -> None:
    response = Client().get(reverse("registry:alias_detail", args=[registry["alias"].pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert Client().post(reverse("registry:alias_rollback", args=[registry["alias"].pk])).status_code == 302


def test_unknown_ids_are_404(users: dict[str, Any]) -> None:
    client = login(users["procurement"])
    assert client.get(reverse("registry:alias_detail", args=[999999])).status_code == 404
    assert client.get(reverse("registry:deployment_edit", args=[999999])).status_code == 404


# --- Create / edit flows -------------------------------------------------------------------------


def test_register_vendor_model_deployment_and_alias(users: dict[str, Any], settings: Any) -> None:
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = [*settings.GENNAI_UPSTREAM_ALLOWED_HOSTS, "vllm-llmjp"]
    user = users["procurement"]
    client = login(user)
    response = client.post(
        reverse("registry:vendor_create"),
        {"name": "LLM-jp", "website": "https://llm-jp.nii.ac.jp", "contact": ""},
    )
    assert response.status_code == 302 and response["Location"] == reverse("registry:vendor_list")
    vendor = Vendor.objects.get(name="LLM-jp")

    response = client.post(
        reverse("registry:model_create"),
        {
            "vendor": vendor.pk,
            "name": "llm-jp-4-8b",
            "family": "LLM-jp-4",
            "version": "8B-instruct",
            "license": "Apache-2.0",
            "kind": "chat",
            "status": "candidate",
            "clearance": "2",
            "context_window": "8192",
            "parameter_count": "8000000000",
            "price_input_per_1m": "10",
            "price_output_per_1m": "30",
            "reason": "国産モデル、オンプレミス運用のため機密性2",
        },
    )
    assert response.status_code == 302, response.content.decode()
    model = Model.objects.get(name="llm-jp-4-8b")
    # Four-eyes: registered at 機密性1; the raise to 2 waits for a second person.
    assert (model.clearance, model.status, model.parameter_count) == (1, "candidate", 8_000_000_000)
    assert (model.price_input_per_1m, model.price_output_per_1m) == (10, 30)
    change = ChangeRequest.objects.get(model=model, status="pending")
    assert change.payload == {"from": 1, "to": 2} and change.proposed_by == user
    assert "8B" in client.get(reverse("registry:model_list")).content.decode()

    response = client.post(
        reverse("registry:deployment_create"),
        {
            "model": model.pk,
            "name": "llmjp-8b-onprem",
            "provider": "openai_compatible",
            "base_url": "http://vllm-llmjp:8000",
            "served_model_name": "llm-jp-4-8b",
            "secret_ref": "env:GENNAI_UPSTREAM_LLMJP",
            "zone": "on_prem",
            "clearance": "1",
            "max_concurrency": "32",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()
    deployment = Deployment.objects.get(name="llmjp-8b-onprem")
    assert deployment.secret_ref == "env:GENNAI_UPSTREAM_LLMJP" and deployment.enabled

    response = client.post(
        reverse("registry:alias_create"),
        {
            "name": "domestic-chat",
            "display_name_ja": "国産チャット",
            "display_name_en": "Domestic chat",
            "kind": "chat",
        },
    )
    alias = Alias.objects.get(name="domestic-chat")
    assert response["Location"] == reverse("registry:alias_detail", args=[alias.pk])
    detail = client.get(response["Location"]).content.decode()
    assert f'data-testid="weight-{deployment.name}"' in detail

    actions = set(registry_events(user).values_list("action", flat=True))
    assert actions == {
        "registry.vendor.create",
        "registry.model.create",
        "registry.deployment.create",
        "registry.alias.create",
        "registry.change.propose",
    }


def test_edit_audits_only_changed_fields(users: dict[str, Any], registry: dict[str, Any]) -> None:
    user = users["procurement"]
    client = login(user)
    old: Deployment = registry["old"]
    url = reverse("registry:deployment_edit", args=[old.pk])
    form = {
        "model": old.model_id,
        "name": old.name,
        "provider": old.provider,
        "base_url": old.base_url,
        "served_model_name": old.served_model_name,
        "secret_ref": "",
        "zone": old.zone,
        "clearance": str(old.clearance),
        "max_concurrency": "8",
        "enabled": "on",
    }
    assert client.post(url, form).status_code == 302
    event = AuditEvent.objects.get(actor=user, action="registry.deployment.update")
    assert event.data == {"max_concurrency": 8} and event.target_id == str(old.pk)
    assert client.post(url, form).status_code == 302  # nothing changed: nothing audited
    assert registry_events(user).count() == 1


def test_raw_secret_is_refused_with_a_field_error(users: dict[str, Any], registry: dict[str, Any]) -> None:
    client = login(users["procurement"])
    response = client.post(
        reverse("registry:deployment_create"),
        {
            "model": registry["model"].pk,
            "name": "leaky",
            "provider": "openai_compatible",
            "base_url": "https://api.vendor.example",
            "served_model_name": "m",
            "secret_ref": "sk-live-4f9a8b7c6d5e",
            "zone": "external",
            "clearance": "1",
            "max_concurrency": "4",
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-testid="error-secret_ref"' in html and "env:" in html
    assert "sk-live-4f9a8b7c6d5e" not in html  # not even echoed back into the form
    assert not Deployment.objects.filter(name="leaky").exists()


def test_form_errors_are_shown(users: dict[str, Any], registry: dict[str, Any]) -> None:
    client = login(users["procurement"])
    response = client.post(reverse("registry:vendor_create"), {"name": registry["vendor"].name})
    assert response.status_code == 400 and b'data-testid="error-name"' in response.content
    response = client.post(
        reverse("registry:deployment_create"),
        {"model": registry["model"].pk, "name": "x", "provider": "no-such-plugin", "base_url": "ftp://x"},
    )
    html = response.content.decode()
    assert response.status_code == 400
    for field in ("provider", "base_url", "served_model_name", "clearance"):
        assert f'data-testid="error-{field}"' in html, field


def test_lists_paginate_by_25(users: dict[str, Any]) -> None:
    for i in range(30):
        Vendor.objects.create(name=f"Vendor {i:02d}")
    client = login(users["procurement"])
    first = client.get(reverse("registry:vendor_list")).content.decode()
    second = client.get(reverse("registry:vendor_list") + "?page=2").content.decode()
    assert (
        first.count('data-testid="vendor-') - first.count("vendor-edit-") - first.count("vendor-create") == 26
    )
    assert "Vendor 29" in second and "Vendor 00" not in second and 'data-testid="pagination"' in second


# --- Canary → full → rollback through the screens ---------------------------------------------------


def test_canary_promote_rollback_via_htmx_reaches_router(
    ministries: Any, users: dict[str, Any], registry: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    a, _b = ministries
    user = users["procurement"]
    client = login(user)
    alias, old, new = registry["alias"], registry["old"], registry["new"]
    routes_url = reverse("registry:alias_routes", args=[alias.pk])
    assert chosen(a) == {"current-model"}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            routes_url,
            {f"weight_{old.pk}": "90", f"weight_{new.pk}": "10", "reason": "10% canary of the new model"},
            **HTMX,
        )
    assert response.status_code == 200
    panel = response.content.decode()
    assert panel.lstrip().startswith('<div id="alias-panel"') and 'data-revision="2"' in panel
    assert 'data-testid="alias-notice"' in panel
    assert route_map(alias) == {"current-model": 90, "new-model": 10}
    assert chosen(a) == {"current-model", "new-model"}

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            routes_url,
            {f"weight_{old.pk}": "0", f"weight_{new.pk}": "100", "reason": "promote to full"},
            **HTMX,
        )
    assert chosen(a) == {"new-model"}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("registry:alias_rollback", args=[alias.pk]), {"reason": "error rate up"}, **HTMX
        )
    assert 'data-revision="4"' in response.content.decode()
    assert route_map(alias) == {"current-model": 90, "new-model": 10}
    assert chosen(a) == {"current-model", "new-model"}

    detail = client.get(reverse("registry:alias_detail", args=[alias.pk])).content.decode()
    for number in (1, 2, 3, 4):
        assert f'data-testid="revision-{number}"' in detail
    assert 'data-testid="revision-rollback-of"' in detail and "error rate up" in detail
    assert detail.count('data-action="registry.alias.routes"') == 3  # initial + canary + promote
    assert detail.count('data-action="registry.alias.rollback"') == 1

    events = AuditEvent.objects.filter(actor=user, target_type="alias", target_id=str(alias.pk))
    assert [e.action for e in events.order_by("id")] == [
        "registry.alias.routes",
        "registry.alias.routes",
        "registry.alias.rollback",
    ]
    assert audit_verify_chain() == (True, None)


def test_routes_form_without_htmx_redirects_and_errors_are_shown(
    users: dict[str, Any], registry: dict[str, Any]
) -> None:
    client = login(users["procurement"])
    alias, new = registry["alias"], registry["new"]
    url = reverse("registry:alias_routes", args=[alias.pk])

    no_reason = client.post(url, {f"weight_{new.pk}": "100", "reason": ""})
    assert no_reason.status_code == 400 and b'data-testid="error-reason"' in no_reason.content
    no_weight = client.post(url, {"reason": "r"}, **HTMX)
    assert no_weight.status_code == 200 and b'data-testid="form-errors"' in no_weight.content
    all_zero = client.post(url, {f"weight_{new.pk}": "0", "reason": "r"}, **HTMX)
    assert b'data-testid="form-errors"' in all_zero.content
    assert route_map(alias) == {"current-model": 100}

    response = client.post(url, {f"weight_{new.pk}": "100", "reason": "swap"})
    assert response.status_code == 302 and response["Location"] == reverse(
        "registry:alias_detail", args=[alias.pk]
    )
    assert route_map(alias) == {"new-model": 100}


def test_rollback_without_history_is_explained(users: dict[str, Any], registry: dict[str, Any]) -> None:
    client = login(users["procurement"])
    alias = registry["alias"]
    assert (
        b'data-testid="rollback-form"'
        not in client.get(reverse("registry:alias_detail", args=[alias.pk])).content
    )
    response = client.post(reverse("registry:alias_rollback", args=[alias.pk]), {}, **HTMX)
    assert response.status_code == 200 and b'data-testid="alias-notice"' in response.content
    assert alias.revisions.count() == 1


def test_grant_and_revoke_via_screen(
    ministries: Any, users: dict[str, Any], registry: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    _a, b = ministries
    client = login(users["platform_admin"])
    alias = registry["alias"]
    url = reverse("registry:alias_grants", args=[alias.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"ministry": b.code, "action": "grant"}, **HTMX)
    assert f'data-testid="grant-row-{b.code}" data-granted="true"' in response.content.decode()
    assert chosen(b) == {"current-model"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"ministry": b.code, "action": "revoke"})
    assert response.status_code == 302
    with ministry_scope(ministry_id=b.pk):
        assert not AliasGrant.objects.filter(alias=alias).exists()
    assert client.post(url, {"ministry": "nowhere", "action": "grant"}).status_code == 400
    events = AuditEvent.objects.filter(target_id=str(alias.pk), ministry=b).values_list("action", flat=True)
    assert list(events.order_by("id")) == ["registry.alias.grant", "registry.alias.revoke"]


# --- Health ------------------------------------------------------------------------------------------


def test_check_now_runs_the_provider_health(users: dict[str, Any]) -> None:
    client = login(users["procurement"])
    with FakeUpstream() as ok, FakeUpstream(mode="status", status=500) as broken:
        good = make_deployment("good", ok.url)
        bad = make_deployment("bad", broken.url)
        response = client.post(reverse("registry:deployment_check", args=[good.pk]), **HTMX)
        html = response.content.decode()
        assert response.status_code == 200 and html.lstrip().startswith(
            f'<div id="deployment-{good.pk}-health"'
        )
        assert 'data-state="healthy"' in html
        response = client.post(
            reverse("registry:deployment_check", args=[bad.pk]), {"next": "https://evil.example/"}
        )
    assert response.status_code == 302 and response["Location"] == reverse("registry:deployment_list")
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.health, bad.health) == (HealthState.HEALTHY, HealthState.DOWN)
    assert "HTTP 500" in bad.health_detail
    assert not registry_events(users["procurement"]).exists()  # probes are not audited


def test_dashboard_shows_weights_health_and_circuit(users: dict[str, Any], registry: dict[str, Any]) -> None:
    from apps.registry.breaker import breaker

    for _ in range(3):
        breaker.failure(registry["new"].pk)
    Deployment.objects.filter(pk=registry["old"].pk).update(health=HealthState.HEALTHY)
    client = login(users["procurement"])
    html = client.get(reverse("registry:dashboard")).content.decode()
    assert 'data-testid="dash-alias-standard-chat"' in html and 'data-weight="100"' in html
    assert 'data-gn-width="100.0"' in html
    new_row = html[html.index('data-testid="dash-deployment-new-model"') :]
    assert 'data-state="open"' in new_row.split("</tr>")[0]
    old_row = html[html.index('data-testid="dash-deployment-current-model"') :]
    assert 'data-state="healthy"' in old_row.split("</tr>")[0]
    partial = client.get(reverse("registry:dashboard"), **HTMX).content.decode()
    assert partial.lstrip().startswith('<div id="dashboard-health"')


# --- English ------------------------------------------------------------------------------------------


def test_screens_are_fully_translated_to_english(users: dict[str, Any], registry: dict[str, Any]) -> None:
    client = login(users["procurement"])
    client.cookies["django_language"] = "en"
    urls = read_urls(registry) + edit_pages(registry)
    for url in urls:
        html = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
        main = html[html.index('<main id="main"') : html.index("</main>")]
        main = main.replace("標準チャット", "")  # test data (alias display_name_ja in the alias form)
        assert not JAPANESE.findall(main), (url, sorted(set(JAPANESE.findall(main)))[:20])
