"""apps.registry.router.plan_deployment: one deployment, no failover, classification gate kept."""

from __future__ import annotations

from typing import Any

import pytest

from apps.registry.router import RouteRefused, plan_deployment
from apps.registry.services import deployment_save
from apps.registry.snapshot import reset_for_tests
from tests.support.registry import Upstream, register_alias


def test_plan_is_exactly_that_deployment(db: Any) -> None:
    registered = register_alias(
        upstreams=[
            Upstream("http://127.0.0.1:9", name="one", clearance=2),
            Upstream("http://127.0.0.1:9", name="two"),
        ]
    )
    one, two = registered.deployments
    plan = plan_deployment(deployment_id=two.pk, level=2)
    assert [d.name for d in plan.candidates] == ["two"]  # never the other route of the alias
    with pytest.raises(RouteRefused) as refused:
        plan_deployment(deployment_id=one.pk, level=3)
    assert refused.value.code == "classification"
    deployment_save(actor=None, deployment=one, enabled=False)
    reset_for_tests()
    with pytest.raises(RouteRefused) as refused:
        plan_deployment(deployment_id=one.pk, level=1)
    assert refused.value.code == "no_deployment"
    with pytest.raises(RouteRefused):
        plan_deployment(deployment_id=999_999, level=1)
