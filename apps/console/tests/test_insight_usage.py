"""The usage dashboard: the chart and table show the caller's ministry only; CSV export."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent

from .insight_support import People, add_usage, chart_json, client_for, make_people

URL = reverse("console:usage")
CSV = reverse("console:usage_csv")


@pytest.fixture
def people(ministries: tuple[Any, Any]) -> People:
    p = make_people(ministries)
    add_usage(p.a, model="model-of-a", prompt=100, completion=50, user=p.staff_a, n=3)
    add_usage(p.a, model="second-model-of-a", prompt=10, completion=5, n=1)
    add_usage(p.b, model="model-of-b", prompt=7000, completion=7000, user=p.admin_b, n=2)
    return p


def test_admin_sees_a_chart_with_the_ministrys_data(people: People) -> None:
    response = client_for(people.admin_a).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    data = chart_json(html)
    assert len(data["datasets"]) == 1
    assert sum(data["datasets"][0]["data"]) == 3 * 150 + 15  # A's tokens only, never B's 28,000
    assert "gennai/js/chart.umd.min.js" in html and "gennai/js/usage-chart.js" in html
    assert 'data-testid="usage-requests">4<' in html


def test_group_by_model_draws_a_series_per_model_and_lists_them(people: People) -> None:
    html = client_for(people.auditor_a).get(URL, {"group_by": "model"}).content.decode()
    labels = {d["label"]: sum(d["data"]) for d in chart_json(html)["datasets"]}
    assert labels == {"model-of-a": 450, "second-model-of-a": 15}
    assert "model-of-b" not in html


def test_b_admin_sees_nothing_of_a(people: People) -> None:
    html = client_for(people.admin_b).get(URL, {"group_by": "model"}).content.decode()
    assert "model-of-a" not in html
    assert {d["label"] for d in chart_json(html)["datasets"]} == {"model-of-b"}


def test_htmx_filter_returns_the_results_region(people: People) -> None:
    html = (
        client_for(people.admin_a).get(URL, {"group_by": "feature"}, HTTP_HX_REQUEST="true").content.decode()
    )
    assert html.startswith('<div id="usage-results"') and "<html" not in html
    assert chart_json(html)["datasets"][0]["label"] == "chat"


def test_bad_period_is_explained_and_the_default_month_shown(people: People) -> None:
    html = client_for(people.admin_a).get(URL, {"start": "2026-05-10", "end": "2026-05-01"}).content.decode()
    assert 'data-testid="usage-errors"' in html


@pytest.mark.parametrize("who", ["staff_a", "procurement_a", "platform_auditor"])
def test_people_without_a_ministry_console_role_get_403(people: People, who: str) -> None:
    client = client_for(getattr(people, who))
    assert client.get(URL).status_code == 403
    assert client.get(CSV).status_code == 403


def test_csv_contains_only_the_callers_ministry_and_is_audited(people: People) -> None:
    response = client_for(people.admin_a).get(CSV, {"group_by": "model"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode("utf-8-sig")  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["day", "group", "key", "label"]
    assert {row[3] for row in rows[1:]} == {"model-of-a", "second-model-of-a"}
    assert sum(int(row[4]) for row in rows[1:]) == 4
    event = AuditEvent.objects.get(action="usage.export")
    assert (event.actor_id, event.ministry_id, event.data["rows"]) == (people.admin_a.pk, people.a.pk, 2)
    assert client_for(people.admin_a).get(CSV, {"group_by": "ministry"}).status_code == 400
