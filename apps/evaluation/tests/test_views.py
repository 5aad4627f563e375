"""Evaluation screens: import errors shown per line (ja/en), run creation queues the job, exports, roles."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from apps.evaluation.models import Run, Suite, Task
from apps.evaluation.services import suite_create, suite_import
from apps.registry.snapshot import reset_for_tests
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user
from tests.support.registry import Upstream, register_alias


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_import_errors_listed_per_line_and_nothing_saved(officer: Any) -> None:
    client = _client(officer.user)
    response = client.post(
        reverse("evaluation:suite_list"), {"name": "行政QA", "description": "", "level": "1"}
    )
    suite = Suite.objects.get(name="行政QA")
    assert response.status_code == 302 and response["Location"].endswith(f"/suites/{suite.pk}/")
    bad = SimpleUploadedFile("tasks.jsonl", b'{"input": "a", "reference": "b"}\n{"reference": "x"}\n')
    page = client.post(reverse("evaluation:suite_import", args=[suite.pk]), {"file": bad})
    assert page.status_code == 400
    assert "2行目: 「input」（入力）は必須です。" in page.content.decode()
    assert Task.objects.filter(suite=suite).count() == 0
    bad.seek(0)
    english = client.post(
        reverse("evaluation:suite_import", args=[suite.pk]), {"file": bad}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert "Line 2: &quot;input&quot; is required." in english.content.decode()
    assert english.status_code == 400
    good = SimpleUploadedFile("tasks.csv", "input,reference\n首都は,東京\n".encode())
    assert client.post(reverse("evaluation:suite_import", args=[suite.pk]), {"file": good}).status_code == 302
    assert Task.objects.filter(suite=suite).count() == 1


def test_run_form_queues_the_job_after_commit(officer: Any, django_capture_on_commit_callbacks: Any) -> None:
    with FakeUpstream(tokens=2) as up:
        deployment = register_alias(upstreams=[Upstream(up.url, name="cand")]).deployments[0]
        reset_for_tests()
        suite = suite_create(actor=officer.user, name="s")
        suite_import(actor=officer.user, suite=suite, filename="s.csv", data=b"input,reference\na,b\n")
        client = _client(officer.user)
        with (
            mock.patch("apps.evaluation.tasks.run_evaluation.delay") as delay,
            django_capture_on_commit_callbacks(execute=True),
        ):
            response = client.post(
                reverse("evaluation:run_create", args=[suite.pk]),
                {"deployments": [deployment.pk], "max_tokens": "16"},
            )
        run = Run.objects.get()
        assert response.status_code == 302 and response["Location"].endswith(f"/runs/{run.pk}/")
        delay.assert_called_once_with(run_id=run.pk)
        # A judge-less suite with a judge task is refused with the reason on the form.
        suite_import(
            actor=officer.user, suite=suite, filename="j.jsonl", data=b'{"input": "q", "metric": "judge"}\n'
        )
        refused = client.post(
            reverse("evaluation:run_create", args=[suite.pk]),
            {"deployments": [deployment.pk], "max_tokens": "16"},
        )
        assert refused.status_code == 400 and "ジャッジ" in refused.content.decode()
    report = client.get(reverse("evaluation:run_export", args=[run.pk, "json"]))
    data = json.loads(report.content)
    assert data["progress"] == {"done": 0, "total": 1} and data["candidates"][0]["deployment"] == "cand"
    assert client.get(reverse("evaluation:run_export", args=[run.pk, "xml"])).status_code == 404


def test_auditor_reads_but_cannot_write_and_staff_sees_nothing(
    officer: Any, staff_a: Any, ministries: Any
) -> None:
    suite = suite_create(actor=officer.user, name="s")
    auditor = _client(make_user("auditor", ministries[1], ["auditor"]))
    assert auditor.get(reverse("evaluation:suite_detail", args=[suite.pk])).status_code == 200
    assert auditor.post(reverse("evaluation:suite_list"), {"name": "x", "level": "1"}).status_code == 403
    staff = _client(staff_a.user)
    assert staff.get(reverse("evaluation:suite_detail", args=[suite.pk])).status_code == 403
    assert _client(officer.user).get(reverse("evaluation:suite_detail", args=[999_999])).status_code == 404


@pytest.mark.parametrize("name", ["=cmd|' /C calc'!A0", "+1", "@SUM(A1)"])
def test_csv_export_neutralises_formulas(name: str) -> None:
    from apps.evaluation.selectors import _csv_safe

    assert _csv_safe(name).startswith("'")
    assert _csv_safe("東京") == "東京"
