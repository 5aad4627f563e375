"""Security review of the search readers: the LangChain retriever's re-checks."""

from __future__ import annotations

from typing import Any

import pytest

from apps.search import embeddings
from apps.search.retriever import WorkspaceRetriever
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
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


# --- A long query is searched by its beginning, never an error ---------------------------------


def _distinct_words(count: int) -> list[str]:
    """``count`` distinct two-kanji words (each its own Sudachi word), deterministic."""
    kanji = [chr(c) for c in range(0x4E00, 0x4E00 + 400)]
    return [a + b for a in kanji for b in kanji][:count]


def test_a_very_long_query_is_searched_by_its_beginning(staff_a: Actor, settings: Any) -> None:
    """AI apps pass up to 20,000 characters per field as the query.

    The PostgreSQL backend made one tsquery term per distinct word: ≈7,000 words
    ended in PostgreSQL's "stack depth limit exceeded" (an error page), ≈2,900 took
    seconds. Every reader now searches the first ``MAX_QUERY_CHARS`` characters
    (2,000, the bound of answers and /v1/search), in both backends.
    """
    from apps.search.base import MAX_QUERY_CHARS, get_backend

    settings.GENNAI_SEARCH_BACKEND = "postgres"
    words = _distinct_words(8000)
    text = f"{words[0]}について定める。"
    workspace, chunk = _indexed(staff_a.user, staff_a.ministry, name="長文", text=text)
    query = "、".join(words)
    assert len(query) > 20_000
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        hits = get_backend().search(
            ministry_id=staff_a.ministry.pk, workspace_ids=[workspace.pk], query=query, limit=5
        )
    assert [h.chunk_id for h in hits] == [chunk.pk]
    # Through the retriever (hybrid_search) as well.
    retriever = WorkspaceRetriever(
        actor_id=staff_a.user.pk, ministry_id=staff_a.ministry.pk, workspace_ids=[workspace.pk]
    )
    assert [d.metadata["chunk_id"] for d in retriever.invoke(query)] == [chunk.pk]
    assert MAX_QUERY_CHARS == 2000


def test_elasticsearch_bodies_carry_at_most_the_first_2000_characters() -> None:
    from apps.search.elastic import build_search_bodies

    query = "、".join(_distinct_words(8000))
    (lexical,) = build_search_bodies(
        ministry_id=1, workspace_ids=[1], query=query, query_embedding=None, depth=40, document_ids=None
    )
    sent = lexical["query"]["bool"]["must"][0]["multi_match"]["query"]
    assert sent == query[:2000]
