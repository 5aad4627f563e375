"""The PostgreSQL backend's hybrid score (apps.search.fusion.score_fuse), without a database."""

from __future__ import annotations

from apps.search.base import rrf_fuse
from apps.search.fusion import TF_SATURATION, lexical_coverage, score_fuse, word_weight
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


def test_a_word_the_passage_keeps_repeating_counts_more_but_saturates() -> None:
    """BM25's term-frequency part: a passage about 命令 names it again and again; a table row once."""
    assert word_weight(0) == 0.0 and word_weight(1) == 1.0
    assert 1.0 < word_weight(2) < word_weight(4) < 1.0 + TF_SATURATION
    assert word_weight(1000) < 1.0 + TF_SATURATION
    words = [frozenset({"出張"}), frozenset({"命令", "syn1241"})]
    rule = " ".join(index_terms("第二条（旅行命令）\n旅行は、所属長が発する旅行命令に基づいて行う。"))
    row = " ".join(index_terms("令和6年10月8日 | 謝金 | 旅費 | 500 | 現地調査の出張が増加したため"))
    # Plain coverage ties them (one of the two words each); term frequency does not.
    # (saturation 0: every present word counts 1, however often: plain coverage)
    assert lexical_coverage(words, rule, saturation=0.0) == 0.5
    assert lexical_coverage(words, row, saturation=0.0) == 0.5
    assert lexical_coverage(words, rule) > lexical_coverage(words, row) == 0.5
    scores = score_fuse(
        query_words=words,
        similarity={1: 0.826, 2: 0.835},
        stored_tokens={1: rule, 2: row},
        lexical_weight=0.06,
    )
    assert _order(scores) == [1, 2]
    # A synonym group and its form are one word: counted once per occurrence, not twice.
    assert lexical_coverage([frozenset({"命令", "syn1241"})], "命令 syn1241") == 1.0


def test_question_words_are_not_query_words() -> None:
    """The answer says 所属長 or 三日前, never 誰 or 何日: question words would only dilute coverage."""
    forms = {form for word in query_word_groups("出張の命令は誰が出すのですか") for form in word}
    assert "誰" not in forms and {"出張", "命令"} <= forms
    for question, asked in [
        ("旅行命令は出発の何日前までに出しますか", {"何日", "何"}),
        ("アクセスログはどれくらいの期間残しますか", {"どれ"}),
        ("台風で出張できないときはどうすればいいですか", {"どう"}),
        ("謝金から旅費へ予算を回したのはなぜですか", {"何故"}),
        ("この旅費の規程はいつから適用されていますか", {"此の", "いつ"}),
    ]:
        forms = {form for word in query_word_groups(question) for form in word}
        assert not forms & asked, question
        assert forms, question
    # 日 of 何日 stays (the answer's 三日 has it).
    assert any("日" in word for word in query_word_groups("何日前までですか"))
    # A query of question words only keeps them: the lexical leg still has words to look for.
    assert {form for word in query_word_groups("誰がいつどこで") for form in word} >= {"誰", "いつ", "どこ"}
