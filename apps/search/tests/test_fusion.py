"""The PostgreSQL backend's hybrid score (apps.search.fusion.score_fuse), without a database."""

from __future__ import annotations

from apps.search.base import rrf_fuse
from apps.search.fusion import score_fuse
from apps.search.postgres import tsquery_text
from apps.search.tokenize import index_terms, query_word_groups, tokens


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
        query_words=[frozenset({"出張"}), frozenset({"手続き"})],
        similarity=similarity,
        stored_tokens=stored,
        lexical_weight=0.06,
    )
    assert _order(scores) == [1, 2, 3]


def test_coverage_decides_between_equally_similar_chunks_and_lexical_only_ones_count() -> None:
    similarity = {1: 0.85, 2: 0.85}
    stored = {1: "宿泊 料", 2: "宿泊 料 上限 東京", 3: "上限 東京 宿泊 料"}  # 3: lexical leg only
    scores = score_fuse(
        query_words=[frozenset({"東京"}), frozenset({"宿泊"}), frozenset({"上限"})],
        similarity=similarity,
        stored_tokens=stored,
        lexical_weight=0.06,
    )
    assert scores[2] > scores[1]
    # A candidate the vector leg did not return gets its lowest similarity, not zero.
    assert abs(scores[3] - (0.85 + 0.06)) < 1e-9
    assert _order(scores)[0] in (2, 3) and _order(scores)[-1] == 1


def test_no_query_words_means_vector_order() -> None:
    similarity = {1: 0.7, 2: 0.9, 3: 0.8}
    scores = score_fuse(
        query_words=[],
        similarity=similarity,
        stored_tokens={k: "" for k in similarity},
        lexical_weight=0.06,
    )
    assert _order(scores) == [2, 3, 1]


def test_a_synonym_covers_the_query_word_and_is_searched_for() -> None:
    """Sudachi synonym groups: the question says マイカー, the rule says 自家用車."""
    passage = "公共交通機関のない地域に限り、自家用車の使用を認める。"
    [car, trip] = query_word_groups("マイカーで出張できますか")
    assert "自家用車" not in tokens("マイカーで出張できますか")
    assert not car.isdisjoint(index_terms(passage)) and trip.isdisjoint(index_terms(passage))
    assert any(f"'{term}'" in tsquery_text("マイカー") for term in car if term.startswith("syn"))
    scores = score_fuse(
        query_words=[car, trip],
        similarity={1: 0.80, 2: 0.80},
        stored_tokens={
            1: " ".join(index_terms(passage)),
            2: " ".join(index_terms("日当は二千二百円とする。")),
        },
        lexical_weight=0.06,
    )
    assert abs(scores[1] - (0.80 + 0.03)) < 1e-9 and scores[2] == 0.80
    # Words only (no synonym terms) is what relevance checks count.
    assert not any(t.startswith("syn") for t in tokens(passage))
