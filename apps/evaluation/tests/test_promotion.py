"""Promote → canary → forced high error rate → automatic rollback; four-eyes for off-prem; every step
audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.evaluation.models import Promotion, PromotionState
from apps.evaluation.promotion import (
    canary_stats,
    promotion_check,
    promotion_full,
    promotion_rollback,
    promotion_start,
    promotion_watch_all,
)
from apps.quotas.services import usage_record_create
from apps.registry.approvals import change_request_approve, change_request_reject
from apps.registry.models import Alias, Deployment
from apps.registry.services import alias_set_routes, deployment_save
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.registry import Upstream, register_alias


def _routes(alias: Alias) -> dict[str, int]:
    alias.refresh_from_db()
    assert alias.current_revision is not None
    return {r.deployment.name: r.weight for r in alias.current_revision.routes.select_related("deployment")}


@pytest.fixture
def setup(ministries: tuple[Any, Any]) -> tuple[Alias, Deployment]:
    registered = register_alias(
        upstreams=[Upstream("http://127.0.0.1:9", name="incumbent")], name="standard-chat"
    )
    candidate = deployment_save(
        actor=None,
        model=registered.deployments[0].model,
        name="candidate",
        base_url="http://127.0.0.1:9",
        served_model_name="c",
        clearance=2,
    )
    reset_for_tests()
    return registered.alias, candidate


def _calls(ministry: Any, deployment: Deployment, *, ok: int, errors: int, latency_ms: int = 100) -> None:
    with ministry_scope(ministry_id=ministry.pk):
        for i in range(ok + errors):
            usage_record_create(
                alias_name="standard-chat",
                deployment_id=deployment.pk,
                status="ok" if i < ok else "error",
                latency_ms=latency_ms,
            )


def test_canary_then_forced_errors_roll_back(setup: Any, officer: Any, ministries: Any) -> None:
    alias, candidate = setup
    promotion = promotion_start(
        actor=officer.user,
        alias=alias,
        deployment=candidate,
        percent=10,
        reason="評価#1の結果",
        min_requests=10,
    )
    assert promotion.state == PromotionState.CANARY
    assert _routes(alias) == {"incumbent": 90, "candidate": 10}
    canary_revision = promotion.canary_revision

    # Healthy traffic below the thresholds: the watch keeps the canary.
    a, b = ministries
    _calls(a, candidate, ok=8, errors=0)
    _calls(b, candidate, ok=6, errors=0)
    assert canary_stats(promotion).requests == 14
    assert promotion_check(promotion=promotion).state == PromotionState.CANARY

    # Forced high error rate (across both ministries' traffic): rolled back by the system.
    _calls(b, candidate, ok=0, errors=6)
    result = promotion_watch_all()
    assert result == {"checked": 1, "rolled_back": 1}
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.ROLLED_BACK and "30.0%" in promotion.detail
    assert _routes(alias) == {"incumbent": 100}
    alias.refresh_from_db()
    assert alias.current_revision is not None and alias.current_revision.number == (canary_revision or 0) + 1
    actions = list(
        AuditEvent.objects.filter(action__startswith="evaluation.promotion").values_list("action", flat=True)
    )
    assert set(actions) == {"evaluation.promotion.start", "evaluation.promotion.auto_rollback"}
    assert AuditEvent.objects.filter(action="registry.alias.rollback", target_id=str(alias.pk)).exists()


def test_latency_threshold_and_full(setup: Any, officer: Any, ministries: Any) -> None:
    alias, candidate = setup
    promotion = promotion_start(
        actor=officer.user, alias=alias, deployment=candidate, percent=20, reason="r", min_requests=3,
        max_p95_latency_ms=500,
    )  # fmt: skip
    _calls(ministries[0], candidate, ok=3, errors=0, latency_ms=200)
    assert promotion_check(promotion=promotion).state == PromotionState.CANARY
    promotion = promotion_full(actor=officer.user, promotion=promotion, reason="良好")
    assert promotion.state == PromotionState.FULL
    assert _routes(alias) == {"candidate": 100}
    # A finished promotion is no longer watched, whatever its traffic does.
    _calls(ministries[0], candidate, ok=0, errors=10, latency_ms=900)
    assert promotion_watch_all() == {"checked": 0, "rolled_back": 0}


def test_slow_canary_rolls_back(setup: Any, officer: Any, ministries: Any) -> None:
    alias, candidate = setup
    promotion = promotion_start(
        actor=officer.user, alias=alias, deployment=candidate, percent=5, reason="r", min_requests=3,
        max_p95_latency_ms=500,
    )  # fmt: skip
    _calls(ministries[0], candidate, ok=3, errors=0, latency_ms=800)
    assert promotion_check(promotion=promotion).state == PromotionState.ROLLED_BACK


def test_offprem_canary_waits_for_a_second_officer(setup: Any, officer: Any, officer2: Any) -> None:
    alias, candidate = setup
    external = deployment_save(
        actor=None,
        model=candidate.model,
        name="vendor-api",
        base_url="http://127.0.0.1:9",
        served_model_name="v",
        clearance=1,
        zone="external",
    )
    promotion = promotion_start(actor=officer.user, alias=alias, deployment=external, percent=10, reason="r")
    assert promotion.state == PromotionState.AWAITING_APPROVAL and promotion.change_request is not None
    assert _routes(alias) == {"incumbent": 100}  # nothing published yet
    assert promotion_check(promotion=promotion).state == PromotionState.AWAITING_APPROVAL
    change_request_approve(actor=officer2.user, change_request=promotion.change_request)
    promotion = promotion_check(promotion=promotion)
    assert promotion.state == PromotionState.CANARY and promotion.canary_revision is not None
    assert _routes(alias) == {"incumbent": 90, "vendor-api": 10}


def test_only_one_open_promotion_and_roles(setup: Any, officer: Any, staff_a: Any) -> None:
    alias, candidate = setup
    with pytest.raises(PermissionDenied):
        promotion_start(actor=staff_a.user, alias=alias, deployment=candidate, percent=10, reason="r")
    promotion_start(actor=officer.user, alias=alias, deployment=candidate, percent=10, reason="r")
    with pytest.raises(ValidationError):
        promotion_start(actor=officer.user, alias=alias, deployment=candidate, percent=10, reason="r")
    with pytest.raises(ValidationError):
        promotion_start(actor=officer.user, alias=alias, deployment=candidate, percent=100, reason="r")


def test_rollback_through_the_page(setup: Any, officer: Any, staff_a: Any) -> None:
    alias, candidate = setup
    promotion = promotion_start(actor=officer.user, alias=alias, deployment=candidate, percent=10, reason="r")
    staff = Client()
    staff.force_login(staff_a.user)
    url = reverse("evaluation:promotion_rollback", args=[promotion.pk])
    assert staff.post(url, {"reason": "x"}).status_code == 403
    client = Client()
    client.force_login(officer.user)
    assert client.post(url, {"reason": "手動で戻す"}).status_code == 302
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.ROLLED_BACK
    assert _routes(alias) == {"incumbent": 100}
    assert Promotion.objects.count() == 1


def test_beat_task_runs_the_watch(setup: Any, officer: Any, ministries: Any) -> None:
    from apps.evaluation.tasks import promotion_watch

    alias, candidate = setup
    promotion_start(
        actor=officer.user, alias=alias, deployment=candidate, percent=10, reason="r", min_requests=2
    )
    _calls(ministries[0], candidate, ok=0, errors=2)
    assert promotion_watch.apply().get() == {"checked": 1, "rolled_back": 1}
    assert _routes(alias) == {"incumbent": 100}


# --- Every step audited ---------------------------------------------------------------------


def _events(promotion_id: int) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion_id)).order_by("id")
    )


def _route_changes(alias_id: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_id=str(alias_id), action__startswith="registry.alias.")
        .exclude(action="registry.alias.create")
        .order_by("id")
        .values_list("action", flat=True)
    )


def test_start_full_and_manual_rollback_are_audited_with_actor_and_reason(setup: Any, officer: Any) -> None:
    alias, candidate = setup
    before = len(_route_changes(alias.pk))  # the routes registered by the fixture
    promotion = promotion_start(
        actor=officer.user, alias=alias, deployment=candidate, percent=10, reason="調達評価で良好"
    )
    promotion = promotion_full(actor=officer.user, promotion=promotion, reason="カナリア良好")
    events = _events(promotion.pk)
    assert [e.action for e in events] == ["evaluation.promotion.start", "evaluation.promotion.full"]
    assert all(e.actor_id == officer.user.pk for e in events)
    start, full = events
    assert start.data["alias"] == "standard-chat" and start.data["deployment"] == "candidate"
    assert start.data["percent"] == 10 and start.data["reason"] == "調達評価で良好"
    assert start.data["state"] == PromotionState.CANARY
    assert full.data["reason"] == "カナリア良好" and full.data["revision"] is not None
    assert _route_changes(alias.pk)[before:] == ["registry.alias.routes", "registry.alias.routes"]

    # A second promotion of the same alias, rolled back by a person.
    back = deployment_save(
        actor=None,
        model=candidate.model,
        name="candidate-2",
        base_url="http://127.0.0.1:9",
        served_model_name="c2",
        clearance=2,
    )
    second = promotion_start(actor=officer.user, alias=alias, deployment=back, percent=5, reason="再評価")
    promotion_rollback(actor=officer.user, promotion=second, reason="手動で戻す")
    actions = [e.action for e in _events(second.pk)]
    assert actions == ["evaluation.promotion.start", "evaluation.promotion.rollback"]
    rollback = _events(second.pk)[-1]
    assert rollback.actor_id == officer.user.pk and rollback.data["reason"] == "手動で戻す"
    assert _route_changes(alias.pk)[-1] == "registry.alias.rollback"


def test_automatic_rollback_is_audited_as_the_system_with_the_numbers(
    setup: Any, officer: Any, ministries: Any
) -> None:
    alias, candidate = setup
    promotion = promotion_start(
        actor=officer.user, alias=alias, deployment=candidate, percent=10, reason="r", min_requests=4
    )
    _calls(ministries[0], candidate, ok=1, errors=3)
    assert promotion_check(promotion=promotion).state == PromotionState.ROLLED_BACK
    auto = _events(promotion.pk)[-1]
    assert auto.action == "evaluation.promotion.auto_rollback" and auto.actor_id is None
    assert (
        auto.data["requests"] == 4 and auto.data["errors"] == 3 and "自動ロールバック" in auto.data["reason"]
    )
    assert _route_changes(alias.pk)[-1] == "registry.alias.rollback"


def test_approval_rejection_and_an_outside_change_are_audited(
    setup: Any, officer: Any, officer2: Any
) -> None:
    alias, candidate = setup
    external = deployment_save(
        actor=None,
        model=candidate.model,
        name="vendor-api",
        base_url="http://127.0.0.1:9",
        served_model_name="v",
        clearance=1,
        zone="external",
    )
    # Four-eyes: the proposal is audited when made, and again when its approval is seen.
    promotion = promotion_start(actor=officer.user, alias=alias, deployment=external, percent=10, reason="r")
    assert promotion.change_request is not None
    change_request_approve(actor=officer2.user, change_request=promotion.change_request)
    promotion = promotion_check(promotion=promotion)
    approval = _events(promotion.pk)[-1]
    assert approval.action == "evaluation.promotion.approval" and approval.data["state"] == "canary"
    assert approval.data["change_request"] == promotion.change_request_id
    assert AuditEvent.objects.filter(action="registry.change.approve", actor_id=officer2.user.pk).exists()
    # Someone changes the alias's routes meanwhile: the watch ends the promotion, audited.
    alias_set_routes(actor=officer.user, alias=alias, routes=[(candidate, 100)], reason="別の変更")
    promotion = promotion_rollback(actor=officer.user, promotion=promotion, reason="戻す")
    assert promotion.state == PromotionState.ENDED
    assert _events(promotion.pk)[-1].action == "evaluation.promotion.ended"

    # A rejected proposal: audited as the approval step with state "rejected".
    second = promotion_start(actor=officer.user, alias=alias, deployment=external, percent=10, reason="r2")
    assert second.change_request is not None
    change_request_reject(actor=officer2.user, change_request=second.change_request, note="不可")
    second = promotion_check(promotion=second)
    assert second.state == PromotionState.REJECTED
    rejected = _events(second.pk)[-1]
    assert rejected.action == "evaluation.promotion.approval" and rejected.data["state"] == "rejected"
