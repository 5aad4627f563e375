"""Four-eyes in the browser: officer A proposes raising a deployment's clearance, B approves it.

A is the procurement officer 高橋 (takahashi); B is the platform administrator
(admin), the other role that may approve. Each signs in through the dev IdP in
a browser context of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.audit.services import audit_verify_chain
from apps.registry import services
from apps.registry.breaker import breaker
from apps.registry.models import ChangeRequest, Deployment
from apps.registry.snapshot import reset_for_tests
from tests.e2e.test_registry import shoot, sign_in
from tests.support.fake_upstream import FakeUpstream
from tests.support.idp import DevIdP

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEPLOYMENT = "llmjp4-8b-onprem"


@pytest.fixture
def site(dev_idp: DevIdP, live_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GENNAI_UPSTREAM_LLMJP", "e2e-upstream-key")  # what secret_ref names
    call_command("seed_demo", verbosity=0)
    dev_idp.register_app(live_server.url)
    reset_for_tests()
    breaker.reset()
    with FakeUpstream(model="llm-jp-4-8b-instruct") as upstream:
        vendor = services.vendor_save(actor=None, name="国立情報学研究所 LLM-jp")
        model = services.model_save(
            actor=None,
            vendor=vendor,
            name="llm-jp-4-8b-instruct",
            family="LLM-jp-4",
            version="8B-instruct",
            license="Apache-2.0",
            context_window=8192,
            kind="chat",
            clearance=3,
            status="active",
        )
        services.deployment_save(
            actor=None,
            model=model,
            name=DEPLOYMENT,
            base_url=upstream.url,
            served_model_name="llm-jp-4-8b-instruct",
            secret_ref="env:GENNAI_UPSTREAM_LLMJP",
            clearance=1,
            max_concurrency=8,
        )
        yield str(live_server.url)
    reset_for_tests()


def new_page(browser: Any) -> Any:
    context = browser.new_context(locale="ja-JP", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def test_officer_proposes_and_another_approves(browser: Any, site: str) -> None:
    # --- Officer A proposes 機密性1 → 3 -----------------------------------------------------------
    a = new_page(browser)
    sign_in(a, site, "takahashi")
    a.goto(f"{site}/registry/deployments/")
    a.get_by_test_id(f"deployment-edit-{DEPLOYMENT}").click()
    a.get_by_test_id("field-clearance").select_option("3")
    a.get_by_test_id("field-reason").fill("閉域のオンプレミス環境に移設済みのため機密性3まで扱う")
    a.get_by_test_id("form-submit").click()
    a.wait_for_url(f"{site}/registry/deployments/")
    change = ChangeRequest.objects.get(status="pending")
    row = a.get_by_test_id(f"deployment-{DEPLOYMENT}")
    assert row.get_by_test_id("pending-badge").is_visible()
    assert row.get_by_test_id("deployment-clearance").get_attribute("data-level") == "1"  # not applied
    assert Deployment.objects.get(name=DEPLOYMENT).clearance == 1

    # A sees the request but cannot approve it.
    a.get_by_test_id("registry-nav-changes").click()
    mine = a.get_by_test_id(f"change-{change.pk}")
    assert mine.get_by_test_id("own-request").is_visible()
    assert a.get_by_test_id(f"change-approve-{change.pk}").count() == 0
    shoot(a, "registry-change-proposed")
    a.context.close()

    # --- B (another person with approval rights) signs in and approves ------------------------
    b = new_page(browser)
    sign_in(b, site, "admin")
    b.goto(f"{site}/registry/deployments/{Deployment.objects.get(name=DEPLOYMENT).pk}/edit/")
    assert b.get_by_test_id("pending-change-banner").is_visible()
    b.get_by_test_id("pending-change-link").click()
    row = b.get_by_test_id(f"change-{change.pk}")
    assert "機密性1 → 機密性3" in row.get_by_test_id("change-summary").inner_text()
    assert "閉域" in row.get_by_test_id("change-reason").inner_text()
    row.locator('input[name="note"]').fill("移設の記録を確認済み")
    b.get_by_test_id(f"change-approve-{change.pk}").click()
    b.locator(f'[data-testid="change-{change.pk}"][data-status="applied"]').wait_for()
    assert b.get_by_test_id("change-notice").is_visible()
    assert b.get_by_test_id("pending-change-count").count() == 0  # the nav followed, no reload
    assert b.get_by_test_id("no-pending").is_visible()
    shoot(b, "registry-change-approved")

    # The change is visible on the deployments screen, and the nav no longer counts it.
    b.get_by_test_id("registry-nav-deployments").click()
    row = b.get_by_test_id(f"deployment-{DEPLOYMENT}")
    assert row.get_by_test_id("deployment-clearance").get_attribute("data-level") == "3"
    assert row.get_by_test_id("pending-badge").count() == 0
    assert b.get_by_test_id("pending-change-count").count() == 0
    b.context.close()

    assert Deployment.objects.get(name=DEPLOYMENT).clearance == 3
    change.refresh_from_db()
    assert change.status == "applied" and change.decided_by is not None
    assert change.decided_by.username == "admin" and change.proposed_by.username == "takahashi"  # type: ignore[union-attr]
    actions = list(
        AuditEvent.objects.filter(action__startswith="registry.change.").values_list("action", "actor_label")
    )
    assert actions == [("registry.change.propose", "takahashi"), ("registry.change.approve", "admin")]
    assert audit_verify_chain() == (True, None)
