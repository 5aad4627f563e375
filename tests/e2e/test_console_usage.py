"""Browser: a ministry admin opens the usage dashboard; the Chart.js chart renders with the
ministry's data (and only its data), regrouping through htmx redraws it, all under the CSP."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from apps.console.tests.insight_support import add_usage, make_people

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(os.environ.get("GENNAI_SCREENSHOTS", ".gennai/test/screenshots"))


def _sign_in(page: Any, base: str, user: Any) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": base}])


def test_usage_chart_renders_with_data(page: Any, live_server: Any, ministries: Any) -> None:
    people = make_people(ministries)
    add_usage(people.a, model="model-of-a", prompt=300, completion=100, n=2)
    add_usage(people.a, model="other-model-of-a", prompt=50, completion=50, n=1)
    add_usage(people.b, model="model-of-b", prompt=9000, completion=9000, n=5)
    base = live_server.url
    _sign_in(page, base, people.admin_a)

    page.goto(f"{base}/console/usage/")
    canvas = page.get_by_test_id("usage-chart")
    canvas.wait_for()
    page.wait_for_function("() => document.getElementById('usage-chart').dataset.chartDrawn === '1'")
    chart = page.evaluate(
        """() => {
            const chart = Chart.getChart(document.getElementById('usage-chart'));
            const sums = chart.data.datasets.map(d => d.data.reduce((a, b) => a + b, 0));
            return {type: chart.config.type, sums: sums, width: chart.width, height: chart.height};
        }"""
    )
    assert chart["type"] == "bar" and chart["sums"] == [2 * 400 + 100], chart  # A's tokens, not B's
    assert chart["width"] > 200 and chart["height"] > 100, "the chart has a size: it was laid out"
    # Something was painted: the canvas is not blank.
    painted = page.evaluate(
        """() => {
            const c = document.getElementById('usage-chart');
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) n++; }
            return n;
        }"""
    )
    assert painted > 500
    assert page.get_by_test_id("usage-tokens").inner_text() == "900"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "console-usage.png"), full_page=True)

    # Regroup by model: htmx swaps the results and the chart is redrawn with one series per model.
    page.get_by_test_id("usage-group").select_option("model")
    page.get_by_test_id("usage-filter").get_by_role("button").click()
    page.wait_for_function("() => document.getElementById('usage-chart').dataset.chartDrawn === '2'")
    labels = page.evaluate(
        "() => Chart.getChart(document.getElementById('usage-chart')).data.datasets.map(d => d.label)"
    )
    assert labels == ["model-of-a", "other-model-of-a"]
    assert "group_by=model" in page.url  # hx-push-url: the view can be bookmarked
    embedded = json.loads(page.get_by_test_id("usage-chart").get_attribute("data-chart") or "{}")
    assert "model-of-b" not in json.dumps(embedded)


def test_audit_browser_filters_in_place(page: Any, live_server: Any, ministries: Any) -> None:
    from apps.audit.services import audit_record

    people = make_people(ministries)
    audit_record(actor=people.admin_a, action="e2e.visible", target_type="thing", ministry_id=people.a.pk)
    audit_record(actor=people.admin_b, action="e2e.of_b", target_type="thing", ministry_id=people.b.pk)
    base = live_server.url
    _sign_in(page, base, people.auditor_a)
    page.goto(f"{base}/console/audit/")
    cells = page.get_by_test_id("audit-action-cell")
    cells.first.wait_for()
    shown = set(cells.all_inner_texts())
    assert "e2e.visible" in shown and "accounts.login" in shown and "e2e.of_b" not in shown
    page.get_by_test_id("audit-action").fill("e2e.")
    page.get_by_test_id("audit-filter").get_by_role("button").click()
    page.wait_for_function("() => location.search.includes('action=e2e.')")  # hx-push-url
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=audit-action-cell]')]"
        ".every(c => c.textContent.startsWith('e2e.'))"
    )
    assert page.get_by_test_id("audit-action-cell").all_inner_texts() == ["e2e.visible"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "console-audit.png"), full_page=True)
    export = page.get_by_test_id("audit-export").get_attribute("href") or ""
    assert export.startswith("/console/audit/export.jsonl?") and "action=e2e." in export
