"""Deployment health checks (Celery task against fake upstreams) and the /readyz inference check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.registry import services
from apps.registry.models import Deployment, HealthState
from apps.registry.providers.base import HealthResult, ProviderTarget
from apps.registry.providers.registry import reset_providers_for_tests
from apps.registry.router import plan_route
from apps.registry.snapshot import get_snapshot
from apps.registry.tasks import deployment_health_check_all
from apps.registry.tests.test_services import (  # the autouse fixture resets snapshot and breaker
    chosen,
    clean_registry_state,  # noqa: F401
    make_alias,
    make_deployment,
)
from apps.tenancy.scope import ministry_scope
from gennai.celery import app as celery_app
from tests.support.fake_upstream import FakeUpstream, closed_port_url

pytestmark = pytest.mark.django_db


def _state(deployment: Deployment) -> tuple[str, str]:
    deployment.refresh_from_db()
    return deployment.health, deployment.health_detail


def test_task_records_ok_500_and_closed_port(django_capture_on_commit_callbacks: Any) -> None:
    with FakeUpstream() as ok, FakeUpstream(mode="status", status=500) as broken:
        healthy = make_deployment("healthy", ok.url)
        failing = make_deployment("failing", broken.url)
        unreachable = make_deployment("unreachable", closed_port_url())
        disabled = make_deployment("disabled", broken.url, enabled=False)
        with django_capture_on_commit_callbacks(execute=True):
            states = deployment_health_check_all.apply().get()

    assert states == {healthy.pk: "healthy", failing.pk: "down", unreachable.pk: "down"}
    assert _state(healthy)[0] == HealthState.HEALTHY and _state(healthy)[1].endswith(" ms")
    assert _state(failing)[0] == HealthState.DOWN and "HTTP 500" in _state(failing)[1]
    assert _state(unreachable)[0] == HealthState.DOWN and "ConnectError" in _state(unreachable)[1]
    assert _state(disabled) == (HealthState.UNKNOWN, "")  # disabled deployments are not probed
    for deployment in (healthy, failing, unreachable):
        assert deployment.health_checked_at is not None

    snapshot = get_snapshot()  # the state change was published to the router
    assert snapshot.deployments[healthy.pk].healthy and not snapshot.deployments[failing.pk].healthy


def test_upstream_recovering_is_picked_up(django_capture_on_commit_callbacks: Any) -> None:
    with FakeUpstream(mode="status", status=503) as upstream:
        deployment = make_deployment("flaky", upstream.url)
        deployment_health_check_all.apply()
        assert _state(deployment)[0] == HealthState.DOWN
        upstream.mode = "ok"
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            deployment_health_check_all.apply()
    assert _state(deployment)[0] == HealthState.HEALTHY
    assert len(callbacks) == 1  # down → healthy bumps the snapshot once


def test_router_prefers_healthy_deployment_after_check(
    ministries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, _b = ministries
    with FakeUpstream() as ok, FakeUpstream(mode="status", status=500) as broken:
        good = make_deployment("good", ok.url)
        bad = make_deployment("bad", broken.url)
        make_alias([(good, 50), (bad, 50)], grant=[a])
        assert chosen(a) == {"good", "bad"}
        with django_capture_on_commit_callbacks(execute=True):
            deployment_health_check_all.apply()
    assert chosen(a) == {"good"}
    with ministry_scope(ministry_id=a.pk):  # the down one stays a failover candidate
        plan = plan_route(alias_name="standard-chat", level=1, sticky_key="x")
    assert [d.name for d in plan.candidates] == ["good", "bad"]


class _SlowProvider:
    kind = "slow"

    def __init__(self, target: ProviderTarget) -> None:
        self.target = target

    async def health(self) -> HealthResult:
        return HealthResult(ok=True, latency_ms=services.DEGRADED_LATENCY_MS + 500)

    async def aclose(self) -> None:
        pass


class _BrokenProvider(_SlowProvider):
    kind = "broken"

    async def health(self) -> HealthResult:  # violates the contract ("MUST NOT raise")
        raise RuntimeError("boom")


@pytest.fixture
def test_providers() -> Iterator[None]:
    reset_providers_for_tests({"slow": _SlowProvider, "broken": _BrokenProvider})  # type: ignore[dict-item]
    yield
    reset_providers_for_tests()


def test_slow_is_degraded_raising_plugin_and_missing_plugin_are_down(test_providers: None) -> None:
    slow, broken, missing = (make_deployment(n) for n in ("slow-one", "broken-one", "missing-one"))
    Deployment.objects.filter(pk=slow.pk).update(provider="slow")
    Deployment.objects.filter(pk=broken.pk).update(provider="broken")
    Deployment.objects.filter(pk=missing.pk).update(provider="not-installed")
    deployment_health_check_all.apply()
    assert _state(slow)[0] == HealthState.DEGRADED
    assert _state(broken) == (HealthState.DOWN, "RuntimeError")
    assert _state(missing)[0] == HealthState.DOWN and "not installed" in _state(missing)[1]


def test_beat_schedule_runs_the_task_every_30_seconds(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["registry-deployment-health"]
    assert entry["schedule"] == 30.0
    assert entry["task"] == deployment_health_check_all.name
    assert entry["task"] in celery_app.tasks


# --- /readyz -----------------------------------------------------------------------------------


def _inference(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    return response.status_code, response.json()["checks"]["inference"]


def test_readyz_ready_with_no_deployment_registered(client: Client) -> None:
    status, check = _inference(client)
    assert status == 200 and check["ok"] and check["detail"] == "none registered"


def test_readyz_inference_needs_one_enabled_deployment_not_down(client: Client) -> None:
    up = make_deployment("up")
    down = make_deployment("down")
    services.deployment_record_health(deployment=down, health=HealthState.DOWN)
    status, check = _inference(client)
    assert status == 200 and check["ok"] and check["detail"] == "1 of 2 deployments usable"

    services.deployment_record_health(deployment=up, health=HealthState.DOWN)
    status, check = _inference(client)
    # Reported (platform "degraded") but not unready: the web tier still serves everything else.
    assert status == 200 and check == {"ok": False, "error": "NoUsableDeployment", "ms": check["ms"]}
    assert client.get("/readyz").json()["status"] == "degraded"

    services.deployment_record_health(deployment=up, health=HealthState.DEGRADED)
    assert _inference(client)[0] == 200
    services.deployment_save(actor=None, deployment=up, enabled=False)
    assert _inference(client)[1]["ok"] is False
