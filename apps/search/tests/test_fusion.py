"""The PostgreSQL backend's hybrid score (apps.search.postgres.score_fuse), without a database."""

from __future__ import annotations

from apps.search.base import rrf_fuse
from apps.search.postgres import score_fuse


def _order(scores: dict[int, float]) -> list[int]:
    return sorted(scores, key=lambda key: (-scores[key], key))


def test_a_weak_shared_word_does_not_outrank_the_clear_vector_first() -> None:
    # Chunk 1 is the vector leg's clear first and shares no word; chunk 2 is a weaker
    # neighbour that shares one common word, so the lexical leg lists it too.
    similarity = {1: 0.90, 2: 0.83, 3: 0.80}
    stored = {1: "旅行 命令 所属長", 2: "予算 流用 出張", 3: "日当"}
    lexical = [2]
    assert _order(rrf_fuse([lexical, [1, 2, 3]]))[0] == 2  # RRF: listed twice wins
    scores = score_fuse(
        query_words={"出張", "手続き"}, similarity=similarity, stored_tokens=stored, lexical_weight=0.06
    )
    assert _order(scores) == [1, 2, 3]


def test_coverage_decides_between_equally_similar_chunks_and_lexical_only_ones_count() -> None:
    similarity = {1: 0.85, 2: 0.85}
    stored = {1: "宿泊 料", 2: "宿泊 料 上限 東京", 3: "上限 東京 宿泊 料"}  # 3: lexical leg only
    scores = score_fuse(
        query_words={"東京", "宿泊", "上限"}, similarity=similarity, stored_tokens=stored, lexical_weight=0.06
    )
    assert scores[2] > scores[1]
    # A candidate the vector leg did not return gets its lowest similarity, not zero.
    assert abs(scores[3] - (0.85 + 0.06)) < 1e-9
    assert _order(scores)[0] in (2, 3) and _order(scores)[-1] == 1


def test_no_query_words_means_vector_order() -> None:
    similarity = {1: 0.7, 2: 0.9, 3: 0.8}
    scores = score_fuse(
        query_words=set(),
        similarity=similarity,
        stored_tokens={k: "" for k in similarity},
        lexical_weight=0.06,
    )
    assert _order(scores) == [2, 3, 1]
