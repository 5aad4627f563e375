"""When the sources do not contain the answer, say so (issue 7): the relevance cut-off of answers.

The vector leg always returns nearest passages; an unrelated question must get
"資料に該当する記載が見つかりませんでした" with no model call, while a related one
still gets its sources.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.chat.models import Message, Status
from apps.documents.models import Document
from apps.search import relevance
from apps.search.base import SearchHit
from apps.search.selectors import hybrid_search
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

from .test_answers import _answer, _ask, docs, query_embedder  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def _hit(text: str, similarity: float | None = None) -> SearchHit:
    return SearchHit(
        chunk_id=1,
        document_id=1,
        workspace_id=1,
        ordinal=0,
        score=0.03,
        text=text,
        page_start=1,
        page_end=1,
        char_start=0,
        char_end=len(text),
        heading="",
        similarity=similarity,
    )


RULE = "旅費は実費を支給する。宿泊料の上限は一泊一万二千円とする。"


@pytest.mark.parametrize(
    ("question", "similarity", "kept"),
    [
        ("宿泊料の上限はいくらですか", None, True),  # most content words in the passage
        ("今日の東京の天気は", None, False),  # no shared content word
        ("宿泊する東京のホテルの天気と混雑は", None, False),  # one shared word out of many is not evidence
        ("ホテル代は何円まで", 0.86, True),  # a paraphrase: the embedding is close
        ("ホテル代は何円まで", 0.78, False),  # … but not close enough
        ("の は です", None, False),  # particles only: no content word at all
    ],
)
def test_evidence_needs_most_question_words_or_a_close_embedding(
    question: str, similarity: float | None, kept: bool
) -> None:
    hits = [_hit(RULE, similarity)]
    assert (relevance.evidence(question=question, hits=hits) == hits) is kept


def test_unrelated_question_is_answered_not_in_sources_without_a_model_call(
    staff_a: Actor,
    shared_workspace: Any,
    docs: dict[str, Document],  # noqa: F811
) -> None:
    question = "富士山の高さは何メートルですか"
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        nearest = hybrid_search(
            ministry_id=staff_a.ministry.pk,
            workspace_ids=[shared_workspace.pk],
            query=question,
            level=1,
            limit=6,
        )
    assert nearest  # retrieval alone does return passages: the cut-off is what drops them
    assert all(h.similarity is not None and -1.0 <= h.similarity <= 1.0 for h in nearest)
    with FakeUpstream(tokens=2, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        unrelated = _answer(staff_a, _ask(staff_a, shared_workspace, question, reg.alias.name))
        assert unrelated.sources == []
        client = Client()
        client.force_login(staff_a.user)
        page = client.get(f"/documents/answers/{unrelated.pk}/").content.decode()
        assert "資料に該当する記載が見つかりませんでした。" in page and "sse-connect" not in page
        assert "モデルには送っていません" in page
        with ministry_scope(ministry_id=staff_a.ministry.pk):
            message = Message.objects.get(pk=unrelated.message_id)
        assert (
            message.status == Status.COMPLETE
            and message.content == "資料に該当する記載が見つかりませんでした。"
        )
        assert fake.requests == 0

        # The same workspace still answers a question its documents do contain.
        related = _answer(
            staff_a, _ask(staff_a, shared_workspace, "宿泊料の上限はいくらですか", reg.alias.name)
        )
        assert related.sources and related.sources[0]["document_id"] == docs["pdf"].pk
