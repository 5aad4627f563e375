"""Ministry-owned evaluation suites (673181d) seen by someone whose procurement role is another ministry's.

``procurement_officer`` granted through ``/ministries/A/procurement`` is a role
*in A* (DESIGN invariant 9). The registry's own pages accept it from any
membership (the registry is platform data), but a ministry suite of B — its
tasks, references and the models' answers, up to 機密性3 — is B's content:
acting in B as plain staff must not show it, just as it cannot change it.
Realm roles (platform auditor / officer) are on every membership and still see it.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.evaluation.services import run_create, suite_create, suite_import
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.middleware import SESSION_KEY
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user
from tests.support.registry import Upstream, register_alias

pytestmark = pytest.mark.django_db

TASKS = '{"input": "総務省の内部資料の要約は", "reference": "極秘", "metric": "contains"}\n'.encode()


def _acting_in(user: Any, code: str) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = code
    session.save()
    return client


def test_officer_of_a_acting_as_staff_in_b_cannot_read_bs_suites(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    officer_b = make_user("officer-b", b, ["procurement_officer"])
    with FakeUpstream(tokens=2, word="x", delay=0.0) as fake:
        deployment = register_alias(upstreams=[Upstream(fake.url, name="fake-vendor")]).deployments[0]
        reset_for_tests()
        with ministry_scope(ministry_id=b.pk):
            suite = suite_create(actor=officer_b, name="総務省の内部QA", owner="ministry", level=1)
            suite_import(actor=officer_b, suite=suite, filename="t.jsonl", data=TASKS)
            run = run_create(actor=officer_b, suite=suite, deployments=[deployment], max_tokens=8)

    # Procurement officer through A's group, plain staff in B, acting in B.
    seconded = make_user("seconded", a, ["procurement_officer"])
    Membership.objects.create(user=seconded, ministry=b, roles=["staff"])
    client = _acting_in(seconded, b.code)
    listing = client.get(reverse("evaluation:suite_list"))
    assert "総務省の内部QA" not in listing.content.decode()
    for name, args in [
        ("m_suite_detail", [suite.pk]),
        ("m_run_detail", [run.pk]),
        ("m_run_export", [run.pk, "csv"]),
        ("m_run_export", [run.pk, "json"]),
    ]:
        assert client.get(reverse(f"evaluation:{name}", args=args)).status_code == 404, name

    # B's own officer, and a platform auditor (a realm role: on every membership), still read it.
    assert (
        _acting_in(officer_b, b.code).get(reverse("evaluation:m_suite_detail", args=[suite.pk])).status_code
        == 200
    )
    auditor = make_user("platform-auditor", b, ["staff", "auditor"])
    page = _acting_in(auditor, b.code).get(reverse("evaluation:m_suite_detail", args=[suite.pk]))
    assert page.status_code == 200 and "総務省の内部資料の要約は" in page.content.decode()


def test_changes_to_a_ministry_suite_are_on_that_ministrys_audit_trail(ministries: tuple[Any, Any]) -> None:
    """The ministry's auditors read the events with its ministry id; a ministry suite's create,
    import, run and bench must not be filed as platform events (ministry_id NULL)."""
    from apps.audit.models import AuditEvent
    from apps.evaluation.models import MinistryRunCandidate
    from apps.evaluation.services import run_attach_bench

    _a, b = ministries
    officer_b = make_user("officer-b", b, ["procurement_officer"])
    bench = b'{"levels": [{"concurrency": 1, "aggregate_tokens_per_s": 10.0}]}'
    with FakeUpstream(tokens=2, word="x", delay=0.0) as fake:
        deployment = register_alias(upstreams=[Upstream(fake.url, name="fake-vendor")]).deployments[0]
        reset_for_tests()
        with ministry_scope(ministry_id=b.pk):
            suite = suite_create(actor=officer_b, name="総務省の内部QA", owner="ministry", level=1)
            suite_import(actor=officer_b, suite=suite, filename="t.jsonl", data=TASKS)
            run = run_create(actor=officer_b, suite=suite, deployments=[deployment], max_tokens=8)
            candidate = MinistryRunCandidate.objects.get(run=run)
            run_attach_bench(actor=officer_b, run=run, candidate=candidate, data=bench)
    actions = [
        "evaluation.suite.create",
        "evaluation.suite.import",
        "evaluation.run.create",
        "evaluation.run.bench",
    ]
    events = {e.action: e.ministry_id for e in AuditEvent.objects.filter(action__in=actions)}
    assert events == dict.fromkeys(actions, b.pk)
