"""Browser flow: SSO login via the dev IdP, Japanese home, English switch, logout, cross-ministry 404."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.management import call_command

from apps.console.models import Announcement
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope
from tests.support.idp import DevIdP

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(os.environ.get("GENNAI_SCREENSHOTS", ".gennai/test/screenshots"))


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/")
    page.get_by_test_id("login").click()
    page.get_by_test_id(f"login-{username}").click()
    page.wait_for_url(f"{base}/")


@pytest.fixture
def site(dev_idp: DevIdP, live_server: Any) -> str:
    call_command("seed_demo", verbosity=0)
    dev_idp.register_app(live_server.url)
    return str(live_server.url)


def test_staff_logs_in_sees_japanese_home_switches_to_english_and_logs_out(page: Any, site: str) -> None:
    sign_in(page, site, "tanaka")
    assert page.locator("html").get_attribute("lang") == "ja"
    assert page.get_by_test_id("ministry-name").inner_text().strip() == "デジタル庁"
    assert "田中 花子" in page.get_by_test_id("user-name").inner_text()
    assert "職員" in page.get_by_test_id("role").inner_text()
    assert "お知らせ" in page.content()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "home-ja.png"), full_page=True)

    page.get_by_test_id("lang-switch").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_test_id("ministry-name").inner_text().strip() == "Digital Agency"
    assert "Staff" in page.get_by_test_id("role").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "home-en.png"), full_page=True)

    page.get_by_test_id("logout").click()
    page.wait_for_url(f"{site}/")
    assert page.get_by_test_id("login").is_visible()
    assert page.get_by_test_id("user-name").count() == 0


def test_other_ministry_user_gets_404_for_digital_agency_url(page: Any, site: str) -> None:
    digital = Ministry.objects.get(code="digital")
    with ministry_scope(ministry_id=digital.pk):
        url = Announcement.objects.filter(ministry=digital).first().get_absolute_url()  # type: ignore[union-attr]
    sign_in(page, site, "tanaka")
    assert page.goto(f"{site}{url}").status == 200
    page.get_by_test_id("logout").click()
    page.wait_for_url(f"{site}/")

    sign_in(page, site, "suzuki")
    assert page.get_by_test_id("ministry-name").inner_text().strip() == "総務省"
    response = page.goto(f"{site}{url}")
    assert response.status == 404
    assert page.get_by_test_id("error-404").is_visible()


def test_admin_of_one_ministry_is_only_staff_in_the_other(page: Any, site: str) -> None:
    """yamada is in /ministries/digital/admins and /ministries/soumu: admin only in デジタル庁."""
    sign_in(page, site, "yamada")
    assert page.get_by_test_id("ministry-name").inner_text().strip() == "デジタル庁"
    assert page.goto(f"{site}/gateway/keys/").status == 200

    page.goto(f"{site}/")
    page.get_by_test_id("ministry-select").select_option("soumu")
    page.get_by_test_id("ministry-switch").click()
    page.wait_for_load_state()
    assert page.get_by_test_id("ministry-name").inner_text().strip() == "総務省"
    assert page.goto(f"{site}/gateway/keys/").status == 403
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-in-other-ministry-keys-403.png"), full_page=True)


@pytest.mark.parametrize("next_url", ["//evil.example", "https://evil.example/"])
def test_evil_next_lands_on_our_home_page(page: Any, site: str, next_url: str) -> None:
    page.goto(f"{site}/accounts/login/?{urlencode({'next': next_url})}")
    page.get_by_test_id("login-tanaka").click()
    page.wait_for_load_state()
    assert page.url == f"{site}/"
    assert "田中 花子" in page.get_by_test_id("user-name").inner_text()
