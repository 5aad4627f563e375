"""Writes of procurement evaluation: suites, imports, runs and bench attachments.

Every function checks that the actor may change evaluation data (procurement
officer or platform admin, :func:`apps.evaluation.permissions.require_edit`;
for a ministry suite also a membership with that role in the suite's ministry,
:func:`require_ministry_edit`), runs in a transaction and audits. A platform
suite's rows and a ministry suite's rows are different tables
(:mod:`.stores`); the code is the same. Promotions live in :mod:`.promotion`, the
arena in :mod:`.arena`, run execution in :mod:`.runner`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.registry.models import Alias, Deployment
from apps.registry.permissions import EDIT_ROLES
from apps.registry.router import routable
from apps.registry.snapshot import get_snapshot
from apps.tenancy.models import Membership
from apps.tenancy.scope import current_ministry_id

from .importers import parse_suite_file
from .models import MetricKind, MinistrySuite, Suite
from .permissions import charged_ministry_for, require_edit
from .stores import MINISTRY, MINISTRY_STORE, PLATFORM_STORE, Store, store_for

MAX_CANDIDATES = 8
MAX_BENCH_BYTES = 5 * 1024 * 1024  # the per-request results are dropped; the summary is kept
BENCH_LEVEL_KEYS = (
    "concurrency", "requests", "ok", "errors", "wall_s", "ttft_p50_s", "ttft_p95_s", "latency_p50_s",
    "latency_p95_s", "completion_tokens", "aggregate_tokens_per_s", "decode_tokens_per_s_p50",
)  # fmt: skip


def require_ministry_edit(actor: Any, ministry_id: int | None = None) -> int:
    """Security: a ministry suite (and its runs) is changed only inside that ministry's scope, by
    someone whose membership *of that ministry* holds procurement_officer or platform_admin.

    ``ministry_id``: the ministry of the row being changed (default: the active scope's); it must
    be the active scope's, so a row of another ministry can never be changed from here. Returns
    the ministry id.
    """
    require_edit(actor)
    active = current_ministry_id()
    if active is None or (ministry_id is not None and ministry_id != active):
        raise PermissionDenied(_("府省庁のスイートは、その府省庁を選んだ状態でのみ変更できます。"))
    if not Membership.objects.filter(
        user_id=int(getattr(actor, "pk", 0) or 0),
        ministry_id=active,
        ministry__active=True,
        roles__overlap=sorted(EDIT_ROLES),
    ).exists():
        raise PermissionDenied(
            _("この府省庁の調達担当（またはプラットフォーム管理者）だけが府省庁のスイートを変更できます。")
        )
    return active


def _require_store_edit(actor: Any, store: Store, row: Any = None) -> None:
    if store.is_ministry:
        require_ministry_edit(actor, None if row is None else int(row.ministry_id))
    else:
        require_edit(actor)


@transaction.atomic
def suite_create(
    *, actor: Any, name: str, description: str = "", level: int = 1, owner: str = "platform"
) -> Any:
    """A new suite owned by the platform, or (``owner="ministry"``) by the active ministry."""
    store = MINISTRY_STORE if owner == MINISTRY else PLATFORM_STORE
    _require_store_edit(actor, store)
    suite = store.suite(name=name.strip(), description=description, level=level, created_by=actor)
    if store.is_ministry:
        suite.ministry_id = current_ministry_id()
        if MinistrySuite.objects.filter(name=suite.name).exists():
            raise ValidationError(_("同じ名称のスイートがこの府省庁に既にあります。"))
    suite.full_clean()
    try:
        # Two creations with one name at once both pass the checks above; the database's
        # unique constraint stops the second, which gets the same form error (not a 500).
        with transaction.atomic():
            suite.save()
    except IntegrityError:
        if store.is_ministry:
            raise ValidationError(_("同じ名称のスイートがこの府省庁に既にあります。")) from None
        raise ValidationError(_("同じ名称のスイートが既にあります。")) from None
    audit_record(
        actor=actor,
        action="evaluation.suite.create",
        target_type="ministry_suite" if store.is_ministry else "suite",
        target_id=suite.pk,
        ministry_id=_audit_ministry(suite),
        data={"name": suite.name, "level": level, "owner": store.owner},
    )
    return suite


@transaction.atomic
def suite_import(*, actor: Any, suite: Suite | MinistrySuite, filename: str, data: bytes) -> int:
    """Append the tasks of a JSONL/CSV file; all or nothing (raises ImportFailed listing every bad line)."""
    store = store_for(suite)
    _require_store_edit(actor, store, suite)
    rows = parse_suite_file(name=filename, data=data)
    suite = store.suite.objects.select_for_update().get(pk=suite.pk)
    last = suite.tasks.order_by("-position").values_list("position", flat=True).first() or 0
    store.task.objects.bulk_create(
        [
            store.task(
                **owned_row(suite),
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
        target_type="ministry_suite" if store.is_ministry else "suite",
        target_id=suite.pk,
        ministry_id=_audit_ministry(suite),
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
    suite: Suite | MinistrySuite,
    deployments: Sequence[Deployment] = (),
    aliases: Sequence[Alias] = (),
    judge: Deployment | None = None,
    max_tokens: int = 256,
) -> Any:
    """Create a run with one pending item per task × candidate; the worker starts after commit.

    A ministry suite's run is the ministry's (a ``MinistryRun``, charged to that ministry); a
    platform suite's run is charged to the officer's ministry (:func:`charged_ministry_for`).
    """
    store = store_for(suite)
    _require_store_edit(actor, store, suite)
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
    owned: dict[str, Any] = (
        {"ministry_id": suite.ministry_id}
        if isinstance(suite, MinistrySuite)
        else {"charged_ministry": charged_ministry_for(actor)}
    )
    run = store.run.objects.create(
        suite=suite,
        judge_deployment=judge,
        total=len(tasks) * len(candidates),
        max_tokens=max_tokens,
        created_by=actor,
        **owned,
    )
    rows = [
        store.candidate(
            run=run, position=i, label=label[:200], alias=alias, deployment=deployment, **owned_row(run)
        )
        for i, (label, alias, deployment) in enumerate(candidates)
    ]
    store.candidate.objects.bulk_create(rows)
    store.item.objects.bulk_create(
        [store.item(run=run, candidate=c, task=t, **owned_row(run)) for t in tasks for c in rows]
    )
    audit_record(
        actor=actor,
        action="evaluation.run.create",
        target_type="ministry_run" if store.is_ministry else "run",
        target_id=run.pk,
        ministry_id=_audit_ministry(run),
        data={
            "suite": suite.pk,
            "candidates": [label for label, _a, _d in candidates],
            "judge": judge.name if judge else None,
        },
    )
    from .tasks import run_evaluation

    run_id = run.pk
    scope = owned_row(run)  # a ministry run's worker enters that ministry's scope
    transaction.on_commit(lambda: run_evaluation.delay(run_id=run_id, **scope))
    return run


def bench_summary(raw: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ``inference bench --json`` report the procurement report uses: the model,
    the settings and each concurrency level's summary (numbers only; the per-request results and
    the server URL are dropped). Raises ValidationError when no level has a throughput."""
    levels = []
    raw_levels = raw.get("levels")
    for level in raw_levels if isinstance(raw_levels, list) else []:
        if not isinstance(level, dict):
            continue
        kept = {
            k: level[k]
            for k in BENCH_LEVEL_KEYS
            if isinstance(level.get(k), int | float) and not isinstance(level.get(k), bool)
        }
        if "aggregate_tokens_per_s" in kept:
            levels.append(kept)
    if not levels:
        raise ValidationError(
            _("inference bench --json の出力ではありません（levels[].aggregate_tokens_per_s がありません）。")
        )
    summary: dict[str, Any] = {"levels": levels}
    for key in ("model", "max_tokens", "requests_per_level", "prompt_chars"):
        value = raw.get(key)
        if isinstance(value, str):
            summary[key] = value[:200]
        elif isinstance(value, int) and not isinstance(value, bool):
            summary[key] = value
    return summary


def _audit_ministry(row: Any) -> int | None:
    """Security: a ministry suite's or run's events go on that ministry's audit trail (its
    auditors read events by ministry id); a platform suite's stay platform events."""
    ministry_id = owned_row(row).get("ministry_id")
    return None if ministry_id is None else int(ministry_id)


def owned_row(parent: Any) -> dict[str, Any]:
    """The ministry of a row derived from ``parent`` (a suite or run; none for a platform one)."""
    return {"ministry_id": parent.ministry_id} if store_for(parent).is_ministry else {}


@transaction.atomic
def run_attach_bench(*, actor: Any, run: Any, candidate: Any, data: bytes) -> dict[str, Any]:
    """Attach ``python -m inference bench --json`` output to a candidate of the run (shown in the
    report and its CSV/JSON exports as the candidate's throughput)."""
    store = store_for(run)
    _require_store_edit(actor, store, run)
    if store_for(candidate) is not store:
        raise ValidationError(_("この実行の候補ではありません。"))
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
    parsed = bench_summary(parsed)
    run = store.run.objects.select_for_update().get(pk=run.pk)
    run.bench = {**run.bench, str(candidate.pk): parsed}
    run.save(update_fields=["bench"])
    audit_record(
        actor=actor,
        action="evaluation.run.bench",
        target_type="ministry_run" if store.is_ministry else "run",
        target_id=run.pk,
        ministry_id=_audit_ministry(run),
        data={"candidate": candidate.label},
    )
    return parsed
