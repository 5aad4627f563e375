"""Procurement evaluation: suites of tasks, runs over candidate deployments, canary promotions,
and the blind arena.

A suite is owned by the platform or by a ministry. Platform suites (and their
runs) are platform data owned by procurement, like the registry they evaluate:
plain models readable by procurement officers, platform admins and auditors. A
platform run records which ministry its model calls are charged to
(``Run.charged_ministry``, declared platform-level in tests/test_tenancy_sweep.py).
A ministry suite, its tasks and its runs are that ministry's data: the
``Ministry*`` TenantModels (RLS), visible only inside that ministry. Promotions
change platform aliases and stay platform rows. Arena battles hold a
staff member's prompt, which *is* ministry content: they are TenantModels.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance
from apps.tenancy.models import TenantModel


class MetricKind(models.TextChoices):
    EXACT = "exact", _("完全一致")
    CONTAINS = "contains", _("部分一致")
    CHAR_F1 = "char_f1", _("文字F値")
    JUDGE = "judge", _("LLM評価")


class SuiteBase(models.Model):
    """The fields of a suite, whoever owns it.

    ``level`` is the 機密性 of the tasks' text: a run never sends it to a
    deployment cleared below it (invariant 5).
    """

    name = models.CharField(_("名称"), max_length=200)
    description = models.TextField(_("説明"), blank=True)
    level = models.PositiveSmallIntegerField(
        _("機密性"), choices=Clearance.choices, default=Clearance.LEVEL_1
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    owner = "platform"

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name


class Suite(SuiteBase):
    """A platform suite: visible to every procurement officer, platform admin and auditor."""

    name = models.CharField(_("名称"), max_length=200, unique=True)

    class Meta:
        ordering = ["name"]

    def get_absolute_url(self) -> str:
        return reverse("evaluation:suite_detail", args=[self.pk])


class TaskBase(models.Model):
    """One task: the input sent to every candidate, and how its answer is scored."""

    position = models.PositiveIntegerField()
    input = models.TextField(_("入力"))
    reference = models.TextField(_("参照解答"), blank=True)
    rubric = models.TextField(_("評価基準"), blank=True)
    metric = models.CharField(_("指標"), max_length=16, choices=MetricKind.choices)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.suite_id}#{self.position}"  # type: ignore[attr-defined]


class Task(TaskBase):
    """A task of a platform suite."""

    suite = models.ForeignKey(Suite, on_delete=models.CASCADE, related_name="tasks")

    class Meta:
        ordering = ["suite", "position"]
        constraints = [models.UniqueConstraint(fields=["suite", "position"], name="evaltask_position_uniq")]


class RunStatus(models.TextChoices):
    QUEUED = "queued", _("待機中")
    RUNNING = "running", _("実行中")
    COMPLETE = "complete", _("完了")


class RunBase(models.Model):
    """One evaluation of a suite's tasks on each candidate, as a Celery job with progress.

    ``bench`` holds ``inference bench`` JSON attached per candidate id.
    """

    judge_deployment = models.ForeignKey(
        "registry.Deployment", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    max_tokens = models.PositiveIntegerField(default=256)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    bench = models.JSONField(default=dict, blank=True)

    owner = "platform"

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"run {self.pk} of {self.suite_id}"  # type: ignore[attr-defined]

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


class Run(RunBase):
    """A run of a platform suite.

    ``charged_ministry`` is whose usage ledger the run's model calls go to (the
    procurement officer's ministry): UsageRecord rows need a ministry, and the
    ministry sees them as feature ``eval``.
    """

    suite = models.ForeignKey(Suite, on_delete=models.PROTECT, related_name="runs")
    charged_ministry = models.ForeignKey("tenancy.Ministry", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def get_absolute_url(self) -> str:
        return reverse("evaluation:run_detail", args=[self.pk])


class RunCandidateBase(models.Model):
    """A candidate of a run: a deployment, or an alias resolved to its main deployment at creation."""

    position = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=200)
    alias = models.ForeignKey(
        "registry.Alias", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    deployment = models.ForeignKey("registry.Deployment", on_delete=models.PROTECT, related_name="+")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.label


class RunCandidate(RunCandidateBase):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="candidates")

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "deployment"], name="evalcandidate_uniq")]


class ItemStatus(models.TextChoices):
    PENDING = "pending", _("未実行")
    DONE = "done", _("完了")
    ERROR = "error", _("エラー")


class RunItemBase(models.Model):
    """One task answered by one candidate: output, timings, tokens, cost and score.

    Finished items are never redone (a worker that dies mid-run resumes with the
    pending ones). ``error`` is the model call's failure, ``judge_error`` the
    judge's: both are recorded, neither stops the run.
    """

    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    output = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_per_s = models.FloatField(null=True, blank=True)
    cost_yen = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    score = models.FloatField(null=True, blank=True)  # 0..1 (judge: (score-1)/4)
    judge_score = models.PositiveSmallIntegerField(null=True, blank=True)  # 1..5
    judge_reply = models.TextField(blank=True)
    error = models.CharField(max_length=500, blank=True)
    judge_error = models.CharField(max_length=500, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.run_id}:{self.candidate_id}:{self.task_id}"  # type: ignore[attr-defined]


class RunItem(RunItemBase):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="items")
    candidate = models.ForeignKey(RunCandidate, on_delete=models.CASCADE, related_name="items")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["run", "task__position", "candidate__position"]
        constraints = [models.UniqueConstraint(fields=["candidate", "task"], name="evalitem_uniq")]
        indexes = [models.Index(fields=["run", "status"], name="evalitem_run_status_idx")]


# --- Suites owned by a ministry ----------------------------------------------------------
#
# The same five tables again as TenantModels: a ministry's own suite (its tasks, which may be
# ministry content) and everything derived from it (runs, candidates, answers) live under RLS.
# Code that works on either kind takes the model classes from :mod:`apps.evaluation.stores`.


class MinistrySuite(TenantModel, SuiteBase):
    """A suite owned by a ministry: created, imported and run by that ministry's procurement
    officers, and visible only inside that ministry (scoped manager and RLS)."""

    owner = "ministry"

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["ministry", "name"], name="evalmsuite_name_uniq")]

    def get_absolute_url(self) -> str:
        return reverse("evaluation:m_suite_detail", args=[self.pk])


class MinistryTask(TenantModel, TaskBase):
    """A task of a ministry suite (the ministry's content)."""

    suite = models.ForeignKey(MinistrySuite, on_delete=models.CASCADE, related_name="tasks")

    class Meta:
        ordering = ["suite", "position"]
        constraints = [
            models.UniqueConstraint(fields=["ministry", "suite", "position"], name="evalmtask_position_uniq")
        ]


class MinistryRun(TenantModel, RunBase):
    """A run of a ministry suite; the ministry that owns it is the one charged for its calls."""

    suite = models.ForeignKey(MinistrySuite, on_delete=models.PROTECT, related_name="runs")

    owner = "ministry"

    class Meta:
        ordering = ["-created_at", "-id"]

    def get_absolute_url(self) -> str:
        return reverse("evaluation:m_run_detail", args=[self.pk])

    @property
    def charged_ministry_id(self) -> int:
        return int(self.ministry_id)


class MinistryRunCandidate(TenantModel, RunCandidateBase):
    run = models.ForeignKey(MinistryRun, on_delete=models.CASCADE, related_name="candidates")

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["ministry", "run", "deployment"], name="evalmcandidate_uniq")
        ]


class MinistryRunItem(TenantModel, RunItemBase):
    run = models.ForeignKey(MinistryRun, on_delete=models.CASCADE, related_name="items")
    candidate = models.ForeignKey(MinistryRunCandidate, on_delete=models.CASCADE, related_name="items")
    task = models.ForeignKey(MinistryTask, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["run", "task__position", "candidate__position"]
        constraints = [
            models.UniqueConstraint(fields=["ministry", "candidate", "task"], name="evalmitem_uniq")
        ]
        indexes = [models.Index(fields=["ministry", "run", "status"], name="evalmitem_run_status_idx")]


class PromotionState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", _("承認待ち")
    CANARY = "canary", _("カナリア")
    FULL = "full", _("全面切替")
    ROLLED_BACK = "rolled_back", _("ロールバック済み")
    REJECTED = "rejected", _("却下")
    ENDED = "ended", _("終了（経路が別途変更された）")


class Promotion(models.Model):
    """Moving an alias to a candidate deployment: canary N % → full, or automatic rollback.

    The canary is watched by a beat task (``evaluation.promotion_watch``): over
    ``window_minutes`` after it started, once ``min_requests`` calls were made,
    an error rate above ``max_error_rate`` or a p95 latency above
    ``max_p95_latency_ms`` rolls the alias back (``alias_rollback``, audited).
    """

    alias = models.ForeignKey("registry.Alias", on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey("registry.Deployment", on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="promotions")
    # A promotion from a ministry suite's report: a plain id, not a foreign key (a platform row
    # must not point into a ministry's rows).
    ministry_run_id = models.BigIntegerField(null=True, blank=True)
    percent = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=24, choices=PromotionState.choices)
    change_request = models.ForeignKey(
        "registry.ChangeRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    canary_revision = models.PositiveIntegerField(null=True, blank=True)
    canary_started_at = models.DateTimeField(null=True, blank=True)
    max_error_rate = models.FloatField(default=0.05)
    max_p95_latency_ms = models.PositiveIntegerField(default=10_000)
    window_minutes = models.PositiveIntegerField(default=30)
    min_requests = models.PositiveIntegerField(default=20)
    detail = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state"], name="evalpromotion_state_idx")]

    def __str__(self) -> str:
        return f"{self.alias_id}→{self.deployment_id} {self.state}"


class ArenaOutcome(models.TextChoices):
    A = "a", _("Aが良い")
    B = "b", _("Bが良い")
    TIE = "tie", _("引き分け")
    BOTH_BAD = "both_bad", _("どちらも悪い")


class ArenaBattle(TenantModel):
    """A blind comparison: one staff prompt answered by two aliases the ministry may use.

    The prompt and answers are ministry content (RLS). Alias names are shown to
    the voter only after the vote.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    prompt = models.TextField()
    level = models.PositiveSmallIntegerField(choices=Clearance.choices, default=Clearance.LEVEL_1)
    alias_a = models.ForeignKey("registry.Alias", on_delete=models.PROTECT, related_name="+")
    alias_b = models.ForeignKey("registry.Alias", on_delete=models.PROTECT, related_name="+")
    answer_a = models.TextField(blank=True)
    answer_b = models.TextField(blank=True)
    error_a = models.CharField(max_length=500, blank=True)
    error_b = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["ministry", "user", "-created_at"], name="arenabattle_user_idx")]

    def __str__(self) -> str:
        return f"battle {self.pk}"


class ArenaVote(TenantModel):
    """The voter's verdict on one battle (one vote per battle)."""

    battle = models.OneToOneField(ArenaBattle, on_delete=models.CASCADE, related_name="vote")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=16, choices=ArenaOutcome.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["ministry", "-created_at"], name="arenavote_ministry_idx")]

    def __str__(self) -> str:
        return f"vote {self.pk}: {self.outcome}"


from .arena_models import ArenaStream  # noqa: E402, F401  (chat-side streaming state of arena battles)
