"""Ministries, users and scopes for tests. Every fixture set has a second ministry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .embedding import embedding_server  # noqa: F401  (session fixture, apps/search + apps/documents)
from .idp import DevIdP, start_dev_idp
from .local_model import LocalModel, start_local_model


@dataclass
class Actor:
    user: Any
    ministry: Any


def make_user(username: str, ministry: Any, roles: list[str]) -> Any:
    from apps.accounts.models import User
    from apps.tenancy.models import Membership

    user = User.objects.create(username=username, subject=f"sub-{username}", display_name=username)
    Membership.objects.create(user=user, ministry=ministry, roles=roles)
    return user


@pytest.fixture
def ministries(db: None) -> tuple[Any, Any]:
    """デジタル庁 (A) and 総務省 (B)."""
    from apps.tenancy.models import Ministry

    a, _ = Ministry.objects.get_or_create(
        code="digital", defaults={"name_ja": "デジタル庁", "name_en": "Digital Agency"}
    )
    b, _ = Ministry.objects.get_or_create(
        code="soumu",
        defaults={"name_ja": "総務省", "name_en": "Ministry of Internal Affairs and Communications"},
    )
    return a, b


@pytest.fixture
def staff_a(ministries: tuple[Any, Any]) -> Actor:
    return Actor(user=make_user("staff-a", ministries[0], ["staff"]), ministry=ministries[0])


@pytest.fixture
def staff_b(ministries: tuple[Any, Any]) -> Actor:
    return Actor(user=make_user("staff-b", ministries[1], ["staff"]), ministry=ministries[1])


@pytest.fixture(scope="session")
def dev_idp() -> Iterator[DevIdP]:
    """The loopback Keycloak-shaped IdP, as its own process with its own database."""
    idp = start_dev_idp()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    """The real llama.cpp server with SmolLM2 (started once per session, ~2 s)."""
    model = start_local_model()
    try:
        yield model
    finally:
        model.stop()
