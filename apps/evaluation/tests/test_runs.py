"""A suite runs end-to-end against two local deployments and produces the report."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse

from apps.evaluation.models import ItemStatus, Run, RunItem, RunStatus
from apps.evaluation.runner import execute_run
from apps.evaluation.selectors import run_report, run_report_csv, run_report_json
from apps.evaluation.services import run_attach_bench, run_create, suite_create, suite_import
from apps.quotas.models import UsageRecord
from apps.registry.models import Deployment
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.local_model import LocalModel
from tests.support.registry import Upstream, register_alias

SUITE = (
    '{"input": "日本の首都はどこですか。一語で。", "reference": "東京", "metric": "contains"}\n'
    '{"input": "東京と答えて", "reference": "東京0 東京1 東京2 東京3", "metric": "exact"}\n'
    '{"input": "京都について一文で", "reference": "京都は古都です", "metric": "char_f1"}\n'
    '{"input": "挨拶して", "rubric": "丁寧さ", "metric": "judge"}\n'
).encode()


def _deployments(local_model: LocalModel, fake: FakeUpstream, judge: FakeUpstream) -> dict[str, Deployment]:
    local = register_alias(
        upstreams=[
            Upstream(local_model.url, name="local-smol", served_model_name=local_model.served_model_name)
        ],
        name="local-chat",
    )
    vendor = register_alias(upstreams=[Upstream(fake.url, name="fake-vendor")], name="vendor-chat")
    judge_dep = register_alias(upstreams=[Upstream(judge.url, name="judge")], name="judge-chat")
    reset_for_tests()
    return {
        "local": local.deployments[0],
        "fake": vendor.deployments[0],
        "judge": judge_dep.deployments[0],
        "vendor_alias": vendor.alias,  # type: ignore[dict-item]
    }


@pytest.mark.django_db(transaction=False)
def test_suite_runs_end_to_end_and_reports(local_model: LocalModel, fake: FakeUpstream, officer: Any) -> None:
    # The judge answers "x0 x1 x2 x3": several numbers, no single score → a judge failure.
    with FakeUpstream(tokens=4, word="x") as judge:
        deps = _deployments(local_model, fake, judge)
        suite = suite_create(actor=officer.user, name="基本スイート")
        assert suite_import(actor=officer.user, suite=suite, filename="s.jsonl", data=SUITE) == 4
        run = run_create(
            actor=officer.user,
            suite=suite,
            deployments=[deps["local"]],
            aliases=[deps["vendor_alias"]],  # type: ignore[list-item]
            judge=deps["judge"],
            max_tokens=12,
        )
        assert run.total == 8 and run.status == RunStatus.QUEUED
        # A worker that dies after one item: the next delivery resumes without redoing it.
        assert execute_run(run.pk, limit=1) is False
        run.refresh_from_db()
        assert run.done == 1 and run.status == RunStatus.RUNNING
        first = RunItem.objects.get(run=run, status=ItemStatus.DONE)
        fake_requests_before = fake.requests
        assert execute_run(run.pk) is True
        run.refresh_from_db()
        assert run.status == RunStatus.COMPLETE and run.done == 8
        assert RunItem.objects.get(pk=first.pk).finished_at == first.finished_at  # not redone
        assert fake.requests - fake_requests_before == (
            4 if first.candidate.deployment_id != deps["fake"].pk else 3
        )
        assert judge.requests == 2  # one judge task × two candidates

    items = {(i.candidate.deployment.name, i.task.position): i for i in RunItem.objects.filter(run=run)}
    fake_exact = items[("fake-vendor", 2)]
    assert fake_exact.output == "東京0 東京1 東京2 東京3 " and fake_exact.score == 1.0
    assert items[("fake-vendor", 1)].score == 1.0  # contains 東京
    assert items[("fake-vendor", 4)].judge_error and items[("fake-vendor", 4)].judge_score is None
    assert items[("fake-vendor", 4)].status == ItemStatus.DONE  # judge failure is not fatal
    local_answer = items[("local-smol", 1)]
    assert local_answer.output and local_answer.ttft_ms is not None and local_answer.completion_tokens > 0

    report = {r.deployment: r for r in run_report(run)}
    assert set(report) == {"local-smol", "fake-vendor"}
    fake_report = report["fake-vendor"]
    assert fake_report.items == 4 and fake_report.errors == 0 and fake_report.judge_errors == 1
    assert fake_report.quality["exact"] == 1.0 and fake_report.quality["judge"] == 0.0
    assert fake_report.licence == "Apache-2.0" and fake_report.latency_p95_ms is not None
    assert fake_report.tokens == 4 * (7 + 4)

    # Usage went to the officer's ministry as feature "eval" (candidates and judge).
    with ministry_scope(ministry_id=officer.ministry.pk):
        assert UsageRecord.objects.filter(feature="eval").count() == 10

    bench = {
        "levels": [
            {"concurrency": 1, "aggregate_tokens_per_s": 40.0},
            {"concurrency": 8, "aggregate_tokens_per_s": 210.5},
        ]
    }
    candidate = run.candidates.get(deployment=deps["fake"])
    run_attach_bench(actor=officer.user, run=run, candidate=candidate, data=json.dumps(bench).encode())
    run.refresh_from_db()
    data = run_report_json(run)
    fake_row = next(c for c in data["candidates"] if c["deployment"] == "fake-vendor")
    assert fake_row["bench_tokens_per_s"] == 210.5 and fake_row["bench_concurrency"] == 8
    csv_text = run_report_csv(run)
    assert csv_text.splitlines()[0].startswith("label,deployment,model")
    assert len(csv_text.splitlines()) == 3

    client = Client()
    client.force_login(officer.user)
    page = client.get(reverse("evaluation:run_detail", args=[run.pk]))
    assert page.status_code == 200 and "fake-vendor" in page.content.decode()
    exported = client.get(reverse("evaluation:run_export", args=[run.pk, "csv"]))
    assert exported.status_code == 200 and exported["Content-Type"].startswith("text/csv")


def test_failed_candidate_is_recorded_not_fatal(officer: Any) -> None:
    with FakeUpstream(mode="status", status=500) as broken, FakeUpstream(tokens=2, word="東京") as ok:
        good = register_alias(upstreams=[Upstream(ok.url, name="ok-dep")]).deployments[0]
        bad = register_alias(upstreams=[Upstream(broken.url, name="bad-dep")]).deployments[0]
        reset_for_tests()
        suite = suite_create(actor=officer.user, name="失敗")
        suite_import(
            actor=officer.user, suite=suite, filename="s.csv", data="input,reference\n首都,東京\n".encode()
        )
        run = run_create(actor=officer.user, suite=suite, deployments=[good, bad])
        assert execute_run(run.pk) is True
    bad_item = RunItem.objects.get(run=run, candidate__deployment=bad)
    assert bad_item.status == ItemStatus.ERROR and "500" in bad_item.error
    good_item = RunItem.objects.get(run=run, candidate__deployment=good)
    # char_f1("東京0 東京1 ", "東京"): overlap 2 of 6 predicted chars, all 2 reference chars → F1 = 0.5
    assert good_item.status == ItemStatus.DONE and good_item.score == pytest.approx(0.5)
    report = {r.deployment: r for r in run_report(run)}
    assert report["bad-dep"].errors == 1 and report["bad-dep"].quality_overall == 0.0


def test_classification_gate_and_roles(officer: Any, staff_a: Any, fake: FakeUpstream) -> None:
    low = register_alias(upstreams=[Upstream(fake.url, clearance=1)]).deployments[0]
    reset_for_tests()
    suite = suite_create(actor=officer.user, name="機密性2", level=2)
    suite_import(actor=officer.user, suite=suite, filename="s.csv", data=b"input,reference\na,b\n")
    with pytest.raises(ValidationError):
        run_create(actor=officer.user, suite=suite, deployments=[low])
    with pytest.raises(PermissionDenied):
        run_create(actor=staff_a.user, suite=suite, deployments=[low])
    client = Client()
    client.force_login(staff_a.user)
    assert client.get(reverse("evaluation:suite_list")).status_code == 403
    assert Run.objects.count() == 0


def test_celery_task_answers_a_chunk_then_requeues_the_rest(officer: Any) -> None:
    from unittest import mock

    from apps.evaluation.tasks import ITEMS_PER_TASK, run_evaluation

    with FakeUpstream(tokens=2, word="東京") as ok:
        deployment = register_alias(upstreams=[Upstream(ok.url)]).deployments[0]
        reset_for_tests()
        suite = suite_create(actor=officer.user, name="チャンク")
        rows = "".join(f"質問{i},東京\n" for i in range(ITEMS_PER_TASK + 2))
        suite_import(
            actor=officer.user, suite=suite, filename="s.csv", data=f"input,reference\n{rows}".encode()
        )
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment])
        with mock.patch.object(run_evaluation, "delay") as delay:
            run_evaluation.apply(kwargs={"run_id": run.pk})
            run.refresh_from_db()
            assert run.done == ITEMS_PER_TASK and run.status == RunStatus.RUNNING
            delay.assert_called_once_with(run_id=run.pk)
            delay.reset_mock()
            run_evaluation.apply(kwargs={"run_id": run.pk})
            run.refresh_from_db()
            assert run.done == ITEMS_PER_TASK + 2 and run.status == RunStatus.COMPLETE
            delay.assert_not_called()
        assert ok.requests == ITEMS_PER_TASK + 2


def test_unexpected_call_failure_is_recorded_by_type_only(
    officer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.evaluation import calls

    def broken(plan: Any, request: Any) -> Any:
        raise RuntimeError("secret text that must not be stored")

    monkeypatch.setattr(calls, "stream_chat", broken)
    with FakeUpstream(tokens=2) as ok:
        deployment = register_alias(upstreams=[Upstream(ok.url)]).deployments[0]
        reset_for_tests()
        suite = suite_create(actor=officer.user, name="例外")
        suite_import(actor=officer.user, suite=suite, filename="s.csv", data=b"input,reference\na,b\n")
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment])
        assert execute_run(run.pk) is True
    item = RunItem.objects.get(run=run)
    assert item.status == ItemStatus.ERROR and item.error == "RuntimeError"


def test_run_calls_are_admitted_against_the_officers_budget(officer: Any, quota_redis: Any) -> None:
    """Security: an officer whose month budget is used up gets no model calls through a run either."""
    from apps.quotas.tests.admission_support import admin_of, set_limit

    ministry = officer.ministry
    set_limit(
        ministry, admin_of(ministry, "eval-budget-admin"), level="user", user=officer.user, monthly_tokens=1
    )
    with FakeUpstream(tokens=2) as ok:
        deployment = register_alias(upstreams=[Upstream(ok.url)]).deployments[0]
        reset_for_tests()
        suite = suite_create(actor=officer.user, name="予算")
        suite_import(actor=officer.user, suite=suite, filename="s.csv", data=b"input,reference\na,b\nc,d\n")
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment])
        assert execute_run(run.pk) is True  # refused items are recorded; the run still completes
        assert ok.requests == 0
    errors = list(RunItem.objects.filter(run=run).values_list("status", "error"))
    assert all(status == ItemStatus.ERROR and error for status, error in errors) and len(errors) == 2


def test_run_settles_to_what_was_produced(officer: Any, quota_redis: Any) -> None:
    from apps.quotas import admission

    settled: list[int] = []
    real_settle = admission.settle

    def spy(**kwargs: Any) -> Any:
        settled.append(kwargs["completion_tokens"])
        return real_settle(**kwargs)

    with FakeUpstream(tokens=3, word="東京") as ok, pytest.MonkeyPatch.context() as patch:
        patch.setattr(admission, "settle", spy)
        deployment = register_alias(upstreams=[Upstream(ok.url)]).deployments[0]
        reset_for_tests()
        suite = suite_create(actor=officer.user, name="精算")
        suite_import(
            actor=officer.user, suite=suite, filename="s.csv", data="input,reference\n首都,東京\n".encode()
        )
        run = run_create(actor=officer.user, suite=suite, deployments=[deployment])
        assert execute_run(run.pk) is True
    assert settled == [3]
