"""Router: allowlist, classification gate, canary weights, stickiness, health, failover."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from apps.registry import services
from apps.registry.breaker import CircuitBreaker, breaker
from apps.registry.models import Alias, Deployment
from apps.registry.providers.base import ChatRequest, UpstreamInterrupted
from apps.registry.router import AllUpstreamsFailed, RouteRefused, allowed_aliases, plan_route, stream_chat
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream, closed_port_url


@pytest.fixture(autouse=True)
def clean_router_state() -> Iterator[None]:
    reset_for_tests()
    breaker.reset()
    yield
    reset_for_tests()
    breaker.reset()


def make_deployment(name: str, url: str, *, clearance: int = 2, model_clearance: int = 3) -> Deployment:
    vendor = services.vendor_save(actor=None, name=f"vendor-{name}")
    model = services.model_save(
        actor=None,
        vendor=vendor,
        name=f"model-{name}",
        family="F",
        version=name,
        license="x",
        context_window=4096,
        kind="chat",
        clearance=model_clearance,
    )
    return services.deployment_save(
        actor=None, model=model, name=name, base_url=url, served_model_name="m", clearance=clearance
    )


def make_alias(
    routes: list[tuple[Deployment, int]], *, grant: list[Any], name: str = "standard-chat"
) -> Alias:
    alias = services.alias_create(
        actor=None, name=name, display_name_ja="標準チャット", display_name_en="Std"
    )
    services.alias_set_routes(actor=None, alias=alias, routes=routes, reason="initial")
    for ministry in grant:
        services.alias_grant(actor=None, ministry=ministry, alias=alias)
    reset_for_tests()
    return alias


def plan(ministry: Any, *, level: int = 1, sticky: str | None = None, alias: str = "standard-chat") -> Any:
    with ministry_scope(ministry_id=ministry.pk):
        return plan_route(alias_name=alias, level=level, sticky_key=sticky)


def test_allowlist_refuses_other_ministry_like_unknown(ministries: Any) -> None:
    a, b = ministries
    make_alias([(make_deployment("d1", "http://x"), 1)], grant=[a])
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
    low = make_deployment("cloud", "http://cloud", clearance=1)
    high = make_deployment("onprem", "http://onprem", clearance=3, model_clearance=2)  # model caps it at 2
    make_alias([(low, 50), (high, 50)], grant=[a])
    for _i in range(50):
        assert {d.name for d in plan(a, level=2).candidates} == {"onprem"}
    with pytest.raises(RouteRefused) as refused:
        plan(a, level=3)
    assert refused.value.code == "classification"
    assert "機密性3" in refused.value.message and "機密性2まで" in refused.value.message
    with ministry_scope(ministry_id=a.pk):
        assert allowed_aliases(level=3) == []
        assert len(allowed_aliases(level=2)) == 1


def test_canary_ten_percent_within_statistical_bounds(ministries: Any) -> None:
    a, _ = ministries
    stable, canary = make_deployment("stable", "http://s"), make_deployment("canary", "http://c")
    make_alias([(stable, 90), (canary, 10)], grant=[a])
    n = 2000
    with ministry_scope(ministry_id=a.pk):
        counts = Counter(plan_route(alias_name="standard-chat", level=1).candidates[0].name for _ in range(n))
    # Binomial(2000, 0.1): mean 200, sd ≈ 13.4; ±5 sd is a bound that fails ~1 in 3 million runs.
    assert 133 <= counts["canary"] <= 267, counts
    with ministry_scope(ministry_id=a.pk):
        sticky = Counter(
            plan_route(alias_name="standard-chat", level=1, sticky_key=f"conv:{i}").candidates[0].name
            for i in range(n)
        )
    assert 133 <= sticky["canary"] <= 267, sticky


def test_sticky_conversation_keeps_its_deployment(ministries: Any) -> None:
    a, _ = ministries
    make_alias(
        [(make_deployment("one", "http://1"), 50), (make_deployment("two", "http://2"), 50)], grant=[a]
    )
    for conv in range(20):
        names = {plan(a, sticky=f"conv:{conv}").candidates[0].name for _ in range(10)}
        assert len(names) == 1


def test_swap_and_rollback_take_effect_without_restart(
    ministries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, _ = ministries
    old, new = make_deployment("old", "http://old"), make_deployment("new", "http://new")
    alias = make_alias([(old, 100)], grant=[a])
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
    d1, d2 = make_deployment("d1", "http://1"), make_deployment("d2", "http://2")
    make_alias([(d1, 100), (d2, 1)], grant=[a])
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
        primary, backup = make_deployment("primary", bad_url), make_deployment("backup", good.url)
        make_alias([(primary, 1000), (backup, 1)], grant=[a])
        p = plan(a)
        assert p.candidates[0].name == "primary"
        chunks = _stream(p)
    assert {dep.name for dep, _c in chunks} == {"backup"}
    assert "".join(c.delta for _d, c in chunks).startswith("good0")


def test_drop_mid_stream_is_not_failed_over(ministries: Any) -> None:
    a, _ = ministries
    with FakeUpstream(mode="drop", drop_after=2) as dropping, FakeUpstream(mode="ok") as good:
        make_alias(
            [(make_deployment("drop", dropping.url), 1000), (make_deployment("ok", good.url), 1)], grant=[a]
        )
        with pytest.raises(UpstreamInterrupted):
            _stream(plan(a))
        assert good.requests == 0, "after the first token there is no failover"


def test_all_down_fails_fast(ministries: Any) -> None:
    a, _ = ministries
    with FakeUpstream(mode="status", status=503) as down:
        make_alias(
            [(make_deployment("x", closed_port_url()), 1), (make_deployment("y", down.url), 1)], grant=[a]
        )
        with pytest.raises(AllUpstreamsFailed):
            _stream(plan(a))
