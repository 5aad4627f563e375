"""Fixtures: workspaces of two ministries, a deterministic embedder, eager Celery, a temporary media root."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.documents.models import Workspace, WorkspaceKind
from apps.documents.selectors import get_workspace_for_actor
from apps.documents.services import workspace_create
from apps.tenancy.scope import ministry_scope
from gennai.celery import app as celery_app
from tests.support.fixtures import make_user


def fake_vector(text: str) -> tuple[float, ...]:
    """A deterministic unit vector from character bigrams (no model needed)."""
    dims = django_settings.GENNAI_EMBEDDING_DIMENSIONS
    values = [0.0] * dims
    for i in range(len(text) - 1):
        values[int(hashlib.md5(text[i : i + 2].encode()).hexdigest(), 16) % dims] += 1.0  # noqa: S324
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the registry embedding call; returns the list of batch sizes it saw."""
    from apps.search import embeddings
    from apps.tenancy.scope import current_ministry_id

    calls: list[int] = []

    def embed_passages(*, ministry_id: int, texts: Sequence[str], level: int = 1) -> list[tuple[float, ...]]:
        assert current_ministry_id() == ministry_id  # called inside the ministry's scope
        calls.append(len(texts))
        return [fake_vector(t) for t in texts]

    monkeypatch.setattr(embeddings, "embed_passages", embed_passages)
    return calls


@pytest.fixture
def eager(settings: Any) -> Iterator[None]:
    """Tasks run in process when queued (the pipeline after commit, synchronously)."""
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False
        celery_app.conf.task_eager_propagates = False


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Any) -> Any:
    settings.GENNAI_DOCUMENTS_ROOT = tmp_path / "documents"
    return settings.GENNAI_DOCUMENTS_ROOT


@pytest.fixture
def colleague_a(staff_a: Any) -> Any:
    """Same ministry as staff_a, member of nothing."""
    return make_user("colleague-a", staff_a.ministry, ["staff"])


@pytest.fixture
def shared_workspace(staff_a: Any) -> Workspace:
    """Staff A's shared workspace, as the selector returns it (with ``actor_role``)."""
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        workspace = workspace_create(
            actor=staff_a.user, name="出張規程集", kind=WorkspaceKind.SHARED, level=1
        )
        return get_workspace_for_actor(actor=staff_a.user, workspace_id=workspace.pk)
