"""Hybrid fusion of the lexical and vector legs (PostgreSQL backend; see :func:`score_fuse`).

Pure functions over the candidates a backend fetched: no database, no client, so
tests check the ranking rules directly (apps/search/tests/test_fusion.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# BM25's term-frequency saturation k1, as Elasticsearch's default similarity uses it (so a
# repeated word weighs alike on both backends): a word's second occurrence adds 0.375 of its
# first, the fourth 0.15, and no number of repeats counts more than 1 + k1 = 2.2 occurrences.
TF_SATURATION = 1.2


def word_weight(occurrences: int, *, saturation: float = TF_SATURATION) -> float:
    """How much a query word found ``occurrences`` times counts: 0 when absent, 1 once, at most 1 + k1.

    BM25's ``tf·(k1+1)/(tf+k1)``, scaled so that one occurrence counts 1 (the
    plain coverage of a passage that names each word once is unchanged).
    """
    if occurrences <= 0:
        return 0.0
    return occurrences * (saturation + 1) / (occurrences + saturation)


def lexical_coverage(
    query_words: Sequence[frozenset[str]], stored: str, *, saturation: float = TF_SATURATION
) -> float:
    """The mean :func:`word_weight` of the query's words in one candidate's stored terms (0 without words).

    A word's occurrences are those of its form or of one of its synonym groups,
    whichever the stored terms hold more often (``syn<id>`` terms follow every
    form that has them, so a form and its group are not counted twice).
    """
    if not query_words:
        return 0.0
    counts = Counter((stored or "").split())
    matched = sum(
        word_weight(max(counts[term] for term in word), saturation=saturation) for word in query_words if word
    )
    return matched / len(query_words)


def score_fuse(
    *,
    query_words: Sequence[frozenset[str]],
    similarity: dict[int, float],
    stored_tokens: dict[int, str],
    lexical_weight: float,
    saturation: float = TF_SATURATION,
) -> dict[int, float]:
    """Hybrid score of each candidate: cosine similarity + ``lexical_weight`` × word coverage.

    Coverage is the mean over the query's distinct content words of how often the
    candidate's stored terms hold the word (:func:`lexical_coverage`): 1 for a word
    named once, saturating towards 1 + k1 for a word the passage keeps repeating
    (BM25's term-frequency part, :data:`TF_SATURATION`), 0 when absent. A word
    counts as present when its form or one of its Sudachi synonym groups is
    (:func:`~apps.search.tokenize.query_word_groups`; マイカー covers a passage that
    says 自家用車); pronouns and question words (誰, 何, どう) are not query words.
    Why term frequency: a passage *about* a word names it again and again (第二条
    「旅行命令」: 命令 four times), while a table row that mentions a word in passing
    (「…現地調査の出張が増加したため」) names it once; plain coverage scored the two
    alike and left the order to the cosine. Why not RRF: RRF counts only ranks, so
    a chunk that both legs list (lexically because it shares one common word such
    as 旅費 or 使う) beats the vector leg's clear first even when the lexical match
    is weak (docs/documents.md, "Retrieval quality", for the measurements). A
    lexical-only candidate (outside the vector leg's depth) gets the lowest
    similarity the leg returned, an upper bound of its own.
    """
    floor = min(similarity.values())
    return {
        key: similarity.get(key, floor)
        + lexical_weight * lexical_coverage(query_words, stored, saturation=saturation)
        for key, stored in stored_tokens.items()
    }
