"""The PostgreSQL search statement against hostile query text (the tiered lexical leg, search 72b7815).

Query words become quoted tsquery lexemes inside parameters; words with quotes,
backslashes or tsquery operators must neither break the statement nor widen
what it finds (another workspace's or ministry's rows), and queries with no
usable word must return nothing rather than fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from apps.search.base import ChunkRecord
from apps.search.postgres import PostgresBackend
from apps.tenancy.scope import ministry_scope

pytestmark = pytest.mark.django_db

HOSTILE = [
    "'",
    "''",
    "\\",
    "\\'",
    "旅費' | '規程",
    "旅費 & !規程",
    "!旅費",
    "旅費:*",
    "(旅費 | 規程)",
    "'旅費':* | 'x'",
    "旅費' & 'secret') | ('x",
    "&|!():*<->",
    "<-> <2> 旅費",
    "   ",
    "",
    "誰",
    "何が",
    "。、！？",
    "a\x00b",
    " ".join(f"語{n}" for n in range(60)),
    "旅費 " * 300,
]


def _vector(n: int) -> tuple[float, ...]:
    return (1.0, float(n)) + (0.0,) * (settings.GENNAI_EMBEDDING_DIMENSIONS - 2)


def _chunk(ministry_id: int, chunk_id: int, workspace_id: int, text: str) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        ministry_id=ministry_id,
        workspace_id=workspace_id,
        document_id=1,
        ordinal=chunk_id,
        text=text,
        page_start=1,
        page_end=1,
        char_start=0,
        char_end=len(text),
        embedding=_vector(chunk_id),
    )


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_query_words_stay_inside_the_callers_workspace(
    ministries: tuple[Any, Any], query: str
) -> None:
    a, b = ministries
    backend = PostgresBackend()
    with ministry_scope(ministry_id=a.pk):
        backend.index_chunks(
            ministry_id=a.pk,
            chunks=[
                _chunk(a.pk, 1, 7, "旅費の規程。出張の旅費は所属長が命令する。"),
                _chunk(a.pk, 2, 8, "secret 旅費 規程 x 別のワークスペース。"),
            ],
        )
    with ministry_scope(ministry_id=b.pk):
        backend.index_chunks(ministry_id=b.pk, chunks=[_chunk(b.pk, 3, 7, "secret 旅費 規程 x 他府省庁。")])
    with ministry_scope(ministry_id=a.pk):
        lexical = backend.search(ministry_id=a.pk, workspace_ids=[7], query=query, query_embedding=None)
        both = backend.search(ministry_id=a.pk, workspace_ids=[7], query=query, query_embedding=_vector(2))
    # The statement ran (the vector leg always finds the caller's own row) ...
    assert (7, 1) in {(h.workspace_id, h.chunk_id) for h in both}, query
    # ... and nothing outside the caller's workspace came back from either leg.
    for hits in (lexical, both):
        assert {(h.workspace_id, h.chunk_id) for h in hits} <= {(7, 1)}, query
