"""Hybrid fusion of the lexical and vector legs (PostgreSQL backend; see :func:`score_fuse`).

Pure functions over the candidates a backend fetched: no database, no client, so
tests check the ranking rules directly (apps/search/tests/test_fusion.py).
"""

from __future__ import annotations

from collections.abc import Sequence


def score_fuse(
    *,
    query_words: Sequence[frozenset[str]],
    similarity: dict[int, float],
    stored_tokens: dict[int, str],
    lexical_weight: float,
) -> dict[int, float]:
    """Hybrid score of each candidate: cosine similarity + ``lexical_weight`` × word coverage.

    Coverage is the share of the query's distinct content words present in the
    candidate's stored terms, a word counting as present when its form or one of
    its Sudachi synonym groups is (:func:`query_word_groups`; マイカー covers a
    passage that says 自家用車). Why not RRF: RRF counts only ranks, so a chunk
    that both legs list (lexically because it shares one common word such as 旅費
    or 使う) beats the vector leg's clear first even when the lexical match is
    weak; on the retrieval-quality corpus (docs/documents.md) RRF put the answer
    first for 29 of 36 questions, this fusion for 32. A lexical-only candidate
    (outside the vector leg's depth) gets the lowest similarity the leg returned,
    an upper bound of its own.
    """
    floor = min(similarity.values())
    scores: dict[int, float] = {}
    for key, stored in stored_tokens.items():
        terms = set((stored or "").split())
        found = sum(1 for word in query_words if not word.isdisjoint(terms))
        coverage = found / len(query_words) if query_words else 0.0
        scores[key] = similarity.get(key, floor) + lexical_weight * coverage
    return scores
