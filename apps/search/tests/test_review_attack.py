"""Security review of the search readers: the LangChain retriever's re-checks."""

from __future__ import annotations

from typing import Any

import pytest

from apps.search import embeddings
from apps.search.retriever import WorkspaceRetriever
from apps.tenancy.models import Membership
from tests.support.fixtures import Actor

from .test_retriever import _indexed


@pytest.fixture(autouse=True)
def _lexical(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(**_kwargs: Any) -> tuple[float, ...]:
        raise embeddings.EmbeddingUnavailable("no embedding alias in this test")

    monkeypatch.setattr(embeddings, "embed_query", unavailable)


def test_a_retriever_stops_when_the_actor_leaves_the_ministry(staff_a: Actor) -> None:
    """Leaving a ministry (its Keycloak group) ends every read of it, even through a retriever built before.

    Workspace member rows stay behind when a ministry membership is removed
    (the identity provider's sync removes only the membership), so the
    retriever must check the ministry membership itself.
    """
    workspace, chunk = _indexed(
        staff_a.user, staff_a.ministry, name="人事", text="懲戒処分の基準は人事課長が定める。"
    )
    retriever = WorkspaceRetriever(
        actor_id=staff_a.user.pk, ministry_id=staff_a.ministry.pk, workspace_ids=[workspace.pk]
    )
    assert [d.metadata["chunk_id"] for d in retriever.invoke("懲戒処分の基準")] == [chunk.pk]
    Membership.objects.filter(user=staff_a.user, ministry=staff_a.ministry).delete()
    assert retriever.invoke("懲戒処分の基準") == []
