"""Registering test deployments and aliases through the registry services (shared by app tests)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apps.registry import snapshot
from apps.registry.models import Alias, Deployment
from apps.registry.services import (
    alias_create,
    alias_grant,
    alias_set_routes,
    deployment_save,
    model_save,
    vendor_save,
)

_seq = itertools.count(1)


@dataclass
class Upstream:
    """One deployment to register: where it is and what it may receive."""

    url: str
    clearance: int = 2
    weight: int = 100
    health: str = "unknown"
    provider: str = "openai_compatible"
    name: str | None = None
    served_model_name: str = "fake-model"


@dataclass
class Registered:
    alias: Alias
    deployments: list[Deployment]


def register_alias(
    *,
    upstreams: Sequence[Upstream],
    ministries: Sequence[Any] = (),
    name: str | None = None,
    display_name_ja: str = "標準チャット",
    display_name_en: str = "Standard chat",
    model_clearance: int = 3,
) -> Registered:
    """Vendor → model → deployments → alias (+routes) → grants, through the registry services."""
    n = next(_seq)
    vendor = vendor_save(actor=None, name=f"テストベンダー{n}")
    model = model_save(
        actor=None,
        vendor=vendor,
        name=f"test-model-{n}",
        family="Test",
        version=str(n),
        license="Apache-2.0",
        context_window=8192,
        kind="chat",
        clearance=model_clearance,
        status="active",
    )
    deployments = [
        deployment_save(
            actor=None,
            model=model,
            name=up.name or f"test-dep-{n}-{i}",
            provider=up.provider,
            base_url=up.url,
            served_model_name=up.served_model_name,
            clearance=up.clearance,
            health=up.health,
        )
        for i, up in enumerate(upstreams)
    ]
    alias = alias_create(
        actor=None,
        name=name or f"test-chat-{n}",
        display_name_ja=display_name_ja,
        display_name_en=display_name_en,
    )
    alias_set_routes(
        actor=None,
        alias=alias,
        routes=[(d, up.weight) for d, up in zip(deployments, upstreams, strict=True)],
        reason="test",
    )
    for ministry in ministries:
        alias_grant(actor=None, ministry=ministry, alias=alias)
    # Services invalidate on commit, which never comes inside a test transaction.
    snapshot.reset_for_tests()
    return Registered(alias=alias, deployments=deployments)
