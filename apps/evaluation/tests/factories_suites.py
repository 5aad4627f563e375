"""Unsaved rows of the ministry-suite TenantModels for the shared tenancy sweep (tests/test_tenancy_sweep.py).

Each factory saves the parents it needs inside the ministry's own scope and returns one unsaved
row of that ministry.
"""

from __future__ import annotations

import uuid
from typing import Any

from apps.evaluation.models import (
    MinistryRun,
    MinistryRunCandidate,
    MinistryRunItem,
    MinistrySuite,
    MinistryTask,
)
from apps.registry.models import Deployment
from apps.tenancy.scope import ministry_scope


def _deployment() -> Deployment:
    from apps.registry.models import Model, Vendor

    vendor, _created = Vendor.objects.get_or_create(name="sweep-eval-vendor")
    model, _created = Model.objects.get_or_create(
        name="sweep-eval-model",
        defaults={
            "vendor": vendor,
            "family": "sweep",
            "version": "1",
            "license": "MIT",
            "clearance": 3,
            "context_window": 8192,
        },
    )
    deployment, _created = Deployment.objects.get_or_create(
        name="sweep-eval-deployment",
        defaults={
            "model": model,
            "base_url": "http://127.0.0.1:9/v1",
            "served_model_name": "sweep",
            "clearance": 2,
        },
    )
    return deployment


def _saved(row: Any) -> Any:
    with ministry_scope(ministry_id=row.ministry_id):
        row.save()
    return row


def sweep_ministry_suite(ministry: Any) -> MinistrySuite:
    return MinistrySuite(ministry=ministry, name=f"sweep suite {uuid.uuid4().hex[:8]}")


def sweep_ministry_task(ministry: Any) -> MinistryTask:
    suite = _saved(sweep_ministry_suite(ministry))
    return MinistryTask(ministry=ministry, suite=suite, position=1, input="A only", metric="exact")


def sweep_ministry_run(ministry: Any) -> MinistryRun:
    return MinistryRun(ministry=ministry, suite=_saved(sweep_ministry_suite(ministry)))


def sweep_ministry_run_candidate(ministry: Any) -> MinistryRunCandidate:
    run = _saved(sweep_ministry_run(ministry))
    return MinistryRunCandidate(
        ministry=ministry, run=run, position=0, label="sweep", deployment=_deployment()
    )


def sweep_ministry_run_item(ministry: Any) -> MinistryRunItem:
    candidate = _saved(sweep_ministry_run_candidate(ministry))
    task = _saved(
        MinistryTask(ministry=ministry, suite=candidate.run.suite, position=1, input="A", metric="exact")
    )
    return MinistryRunItem(
        ministry=ministry, run=candidate.run, candidate=candidate, task=task, output="A only"
    )
