"""Suites owned by a ministry: created, imported and run by its procurement officers, its runs and
reports visible only inside it (scoped manager + RLS); platform suites stay visible to every officer."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.evaluation.models import (
    ItemStatus,
    MinistryRun,
    MinistryRunCandidate,
    MinistryRunItem,
    MinistrySuite,
    MinistryTask,
    Promotion,
    Run,
    RunStatus,
)
from apps.evaluation.runner import execute_run
from apps.evaluation.selectors import promotions_of_run, run_report, run_report_csv, run_report_json
from apps.evaluation.services import run_attach_bench, run_create, suite_create, suite_import
from apps.quotas.models import UsageRecord
from apps.registry.models import Deployment
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import GUC_NAME, ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user
from tests.support.registry import Upstream, register_alias

TASKS = (
    '{"input": "日本の首都は", "reference": "東京", "metric": "contains"}\n'
    '{"input": "東京と答えて", "reference": "東京0 東京1 東京2 東京3", "metric": "exact"}\n'
).encode()
BENCH_LEVELS = [
    {"concurrency": 1, "aggregate_tokens_per_s": 40.0, "latency_p50_s": 1.2},
    {"concurrency": 8, "aggregate_tokens_per_s": 310.5, "latency_p50_s": 2.0},
]
BENCH = {
    "base_url": "http://10.0.0.5:8000/v1",
    "model": "vendor-x",
    "max_tokens": 128,
    "requests_per_level": 16,
    "levels": BENCH_LEVELS,
    "results": [{"concurrency": 1, "ok": True, "text": "x" * 100}],
}


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _suite_of_a(officer: Any) -> MinistrySuite:
    with ministry_scope(ministry_id=officer.ministry.pk):
        suite: MinistrySuite = suite_create(
            actor=officer.user, name="デジタル庁の内部QA", owner="ministry", level=1
        )
        suite_import(actor=officer.user, suite=suite, filename="t.jsonl", data=TASKS)
    return suite


def _raw_count(table: str, pk: int, ministry_id: int | None) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config(%s, %s, true)", [GUC_NAME, "" if ministry_id is None else str(ministry_id)]
        )
        cursor.execute(f'SELECT count(*) FROM "{table}" WHERE id = %s', [pk])
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=False)
def test_ministry_suite_runs_end_to_end_as_the_ministrys_data(
    officer: Any, officer2: Any, fake: FakeUpstream
) -> None:
    a, b = officer.ministry, officer2.ministry
    deployment = register_alias(upstreams=[Upstream(fake.url, name="fake-vendor")]).deployments[0]
    reset_for_tests()
    suite = _suite_of_a(officer)
    assert isinstance(suite, MinistrySuite) and suite.ministry_id == a.pk
    with ministry_scope(ministry_id=a.pk):
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment], max_tokens=8)
    assert isinstance(run, MinistryRun) and run.ministry_id == a.pk and run.total == 2
    assert execute_run(run.pk, ministry_id=a.pk) is True
    with ministry_scope(ministry_id=a.pk):
        run.refresh_from_db()
        assert run.status == RunStatus.COMPLETE and run.done == 2
        items = list(MinistryRunItem.objects.filter(run=run).order_by("task__position"))
        assert [i.status for i in items] == [ItemStatus.DONE, ItemStatus.DONE]
        assert items[1].score == 1.0 and items[0].score == 1.0
        report = run_report(run)
        assert [r.deployment for r in report] == ["fake-vendor"] and report[0].quality_overall == 1.0
        assert run_report_json(run)["suite"]["owner"] == "ministry"
        # The ministry pays for its own suite's calls.
        assert UsageRecord.objects.filter(feature="eval", deployment_id=deployment.pk).count() == 2
    # Nothing of it is a platform row.
    assert not Run.objects.exists()
    # The database alone hides every table's row from B and from no scope at all.
    with ministry_scope(ministry_id=a.pk):
        task = MinistryTask.objects.filter(suite=suite).first()
        candidate = MinistryRunCandidate.objects.get(run=run)
    assert task is not None
    rows = [
        ("evaluation_ministrysuite", suite.pk),
        ("evaluation_ministrytask", task.pk),
        ("evaluation_ministryrun", run.pk),
        ("evaluation_ministryruncandidate", candidate.pk),
        ("evaluation_ministryrunitem", items[0].pk),
    ]
    for table, pk in rows:
        assert _raw_count(table, pk, a.pk) == 1, table
        assert _raw_count(table, pk, b.pk) == 0, table
        assert _raw_count(table, pk, None) == 0, table


@pytest.mark.django_db(transaction=False)
def test_another_ministry_gets_404_for_the_suite_its_runs_and_report(
    officer: Any, officer2: Any, fake: FakeUpstream
) -> None:
    deployment = register_alias(upstreams=[Upstream(fake.url, name="fake-vendor")]).deployments[0]
    reset_for_tests()
    suite = _suite_of_a(officer)
    with ministry_scope(ministry_id=officer.ministry.pk):
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment], max_tokens=8)
    platform = suite_create(actor=officer.user, name="共通スイート")

    own = _client(officer.user)
    listing = own.get(reverse("evaluation:suite_list")).content.decode()
    assert "デジタル庁の内部QA" in listing and "共通スイート" in listing
    english = own.get(reverse("evaluation:suite_list"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Platform suites" in english and "procurement officers see, create, import and run them" in english
    assert own.get(reverse("evaluation:m_suite_detail", args=[suite.pk])).status_code == 200
    assert own.get(reverse("evaluation:m_run_detail", args=[run.pk])).status_code == 200
    csv_body = own.get(reverse("evaluation:m_run_export", args=[run.pk, "csv"])).content.decode()
    assert csv_body.startswith("label,") and "fake-vendor" in csv_body

    other = _client(officer2.user)  # a procurement officer of ministry B
    listing = other.get(reverse("evaluation:suite_list")).content.decode()
    assert "デジタル庁の内部QA" not in listing and "共通スイート" in listing
    assert other.get(reverse("evaluation:suite_detail", args=[platform.pk])).status_code == 200
    for name, args in [
        ("m_suite_detail", [suite.pk]),
        ("m_run_detail", [run.pk]),
        ("m_run_export", [run.pk, "csv"]),
        ("m_run_export", [run.pk, "json"]),
    ]:
        assert other.get(reverse(f"evaluation:{name}", args=args)).status_code == 404, name
    upload = SimpleUploadedFile("t.jsonl", TASKS)
    assert (
        other.post(reverse("evaluation:m_suite_import", args=[suite.pk]), {"file": upload}).status_code == 404
    )
    with mock.patch("apps.evaluation.tasks.run_evaluation.delay") as delay:
        response = other.post(
            reverse("evaluation:m_run_create", args=[suite.pk]), {"deployments": [deployment.pk]}
        )
    assert response.status_code == 404 and not delay.called
    bench = SimpleUploadedFile("b.json", json.dumps(BENCH).encode())
    assert other.post(reverse("evaluation:m_run_bench", args=[run.pk]), {"file": bench}).status_code == 404
    # A's own ids under the platform URLs are other rows (here: none).
    assert other.get(reverse("evaluation:run_detail", args=[run.pk])).status_code == 404


def test_creating_through_the_page_and_who_may(officer: Any, ministries: tuple[Any, Any]) -> None:
    a, _b = ministries
    client = _client(officer.user)
    response = client.post(
        reverse("evaluation:suite_list"), {"owner": "ministry", "name": "省内QA", "level": "1"}
    )
    with ministry_scope(ministry_id=a.pk):
        suite = MinistrySuite.objects.get(name="省内QA")
    assert response.status_code == 302 and response["Location"] == suite.get_absolute_url()
    good = SimpleUploadedFile("t.csv", "input,reference\n首都は,東京\n".encode())
    assert (
        client.post(reverse("evaluation:m_suite_import", args=[suite.pk]), {"file": good}).status_code == 302
    )
    with ministry_scope(ministry_id=a.pk):
        assert MinistryTask.objects.filter(suite=suite).count() == 1
    # The same name again in the same ministry is refused on the form.
    again = client.post(
        reverse("evaluation:suite_list"), {"owner": "ministry", "name": "省内QA", "level": "1"}
    )
    assert again.status_code == 400

    # Staff of the ministry (no procurement role) cannot create one.
    staff = make_user("plain-staff", a, ["staff"])
    with ministry_scope(ministry_id=a.pk), pytest.raises(PermissionDenied):
        suite_create(actor=staff, name="x", owner="ministry")
    # An auditor reads but cannot write.
    auditor = make_user("auditor-a", a, ["auditor"])
    with ministry_scope(ministry_id=a.pk), pytest.raises(PermissionDenied):
        suite_import(actor=auditor, suite=suite, filename="t.csv", data=b"input\nq\n")
    assert _client(auditor).get(reverse("evaluation:m_suite_detail", args=[suite.pk])).status_code == 200
    # Without a ministry scope no ministry suite is created.
    with pytest.raises(PermissionDenied):
        suite_create(actor=officer.user, name="y", owner="ministry")


def test_a_suite_of_another_ministry_cannot_be_changed_from_this_scope(officer: Any, officer2: Any) -> None:
    """Even holding B's row (loaded in B's scope), A's officer changes nothing from A's scope."""
    with ministry_scope(ministry_id=officer2.ministry.pk):
        suite_b = suite_create(actor=officer2.user, name="総務省QA", owner="ministry")
    with ministry_scope(ministry_id=officer.ministry.pk), pytest.raises(PermissionDenied):
        suite_import(actor=officer.user, suite=suite_b, filename="t.csv", data=b"input\nq\n")
    with ministry_scope(ministry_id=officer2.ministry.pk):
        assert MinistryTask.objects.filter(suite=suite_b).count() == 0


@pytest.mark.django_db(transaction=False)
def test_bench_attached_to_a_ministry_candidate_is_in_the_report_and_exports(
    officer: Any, fake: FakeUpstream
) -> None:
    deployment = register_alias(upstreams=[Upstream(fake.url, name="fake-vendor")]).deployments[0]
    reset_for_tests()
    suite = _suite_of_a(officer)
    with ministry_scope(ministry_id=officer.ministry.pk):
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment], max_tokens=8)
        candidate = MinistryRunCandidate.objects.get(run=run)
        with pytest.raises(ValidationError) as excinfo:
            run_attach_bench(actor=officer.user, run=run, candidate=candidate, data=b'{"levels": []}')
        assert "inference bench --json" in " ".join(excinfo.value.messages)
        kept = run_attach_bench(
            actor=officer.user, run=run, candidate=candidate, data=json.dumps(BENCH).encode()
        )
        # Only the summary is kept: no per-request results, no server address.
        assert "results" not in kept and "base_url" not in kept and kept["model"] == "vendor-x"
        run.refresh_from_db()
        (row,) = run_report_json(run)["candidates"]
        assert row["bench_tokens_per_s"] == 310.5 and row["bench_concurrency"] == 8
        assert row["registry_throughput_tokens_per_s"] is None
        assert "310.5" in run_report_csv(run)
    # The registry's measured throughput of the deployment is reported beside it.
    Deployment.objects.filter(pk=deployment.pk).update(throughput_tokens_per_s=123)
    with ministry_scope(ministry_id=officer.ministry.pk):
        (row,) = run_report_json(run)["candidates"]
    assert row["registry_throughput_tokens_per_s"] == 123
    # Through the page: the officer attaches a bench file to the candidate; the report shows it.
    client = _client(officer.user)
    one_level = {**BENCH, "levels": [BENCH_LEVELS[0]]}
    upload = SimpleUploadedFile("bench.json", json.dumps(one_level).encode())
    response = client.post(
        reverse("evaluation:m_run_bench", args=[run.pk]), {"candidate": candidate.pk, "file": upload}
    )
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    page = client.get(run.get_absolute_url()).content.decode()
    assert "40.0 (c=1)" in page


@pytest.mark.django_db(transaction=False)
def test_promotion_from_a_ministry_report_keeps_a_plain_id(officer: Any, fake: FakeUpstream) -> None:
    current = register_alias(upstreams=[Upstream(fake.url, name="current")], name="std-chat")
    candidate_dep = register_alias(upstreams=[Upstream(fake.url, name="newcomer")]).deployments[0]
    reset_for_tests()
    suite = _suite_of_a(officer)
    with ministry_scope(ministry_id=officer.ministry.pk):
        run = run_create(actor=officer.user, suite=suite, deployments=[candidate_dep], max_tokens=8)
        candidate = MinistryRunCandidate.objects.get(run=run)
    client = _client(officer.user)
    # The page's progress panel refreshes itself from the ministry run's own URL.
    partial = client.get(run.get_absolute_url(), HTTP_HX_REQUEST="true").content.decode()
    assert f'hx-get="/evaluation/m/runs/{run.pk}/"' in partial
    page = client.get(run.get_absolute_url()).content.decode()
    assert f'action="/evaluation/m/runs/{run.pk}/promote/"' in page
    response = client.post(
        reverse("evaluation:m_promotion_start", args=[run.pk]),
        {
            "alias": current.alias.pk,
            "candidate": candidate.pk,
            "percent": "10",
            "max_error_rate": "5",
            "max_p95_latency_ms": "10000",
            "window_minutes": "30",
            "min_requests": "20",
            "reason": "省内評価",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    promotion = Promotion.objects.get()
    assert promotion.run_id is None and promotion.ministry_run_id == run.pk
    assert promotion.deployment_id == candidate_dep.pk
    start = AuditEvent.objects.get(action="evaluation.promotion.start", target_id=str(promotion.pk))
    assert start.data["ministry_run"] == run.pk and start.data["run"] is None
    with ministry_scope(ministry_id=officer.ministry.pk):
        assert list(promotions_of_run(run)) == [promotion]
