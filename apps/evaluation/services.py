"""Writes of procurement evaluation: suites, imports, runs and bench attachments.

Every function checks that the actor may change evaluation data (procurement
officer or platform admin, :func:`apps.evaluation.permissions.require_edit`),
runs in a transaction and audits. Promotions live in :mod:`.promotion`, the
arena in :mod:`.arena`, run execution in :mod:`.runner`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.registry.models import Alias, Deployment
from apps.registry.router import routable
from apps.registry.snapshot import get_snapshot

from .importers import parse_suite_file
from .models import MetricKind, Run, RunCandidate, RunItem, Suite, Task
from .permissions import charged_ministry_for, require_edit

MAX_CANDIDATES = 8
MAX_BENCH_BYTES = 256_000


@transaction.atomic
def suite_create(*, actor: Any, name: str, description: str = "", level: int = 1) -> Suite:
    require_edit(actor)
    suite = Suite(name=name.strip(), description=description, level=level, created_by=actor)
    suite.full_clean()
    suite.save()
    audit_record(
        actor=actor,
        action="evaluation.suite.create",
        target_type="suite",
        target_id=suite.pk,
        data={"name": suite.name, "level": level},
    )
    return suite


@transaction.atomic
def suite_import(*, actor: Any, suite: Suite, filename: str, data: bytes) -> int:
    """Append the tasks of a JSONL/CSV file; all or nothing (raises ImportFailed listing every bad line)."""
    require_edit(actor)
    rows = parse_suite_file(name=filename, data=data)
    suite = Suite.objects.select_for_update().get(pk=suite.pk)
    last = suite.tasks.order_by("-position").values_list("position", flat=True).first() or 0
    Task.objects.bulk_create(
        [
            Task(
                suite=suite,
                position=last + offset,
                input=row.input,
                reference=row.reference,
                rubric=row.rubric,
                metric=row.metric,
            )
            for offset, row in enumerate(rows, start=1)
        ]
    )
    audit_record(
        actor=actor,
        action="evaluation.suite.import",
        target_type="suite",
        target_id=suite.pk,
        data={"file": filename[:200], "tasks": len(rows)},
    )
    return len(rows)


def _main_deployment(alias: Alias) -> Deployment:
    """The alias's heaviest routable route now: what most of its traffic gets."""
    snapshot = get_snapshot()
    info = snapshot.aliases.get(alias.name)
    routes = sorted(
        (
            r
            for r in (info.routes if info else ())
            if r.weight > 0
            and r.deployment_id in snapshot.deployments
            and routable(snapshot.deployments[r.deployment_id])
        ),
        key=lambda r: (-r.weight, r.deployment_id),
    )
    if not routes:
        raise ValidationError(
            _("エイリアス「%(name)s」には利用できる経路がありません。") % {"name": alias.name}
        )
    return Deployment.objects.select_related("model").get(pk=routes[0].deployment_id)


def _check_clearance(deployment: Deployment, level: int) -> None:
    """Invariant 5: a suite's tasks never go to a deployment cleared below the suite's level."""
    if deployment.effective_clearance < level or not deployment.enabled:
        raise ValidationError(
            _("「%(name)s」は機密性%(level)dのスイートを評価できません（有効でないか、機密性%(max)dまで）。")
            % {"name": deployment.name, "level": level, "max": deployment.effective_clearance}
        )


@transaction.atomic
def run_create(
    *,
    actor: Any,
    suite: Suite,
    deployments: Sequence[Deployment] = (),
    aliases: Sequence[Alias] = (),
    judge: Deployment | None = None,
    max_tokens: int = 256,
) -> Run:
    """Create a run with one pending item per task × candidate; the worker starts after commit."""
    require_edit(actor)
    candidates: list[tuple[str, Alias | None, Deployment]] = [(d.name, None, d) for d in deployments]
    candidates += [(f"{a.name} → {(d := _main_deployment(a)).name}", a, d) for a in aliases]
    if not candidates or len(candidates) > MAX_CANDIDATES:
        raise ValidationError(_("候補は1〜%(n)d件選んでください。") % {"n": MAX_CANDIDATES})
    if len({d.pk for _l, _a, d in candidates}) != len(candidates):
        raise ValidationError(_("同じデプロイメントが候補に重複しています。"))
    tasks = list(suite.tasks.order_by("position"))
    if not tasks:
        raise ValidationError(_("スイートにタスクがありません。先にインポートしてください。"))
    if any(t.metric == MetricKind.JUDGE for t in tasks) and judge is None:
        raise ValidationError(_("LLM評価のタスクがあるため、評価用モデル（ジャッジ）を選んでください。"))
    for _label, _alias, deployment in candidates:
        _check_clearance(deployment, suite.level)
    if judge is not None:
        _check_clearance(judge, suite.level)
    if not 1 <= max_tokens <= 8192:
        raise ValidationError(_("最大トークン数は1〜8192で指定してください。"))
    run = Run.objects.create(
        suite=suite,
        judge_deployment=judge,
        total=len(tasks) * len(candidates),
        max_tokens=max_tokens,
        charged_ministry=charged_ministry_for(actor),
        created_by=actor,
    )
    rows = [
        RunCandidate(run=run, position=i, label=label[:200], alias=alias, deployment=deployment)
        for i, (label, alias, deployment) in enumerate(candidates)
    ]
    RunCandidate.objects.bulk_create(rows)
    RunItem.objects.bulk_create([RunItem(run=run, candidate=c, task=t) for t in tasks for c in rows])
    audit_record(
        actor=actor,
        action="evaluation.run.create",
        target_type="run",
        target_id=run.pk,
        data={
            "suite": suite.pk,
            "candidates": [label for label, _a, _d in candidates],
            "judge": judge.name if judge else None,
        },
    )
    from .tasks import run_evaluation

    run_id = run.pk
    transaction.on_commit(lambda: run_evaluation.delay(run_id=run_id))
    return run


@transaction.atomic
def run_attach_bench(*, actor: Any, run: Run, candidate: RunCandidate, data: bytes) -> dict[str, Any]:
    """Attach ``python -m inference bench`` JSON output to a candidate of the run (shown in the report)."""
    require_edit(actor)
    if candidate.run_id != run.pk:
        raise ValidationError(_("この実行の候補ではありません。"))
    if len(data) > MAX_BENCH_BYTES:
        raise ValidationError(_("ベンチマーク結果が大きすぎます。"))
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValidationError(_("ベンチマーク結果をJSONとして読めません。")) from None
    if not isinstance(parsed, dict):
        raise ValidationError(_("ベンチマーク結果はJSONオブジェクトで指定してください。"))
    run = Run.objects.select_for_update().get(pk=run.pk)
    run.bench = {**run.bench, str(candidate.pk): parsed}
    run.save(update_fields=["bench"])
    audit_record(
        actor=actor,
        action="evaluation.run.bench",
        target_type="run",
        target_id=run.pk,
        data={"candidate": candidate.label},
    )
    return parsed
