"""Background work of quotas: draining the usage journal into ``UsageRecord`` rows."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.utils import timezone

from apps.tenancy.tasks import TenantTask
from gennai.celery import app

from .journal import usage_journal_drain


@app.task(name="quotas.usage_journal_drain", ignore_result=True)
def usage_journal_drain_task() -> dict[str, Any]:
    """Move the journaled ``/v1`` usage into ``UsageRecord`` rows (see :mod:`apps.quotas.journal`).

    Scheduled every 2 s by ``CELERY_BEAT_SCHEDULE`` (gennai/settings/base.py).
    Platform work, not a ``TenantTask``: the journal holds every ministry's
    entries, and each ministry's rows are written inside that ministry's own
    scope. Safe to run twice at once (idempotent upserts keyed by request id).
    """
    return dataclasses.asdict(usage_journal_drain())


@app.task(name="quotas.usage_rollup_recent", ignore_result=True)
def usage_rollup_recent_task() -> int:
    """Recompute yesterday's and today's ``UsageDaily`` rows of every ministry (idempotent).

    Scheduled by ``CELERY_BEAT_SCHEDULE`` (``quotas-usage-rollup``). Platform
    work like the drain: each ministry is rolled up inside its own scope.
    """
    from .rollups import usage_rollup_recent

    return sum(result.upserted for result in usage_rollup_recent())


@app.task(name="quotas.admission_reconcile", ignore_result=True)
def admission_reconcile_task() -> dict[str, int]:
    """Release leaked admission reservations and reseed the month counters from the ledger.

    Scheduled by ``CELERY_BEAT_SCHEDULE`` (``quotas-admission-reconcile``, every
    ``GENNAI_QUOTA_RECONCILE_SECONDS``). Platform work: each ministry's ledger is
    read inside that ministry's own scope (:mod:`apps.quotas.reconcile`). Safe to
    run twice at once: every step is an atomic script that writes the truth.
    """
    from .reconcile import reconcile

    result = reconcile()
    return {"released": result.released, "ministries": result.ministries, "counters": result.counters}


@app.task(base=TenantTask, name="quotas.budget_alerts", ignore_result=True)
def budget_alerts_task(*, ministry_id: int, user_id: int | None = None, api_key_id: int | None = None) -> int:
    """Warn user ``user_id`` and notify their ministry's admins of budgets at 80 %/100 %
    (for an API key's request, ``api_key_id``: the admins only).

    Queued by :func:`apps.quotas.alerts.alerts_maybe_enqueue` after a request
    settled, never on the request's path. ``TenantTask`` enters the ministry's
    scope from ``ministry_id``; each notification is written at most once
    (unique per recipient, threshold and month), so a retry is harmless.
    """
    from .alerts import budget_alerts_for_api_key, budget_alerts_for_user

    if user_id is not None:
        return len(budget_alerts_for_user(user_id=user_id))
    if api_key_id is not None:
        return len(budget_alerts_for_api_key(api_key_id=api_key_id))
    return 0


@app.task(name="quotas.admission_reseed_ministry", ignore_result=True)
def admission_reseed_ministry_task(*, ministry_id: int) -> int:
    """Reseed one ministry's admission counters now (queued when its limits change).

    A scope that just got its first limit has no counter yet: without this it
    would count from zero until the next periodic reconcile. Platform work like
    :func:`admission_reconcile_task`; the ledger is read in the ministry's scope.
    """
    from .reconcile import reseed_ministry

    return reseed_ministry(ministry_id=ministry_id)[0]


@app.task(name="quotas.usage_partitions_maintain", ignore_result=True)
def usage_partitions_maintain_task() -> dict[str, Any]:
    """Create the ledger's monthly partitions ahead and drop those past the retention.

    Scheduled daily by ``CELERY_BEAT_SCHEDULE`` (``quotas-usage-partitions``).
    DDL: runs as the owner role (``owner_mode``), so the worker that takes it
    must log in with a role that may act as the owner (the migration login); on
    any failure the platform admins are alerted (in the app and by e-mail) and
    the task fails loudly. See :func:`apps.quotas.partitions.usage_partitions_maintain`.
    """
    from apps.console.platform_alerts import platform_alert
    from apps.tenancy.db import owner_mode

    from .partitions import usage_partitions_maintain

    try:
        with owner_mode():
            result = usage_partitions_maintain()
    except Exception as exc:
        platform_alert(
            kind="usage_partitions_failed",
            key=timezone.localdate().isoformat(),
            data={"error": type(exc).__name__},
        )
        raise
    return {
        "created": result.created,
        "dropped": result.dropped,
        "default_rows_deleted": result.default_rows_deleted,
    }
