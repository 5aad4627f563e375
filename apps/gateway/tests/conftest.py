"""Fixtures of the /v1 tests: registry world, API keys, and a real ASGI server.

The SDK tests run against ``asgi_server``: uvicorn serving Django's ASGI handler
in a thread, i.e. the production stack. pytest-django's ``live_server`` is a WSGI
server, under which Django has to buffer an async streaming response completely
before sending it; that would hide exactly what these tests are about (SSE
relayed chunk by chunk, client disconnects, mid-stream failures).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from tests.support.asgi import AsgiServer
from tests.support.fake_upstream import FakeUpstream


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    from apps.gateway import keys, routing
    from apps.registry import snapshot
    from apps.registry.breaker import breaker

    snapshot.reset_for_tests()
    breaker.reset()
    keys.reset_for_tests()
    routing.reset_for_tests()
    yield
    snapshot.reset_for_tests()
    breaker.reset()
    keys.reset_for_tests()
    routing.reset_for_tests()


@dataclass
class World:
    ministry_a: Any
    ministry_b: Any
    primary: FakeUpstream  # behind standard-chat (and a-only, embed)
    secondary: FakeUpstream
    failing: FakeUpstream
    dropping: FakeUpstream
    aliases: dict[str, Any]
    deployments: dict[str, Any]


# FakeUpstream's constructor defaults, restored before each test.
_FAKE_DEFAULTS: dict[str, Any] = {
    "mode": "ok",
    "tokens": 5,
    "delay": 0.0,
    "status": 500,
    "first_delay": 2.0,
    "drop_after": 2,
    "model": "fake-model",
    "word": "tok",
}
_UPSTREAMS: dict[str, dict[str, Any]] = {
    "primary": {"model": "served-primary", "tokens": 5},
    "secondary": {"model": "served-secondary", "tokens": 3, "word": "alt"},
    "failing": {"mode": "status", "status": 500, "model": "served-failing"},
    "dropping": {"mode": "drop", "drop_after": 2, "tokens": 6, "model": "served-dropping"},
}


@pytest.fixture(scope="module")
def _upstream_servers() -> Iterator[dict[str, FakeUpstream]]:
    fakes = {name: FakeUpstream(**config) for name, config in _UPSTREAMS.items()}
    for fake in fakes.values():
        fake.__enter__()
    try:
        yield fakes
    finally:
        # shutdown() waits up to a poll interval (0.5 s) per server: stop them side by side.
        stoppers = [
            threading.Thread(target=fake.__exit__, args=(None, None, None)) for fake in fakes.values()
        ]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


@pytest.fixture
def upstreams(_upstream_servers: dict[str, FakeUpstream]) -> dict[str, FakeUpstream]:
    """The fake upstreams, reset to their configured behaviour for each test."""
    for name, fake in _upstream_servers.items():
        for attr, value in {**_FAKE_DEFAULTS, **_UPSTREAMS[name]}.items():
            setattr(fake, attr, value)
        fake.requests, fake.last_body = 0, {}
    return _upstream_servers


@pytest.fixture
def world(ministries: tuple[Any, Any], upstreams: dict[str, FakeUpstream]) -> World:
    """Aliases and grants:

    * ``standard-chat`` → primary (cleared 2): A and B
    * ``a-only`` → primary: A only
    * ``failover-chat`` → failing (500), then secondary (marked down, so it is second): A
    * ``drop-chat`` → dropping (cuts the stream after 2 chunks): A
    * ``embed`` (embedding) → primary: A
    """
    from apps.registry import services
    from apps.registry.snapshot import reset_for_tests

    a, b = ministries
    vendor = services.vendor_save(actor=None, name="Test Vendor")
    chat_model = services.model_save(
        actor=None,
        vendor=vendor,
        name="test-chat",
        family="Test",
        version="1",
        license="Apache-2.0",
        context_window=4096,
        kind="chat",
        clearance=3,
        status="active",
    )
    embed_model = services.model_save(
        actor=None,
        vendor=vendor,
        name="test-embed",
        family="TestEmbed",
        version="1",
        license="Apache-2.0",
        context_window=512,
        kind="embedding",
        clearance=3,
        status="active",
    )

    def deployment(name: str, fake: FakeUpstream, model: Any = chat_model, **extra: Any) -> Any:
        return services.deployment_save(
            actor=None,
            model=model,
            name=name,
            provider="openai_compatible",
            base_url=fake.url,
            served_model_name=fake.model,
            clearance=2,
            max_concurrency=4,
            **extra,
        )

    deps = {
        "primary": deployment("dep-primary", upstreams["primary"]),
        "secondary": deployment("dep-secondary", upstreams["secondary"], health="down"),
        "failing": deployment("dep-failing", upstreams["failing"]),
        "dropping": deployment("dep-dropping", upstreams["dropping"]),
        "embed": deployment("dep-embed", upstreams["primary"], model=embed_model),
    }
    aliases = {}
    for name, kind, routes, grantees in (
        ("standard-chat", "chat", [(deps["primary"], 100)], [a, b]),
        ("a-only", "chat", [(deps["primary"], 100)], [a]),
        ("failover-chat", "chat", [(deps["failing"], 100), (deps["secondary"], 100)], [a]),
        ("drop-chat", "chat", [(deps["dropping"], 100)], [a]),
        ("embed", "embedding", [(deps["embed"], 100)], [a]),
    ):
        alias = services.alias_create(
            actor=None,
            name=name,
            display_name_ja=f"{name}（日本語）",
            display_name_en=name.title(),
            kind=kind,
        )
        services.alias_set_routes(actor=None, alias=alias, routes=routes, reason="test")
        for ministry in grantees:
            services.alias_grant(actor=None, ministry=ministry, alias=alias)
        aliases[name] = alias
    reset_for_tests()
    return World(
        ministry_a=a,
        ministry_b=b,
        primary=upstreams["primary"],
        secondary=upstreams["secondary"],
        failing=upstreams["failing"],
        dropping=upstreams["dropping"],
        aliases=aliases,
        deployments=deps,
    )


@pytest.fixture
def make_key(world: World) -> Any:
    from django.utils import timezone

    from apps.gateway.services import api_key_create

    def make(ministry: Any = None, *, aliases: tuple[str, ...] = (), max_level: int = 2, **kw: Any) -> Any:
        return api_key_create(
            actor=None,
            ministry=ministry or world.ministry_a,
            name=kw.pop("name", "test system"),
            aliases=aliases,
            max_level=max_level,
            expires_at=kw.pop("expires_at", timezone.now() + timedelta(days=30)),
            **kw,
        )

    return make


@pytest.fixture(scope="module")
def _asgi_server_process() -> Iterator[AsgiServer]:
    """One server per module; its requests reach the database only while a test has it unblocked."""
    server = AsgiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def asgi_server(transactional_db: None, _asgi_server_process: AsgiServer) -> AsgiServer:
    """The ASGI server, with committed (transactional) test data visible to it."""
    return _asgi_server_process
