"""Browser flow of a procurement officer: canary 90/10 → promote 0/100 → one-step rollback → history.

Screenshots (viewport 1280x800) go to ``GENNAI_SCREENSHOTS``; with
``GENNAI_DOCS_SCREENSHOTS=1`` they are also written to ``docs/img/registry-*.png``
for docs/registry.md. ``GENNAI_E2E_APP_CSS=/path/app.css`` serves a freshly built
stylesheet instead of the committed one (to preview template classes before
``make assets``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from apps.registry import services
from apps.registry.breaker import breaker
from apps.registry.models import Alias, HealthState
from apps.registry.router import plan_route
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.idp import DevIdP

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(os.environ.get("GENNAI_SCREENSHOTS", ".gennai/test/screenshots"))
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
CURRENT, NEW = "llmjp3-13b-onprem", "llmjp4-8b-onprem"


def shoot(target: Any, name: str) -> None:
    """Screenshot a page (viewport only: small files) or an element."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    if os.environ.get("GENNAI_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(DOCS_IMG / f"{name}.png"))


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/")
    page.get_by_test_id("login").click()
    page.get_by_test_id(f"login-{username}").click()
    page.wait_for_url(f"{base}/")


def primaries(ministry: Ministry) -> set[str]:
    with ministry_scope(ministry_id=ministry.pk):
        return {
            plan_route(alias_name="standard-chat", level=2, sticky_key=f"c{i}").candidates[0].name
            for i in range(100)
        }


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream(model="llm-jp-3-13b-instruct") as a, FakeUpstream(model="llm-jp-4-8b-instruct") as b:
        yield a, b


@pytest.fixture
def site(
    dev_idp: DevIdP,
    live_server: Any,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    monkeypatch.setenv("GENNAI_UPSTREAM_LLMJP", "e2e-upstream-key")  # what secret_ref names
    call_command("seed_demo", verbosity=0)
    dev_idp.register_app(live_server.url)
    reset_for_tests()
    breaker.reset()
    vendor = services.vendor_save(
        actor=None,
        name="国立情報学研究所 LLM-jp",
        website="https://llm-jp.nii.ac.jp/",
        contact="procurement@example.go.jp",
    )
    deployments = []
    for (name, family, version, params), upstream in zip(
        [
            ("llm-jp-3-13b-instruct", "LLM-jp-3", "13B-instruct", 13_000_000_000),
            ("llm-jp-4-8b-instruct", "LLM-jp-4", "8B-instruct", 8_000_000_000),
        ],
        upstreams,
        strict=True,
    ):
        model = services.model_save(
            actor=None,
            vendor=vendor,
            name=name,
            family=family,
            version=version,
            license="Apache-2.0",
            parameter_count=params,
            context_window=8192,
            kind="chat",
            clearance=2,
            status="active",
            price_input_per_1m="10.0000",
            price_output_per_1m="30.0000",
        )
        deployments.append(
            services.deployment_save(
                actor=None,
                model=model,
                name=CURRENT if family == "LLM-jp-3" else NEW,
                base_url=upstream.url,
                served_model_name=name,
                secret_ref="env:GENNAI_UPSTREAM_LLMJP",
                clearance=2,
                max_concurrency=32,
            )
        )
    alias = services.alias_create(
        actor=None,
        name="standard-chat",
        display_name_ja="標準チャット",
        display_name_en="Standard chat",
        description="職員向けの標準的なチャットモデル（国産・機密性2まで）。",
    )
    services.alias_set_routes(actor=None, alias=alias, routes=[(deployments[0], 100)], reason="初期設定")
    for ministry in Ministry.objects.all():
        services.alias_grant(actor=None, ministry=ministry, alias=alias)
    services.deployment_health_check(deployments=deployments)
    yield str(live_server.url)
    reset_for_tests()


@pytest.fixture
def styled_page(page: Any) -> Any:
    css = os.environ.get("GENNAI_E2E_APP_CSS")
    if css and Path(css).is_file():
        page.context.route(
            "**/static/gennai/css/app.css",
            lambda route: route.fulfill(path=css, content_type="text/css; charset=utf-8"),
        )
    return page


def set_weights(page: Any, weights: dict[str, str], reason: str, revision: int) -> None:
    for name, weight in weights.items():
        page.get_by_test_id(f"weight-{name}").fill(weight)
    page.get_by_test_id("routes-reason").fill(reason)
    page.get_by_test_id("routes-submit").click()
    page.locator(f'[data-testid="alias-panel"][data-revision="{revision}"]').wait_for()
    assert page.get_by_test_id("alias-notice").is_visible()


def test_procurement_canary_promote_rollback(styled_page: Any, site: str) -> None:
    page = styled_page
    digital = Ministry.objects.get(code="digital")
    sign_in(page, site, "takahashi")

    page.get_by_test_id("nav-registry").click()
    page.wait_for_url(f"{site}/registry/")
    assert page.get_by_test_id(f"health-{CURRENT}").locator('[data-state="healthy"]').is_visible()
    assert page.get_by_test_id("route-" + CURRENT).get_attribute("data-weight") == "100"
    # Bar widths are set by app.js (the CSP refuses inline style="" attributes).
    bar = page.get_by_test_id("route-" + CURRENT).locator("[data-gn-width]")
    assert bar.evaluate("element => element.style.width") == "100%"
    shoot(page, "registry-dashboard")

    page.get_by_test_id("registry-nav-aliases").click()
    page.get_by_test_id("alias-link-standard-chat").click()
    page.get_by_test_id("alias-title").wait_for()
    assert primaries(digital) == {CURRENT}

    # 1. Canary: 10 % of conversations go to the new model.
    set_weights(page, {CURRENT: "90", NEW: "10"}, "評価結果が良好のため LLM-jp-4 8B へ10%のカナリア配信", 2)
    current = page.get_by_test_id("current-routes")
    assert current.get_by_test_id(f"route-{NEW}").get_attribute("data-weight") == "10"
    assert "10%" in current.get_by_test_id(f"route-{NEW}").get_by_test_id("route-percent").inner_text()
    # ... also in HTML swapped in by htmx.
    bar = current.get_by_test_id(f"route-{NEW}").locator("[data-gn-width]")
    assert bar.evaluate("element => element.style.width") == "10%"
    assert primaries(digital) == {CURRENT, NEW}  # the router saw it, no restart
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, "registry-canary")

    # 2. Promote to full: 0 / 100.
    set_weights(page, {CURRENT: "0", NEW: "100"}, "カナリア期間中のエラー率・評価に問題なし。全量切替", 3)
    assert primaries(digital) == {NEW}

    # 3. One-step rollback (confirmed in a dialog).
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("rollback-reason").fill("応答遅延の増加を確認したため切り戻し")
    page.get_by_test_id("rollback").click()
    page.locator('[data-testid="alias-panel"][data-revision="4"]').wait_for()
    current = page.get_by_test_id("current-routes")
    assert current.get_by_test_id(f"route-{CURRENT}").get_attribute("data-weight") == "90"
    assert primaries(digital) == {CURRENT, NEW}

    # 4. History: who, when, why and which routes, newest first.
    history = page.get_by_test_id("history")
    history.scroll_into_view_if_needed()
    assert history.get_by_test_id("revision-4").get_by_test_id("revision-rollback-of").is_visible()
    assert "高橋 誠" in history.get_by_test_id("revision-3").inner_text()
    assert f"{NEW} 100" in history.get_by_test_id("revision-3").get_by_test_id("revision-routes").inner_text()
    assert "応答遅延" in history.get_by_test_id("revision-4").inner_text()
    rows = history.locator("tbody tr")
    assert rows.count() == 4
    audit = page.get_by_test_id("audit-trail")
    assert audit.locator('[data-action="registry.alias.rollback"]').count() == 1
    history.evaluate("el => el.scrollIntoView({block: 'start'})")
    shoot(page, "registry-history")

    # Deployments screen: "check now" runs the provider's health() via htmx.
    page.get_by_test_id("registry-nav-deployments").click()
    health = page.get_by_test_id(f"health-{NEW}")
    checked = health.get_by_test_id("health-checked-at").get_attribute("datetime")
    page.get_by_test_id(f"check-now-{NEW}").click()
    page.locator(
        f'[data-testid="health-{NEW}"] [data-testid="health-checked-at"]:not([datetime="{checked}"])'
    ).wait_for()
    assert page.get_by_test_id(f"health-{NEW}").locator('[data-state="healthy"]').is_visible()
    page.mouse.move(0, 0)
    shoot(page, "registry-deployments")

    alias = Alias.objects.get(name="standard-chat")
    assert alias.revisions.count() == 4
    assert {d.health for d in (r.deployment for r in alias.current_revision.routes.all())} == {  # type: ignore[union-attr]
        HealthState.HEALTHY
    }
