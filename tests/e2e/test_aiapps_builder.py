"""Browser flow for the use-case builder: field rows added and removed over htmx (no inline script,
the page fixture fails on any CSP violation), and the saved app has exactly the rows left."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from apps.aiapps.models import MinistryApp
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope
from tests.support.asgi import AsgiServer
from tests.support.idp import DevIdP

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site(dev_idp: DevIdP, transactional_db: None) -> Iterator[str]:
    call_command("seed_demo", verbosity=0)
    server = AsgiServer().start()
    try:
        dev_idp.register_app(server.url)
        yield server.url
    finally:
        server.stop()


def test_rows_are_added_and_removed_and_the_app_keeps_the_rows_left(page: Any, site: str) -> None:
    from playwright.sync_api import expect

    base = site
    page.goto(f"{base}/")
    page.get_by_test_id("login").click()
    page.get_by_test_id("login-tanaka").click()
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/apps/builder/new")
    rows = page.get_by_test_id("field-row")
    assert rows.count() == 3
    page.get_by_test_id("field-add").click()
    expect(rows).to_have_count(4)
    # Remove the second row: the others (and their 必須 checkboxes) stay as they were.
    rows.nth(1).get_by_test_id("field-remove").click()
    expect(rows).to_have_count(3)
    names = ["topic", "tone", "note"]
    for i, name in enumerate(names):
        rows.nth(i).locator('input[name="field_name"]').fill(name)
        rows.nth(i).locator('input[name="field_label"]').fill(name.upper())
    rows.nth(2).locator('input[name="field_required"]').uncheck()
    page.locator('input[name="name_ja"]').fill("三項目のアプリ")
    page.get_by_test_id("builder-prompt").fill("{{topic}} / {{tone}} / {{note}}")
    page.get_by_test_id("builder-save").click()
    page.wait_for_url(f"{base}/apps/builder/*/")
    digital = Ministry.objects.get(code="digital")
    with ministry_scope(ministry_id=digital.pk):
        app = MinistryApp.objects.get(name_ja="三項目のアプリ")
    assert [f["name"] for f in app.fields] == names
    assert [f["required"] for f in app.fields] == [True, True, False]
