"""Browser: the procurement officer reads a finished run's comparison report and downloads it as CSV."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from apps.evaluation.runner import execute_run
from apps.evaluation.services import run_create, suite_create, suite_import
from apps.registry.breaker import breaker
from apps.registry.models import Deployment
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.models import Membership
from tests.e2e.test_registry import shoot, sign_in
from tests.support.fake_upstream import FakeUpstream
from tests.support.idp import DevIdP
from tests.support.registry import Upstream, register_alias

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SUITE = (
    "input,reference,metric\n日本の首都は？,東京,contains\n東京と答えて,東京0 東京1 東京2,exact\n".encode()
)


@pytest.fixture
def site(dev_idp: DevIdP, live_server: Any) -> Iterator[str]:
    call_command("seed_demo", verbosity=0)
    dev_idp.register_app(live_server.url)
    reset_for_tests()
    breaker.reset()
    with FakeUpstream(tokens=3, word="東京") as good, FakeUpstream(tokens=3, word="大阪") as other:
        register_alias(upstreams=[Upstream(good.url, name="vendor-a")])
        register_alias(upstreams=[Upstream(other.url, name="vendor-b")])
        reset_for_tests()
        yield str(live_server.url)
    reset_for_tests()


def test_officer_reads_the_report_and_exports_csv(page: Any, site: str) -> None:
    base = site
    sign_in(page, base, "takahashi")  # the login creates the membership from the IdP's claims
    officer = Membership.objects.select_related("user").get(user__username="takahashi")

    suite = suite_create(actor=officer.user, name="首都スイート")
    suite_import(actor=officer.user, suite=suite, filename="s.csv", data=SUITE)
    run = run_create(actor=officer.user, suite=suite, deployments=list(Deployment.objects.order_by("name")))
    # Playwright's sync API runs an event loop in this thread; the worker's code runs in its own.
    finished: list[bool] = []

    def work() -> None:
        try:
            finished.append(execute_run(run.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(60)
    assert finished == [True]

    page.goto(f"{base}/registry/")
    page.get_by_test_id("registry-nav-evaluation").click()
    page.get_by_role("link", name=f"#{run.pk} 首都スイート").click()
    page.get_by_test_id("report-table").wait_for()
    row_a = page.get_by_test_id("report-row-vendor-a").inner_text()
    row_b = page.get_by_test_id("report-row-vendor-b").inner_text()
    assert "1.000" in row_a and "Apache-2.0" in row_a  # exact and contains both right
    assert "0.000" in row_b
    assert "完了" in page.get_by_test_id("run-progress").inner_text()
    shoot(page, "evaluation-report")
    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    path = download.value.path()
    text = open(path, encoding="utf-8").read()
    assert text.splitlines()[0].startswith("label,deployment,model") and "vendor-a" in text
