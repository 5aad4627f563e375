"""Router: allowlist, classification gate, canary weights, stickiness, health, failover."""

# ruff: noqa: S311  (seeded generators make the weighted pick reproducible; not security)

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation

from apps.registry import services
from apps.registry.breaker import CircuitBreaker, breaker
from apps.registry.providers.base import ChatRequest, UpstreamInterrupted
from apps.registry.router import AllUpstreamsFailed, RouteRefused, allowed_aliases, plan_route, stream_chat
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream, closed_port_url
from tests.support.registry import Registered, Upstream, register_alias

# Planning never connects; a loopback URL passes the test settings' egress allowlist.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def japanese() -> Iterator[None]:
    """Messages are asserted in Japanese (the default), whatever an earlier test activated."""
    with translation.override("ja"):
        yield


@pytest.fixture(autouse=True)
def clean_router_state() -> Iterator[None]:
    reset_for_tests()
    breaker.reset()
    yield
    reset_for_tests()
    breaker.reset()


def make_alias(upstreams: list[Upstream], *, grant: list[Any], model_clearance: int = 3) -> Registered:
    return register_alias(
        upstreams=upstreams, ministries=grant, name="standard-chat", model_clearance=model_clearance
    )


def plan(ministry: Any, *, level: int = 1, sticky: str | None = None, alias: str = "standard-chat") -> Any:
    with ministry_scope(ministry_id=ministry.pk):
        return plan_route(alias_name=alias, level=level, sticky_key=sticky)


def test_allowlist_refuses_other_ministry_like_unknown(ministries: Any) -> None:
    a, b = ministries
    make_alias([Upstream(NOWHERE, name="d1", weight=1)], grant=[a])
    assert plan(a).candidates[0].name == "d1"
    with pytest.raises(RouteRefused) as not_allowed:
        plan(b)
    with pytest.raises(RouteRefused) as unknown:
        plan(a, alias="no-such-alias")
    assert not_allowed.value.code == unknown.value.code == "model_not_found"
    assert not_allowed.value.status == 404
    with ministry_scope(ministry_id=b.pk):
        assert allowed_aliases() == []
    with ministry_scope(ministry_id=a.pk):
        assert [x.name for x in allowed_aliases()] == ["standard-chat"]


def test_classification_gate_never_routes_above_clearance(ministries: Any) -> None:
    a, _ = ministries
    # The zone of "onprem" is cleared 3 but its model only 2: effective clearance 2.
    low = Upstream(NOWHERE, name="cloud", clearance=1, weight=50)
    high = Upstream(NOWHERE, name="onprem", clearance=3, weight=50)
    make_alias([low, high], grant=[a], model_clearance=2)
    for _i in range(50):
        assert {d.name for d in plan(a, level=2).candidates} == {"onprem"}
    with pytest.raises(RouteRefused) as refused:
        plan(a, level=3)
    assert refused.value.code == "classification"
    assert "機密性3" in refused.value.message and "機密性2まで" in refused.value.message
    with ministry_scope(ministry_id=a.pk):
        assert allowed_aliases(level=3) == []
        assert len(allowed_aliases(level=2)) == 1


def test_canary_ten_percent_is_exact_with_a_seeded_generator(ministries: Any) -> None:
    a, _ = ministries
    stable = Upstream(NOWHERE, name="stable", weight=90)
    make_alias([stable, Upstream(NOWHERE, name="canary", weight=10)], grant=[a])
    n = 2000
    with ministry_scope(ministry_id=a.pk):
        rng = random.Random(20261130)
        counts = Counter(
            plan_route(alias_name="standard-chat", level=1, rng=rng).candidates[0].name for _ in range(n)
        )
    # One draw per pick: the canary gets exactly the draws that land in the top 10 % of the
    # weight line (stable 0–90, canary 90–100), counted here from an identically seeded generator.
    replay = random.Random(20261130)
    expected = sum(1 for _ in range(n) if replay.random() * 100 >= 90)
    assert counts == Counter({"canary": expected, "stable": n - expected})
    assert 150 <= expected <= 250  # and the seed is a typical one (Binomial(2000, 0.1): 200 ± 13)
    with ministry_scope(ministry_id=a.pk):
        sticky = Counter(
            plan_route(alias_name="standard-chat", level=1, sticky_key=f"conv:{i}").candidates[0].name
            for i in range(n)
        )
    # Sticky keys hash (SHA-256) to fixed points: deterministic, no generator involved.
    assert 133 <= sticky["canary"] <= 267, sticky


def test_weighted_pick_is_reproducible_and_follows_the_weights(ministries: Any) -> None:
    a, _ = ministries
    make_alias([Upstream(NOWHERE, name="w1", weight=1), Upstream(NOWHERE, name="w3", weight=3)], grant=[a])

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        with ministry_scope(ministry_id=a.pk):
            return [
                plan_route(alias_name="standard-chat", level=1, rng=rng).candidates[0].name
                for _ in range(400)
            ]

    assert run(7) == run(7)
    replay = random.Random(7)
    assert Counter(run(7))["w1"] == sum(1 for _ in range(400) if replay.random() * 4 < 1)


def test_retired_model_is_not_routable(ministries: Any) -> None:
    a, _ = ministries
    registered = make_alias(
        [Upstream(NOWHERE, name="current", weight=50), Upstream(NOWHERE, name="legacy", weight=50)], grant=[a]
    )
    legacy = registered.deployments[1]
    # The legacy deployment gets its own model, which procurement then retires.
    retired_model = services.model_save(
        actor=None,
        vendor=legacy.model.vendor,
        name="legacy-model",
        family="Legacy",
        version="1",
        license="Apache-2.0",
        context_window=4096,
        kind="chat",
        clearance=3,
        status="active",
    )
    services.deployment_save(actor=None, deployment=legacy, model=retired_model)
    reset_for_tests()
    assert {d.name for d in plan(a, level=1).candidates} == {"current", "legacy"}
    services.model_save(actor=None, model=retired_model, status="retired")
    reset_for_tests()
    for seed in range(50):
        with ministry_scope(ministry_id=a.pk):
            chosen = plan_route(alias_name="standard-chat", level=1, rng=random.Random(seed))
        assert [d.name for d in chosen.candidates] == ["current"]  # not even as a failover candidate
    # An alias served only by retired models is unavailable, and not offered.
    services.model_save(actor=None, model=registered.deployments[0].model, status="retired")
    reset_for_tests()
    with pytest.raises(RouteRefused) as refused:
        plan(a)
    assert refused.value.code == "no_deployment"
    with ministry_scope(ministry_id=a.pk):
        assert allowed_aliases(level=1) == []


def test_retired_model_cannot_get_new_traffic(ministries: Any) -> None:
    a, _ = ministries
    registered = make_alias([Upstream(NOWHERE, name="only", weight=100)], grant=[a])
    services.model_save(actor=None, model=registered.deployments[0].model, status="retired")
    (deployment,) = registered.deployments
    deployment.refresh_from_db()
    with pytest.raises(ValidationError, match="廃止"):
        services.alias_set_routes(actor=None, alias=registered.alias, routes=[(deployment, 100)], reason="x")


def test_sticky_conversation_keeps_its_deployment(ministries: Any) -> None:
    a, _ = ministries
    make_alias(
        [Upstream(NOWHERE, name="one", weight=50), Upstream(NOWHERE, name="two", weight=50)], grant=[a]
    )
    for conv in range(20):
        names = {plan(a, sticky=f"conv:{conv}").candidates[0].name for _ in range(10)}
        assert len(names) == 1


def test_swap_and_rollback_take_effect_without_restart(
    ministries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, _ = ministries
    registered = make_alias(
        [Upstream(NOWHERE, name="old"), Upstream(NOWHERE, name="new", weight=0)], grant=[a]
    )
    alias, (old, new) = registered.alias, registered.deployments
    assert plan(a).candidates[0].name == "old"
    with django_capture_on_commit_callbacks(execute=True):
        services.alias_set_routes(actor=None, alias=alias, routes=[(old, 0), (new, 100)], reason="promote")
    assert {plan(a).candidates[0].name for _ in range(20)} == {"new"}
    with django_capture_on_commit_callbacks(execute=True):
        revision = services.alias_rollback(actor=None, alias=alias)
    assert revision.number == 3 and revision.rollback_of is not None and revision.rollback_of.number == 1
    assert {plan(a).candidates[0].name for _ in range(20)} == {"old"}


def test_open_circuit_is_skipped_but_kept_as_last_resort(ministries: Any) -> None:
    a, _ = ministries
    d1, _d2 = make_alias(
        [Upstream(NOWHERE, name="d1", weight=100), Upstream(NOWHERE, name="d2", weight=1)], grant=[a]
    ).deployments
    for _i in range(3):
        breaker.failure(d1.pk)
    candidates = [d.name for d in plan(a).candidates]
    assert candidates == ["d2", "d1"]


def test_circuit_breaker_half_open_probe() -> None:
    cb = CircuitBreaker(threshold=2, open_seconds=0.05)
    cb.failure(1)
    assert cb.allow(1)
    cb.failure(1)
    assert not cb.allow(1)
    import time

    time.sleep(0.06)
    assert cb.allow(1), "half-open: one probe passes"
    assert not cb.allow(1), "only one probe at a time"
    cb.failure(1)
    assert not cb.allow(1), "failed probe re-opens"
    time.sleep(0.06)
    assert cb.allow(1)
    cb.success(1)
    assert cb.allow(1) and cb.allow(1)


def _stream(p: Any) -> list[Any]:
    async def run() -> list[Any]:
        return [
            item async for item in stream_chat(p, ChatRequest(messages=[{"role": "user", "content": "hi"}]))
        ]

    return asyncio.run(run())


@pytest.mark.parametrize("failure", ["refused", "500", "slow_first"])
def test_failover_before_first_token(ministries: Any, failure: str, settings: Any) -> None:
    a, _ = ministries
    settings.GENNAI_UPSTREAM_FIRST_TOKEN_TIMEOUT = 1.0
    with (
        FakeUpstream(mode="ok", word="good") as good,
        FakeUpstream(mode="status" if failure == "500" else "slow_first", status=500, first_delay=3) as bad,
    ):
        bad_url = closed_port_url() if failure == "refused" else bad.url
        primary = Upstream(bad_url, name="primary", weight=1000)
        make_alias([primary, Upstream(good.url, name="backup", weight=1)], grant=[a])
        p = plan(a)
        assert p.candidates[0].name == "primary"
        chunks = _stream(p)
    assert {dep.name for dep, _c in chunks} == {"backup"}
    assert "".join(c.delta for _d, c in chunks).startswith("good0")


def test_drop_mid_stream_is_not_failed_over(ministries: Any) -> None:
    a, _ = ministries
    with FakeUpstream(mode="drop", drop_after=2) as dropping, FakeUpstream(mode="ok") as good:
        make_alias(
            [Upstream(dropping.url, name="drop", weight=1000), Upstream(good.url, name="ok", weight=1)],
            grant=[a],
        )
        with pytest.raises(UpstreamInterrupted):
            _stream(plan(a))
        assert good.requests == 0, "after the first token there is no failover"


def test_all_down_fails_fast(ministries: Any) -> None:
    a, _ = ministries
    with FakeUpstream(mode="status", status=503) as down:
        make_alias(
            [Upstream(closed_port_url(), name="x", weight=1), Upstream(down.url, name="y", weight=1)],
            grant=[a],
        )
        with pytest.raises(AllUpstreamsFailed):
            _stream(plan(a))
