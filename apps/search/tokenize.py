"""Japanese tokenisation for the lexical leg (PostgreSQL backend): Sudachi, mode C, normalised forms.

Long units (mode C) are indexed together with their short units (mode A).
The same function tokenises chunks at index time and queries at search time,
so a query matches the forms it was indexed with (``附属`` / ``付属``,
``行なう`` / ``行う``, full/half width). Punctuation, symbols, whitespace,
particles, auxiliary verbs and dependent words (する, なる, こと) are dropped: they carry no meaning alone and
would make an OR query match nearly every chunk.

Synonyms: ``sudachidict-core`` gives each word the ids of its synonym groups
(the groups of the Sudachi synonym dictionary). :func:`index_terms` adds them as
terms ``syn<id>`` to what the PostgreSQL backend indexes and queries, so words
that differ but mean the same meet in the lexical leg: マイカー / 自家用車,
捨てる / 廃棄, 了承 / 承認, 飛行機 / 航空機, 保管 / 保存. :func:`query_word_groups`
gives each query word with its synonym terms, so a passage that uses a synonym
covers the word (the hybrid score's coverage). :func:`tokens` (words only) is what
relevance checks count.
"""

from __future__ import annotations

import threading
import unicodedata

from sudachipy import Dictionary, SplitMode

_DROPPED_POS = {"補助記号", "空白", "助詞", "助動詞"}
_local = threading.local()


def _dropped(pos: tuple[str, ...]) -> bool:
    # 非自立可能: する, なる, いる, ある, こと… (grammatical glue in nearly every sentence).
    return pos[0] in _DROPPED_POS or pos[1] == "非自立可能"


def _tokenizer() -> object:
    # A Sudachi tokenizer is not thread-safe: one per thread (the dictionary is shared).
    tokenizer = getattr(_local, "tokenizer", None)
    if tokenizer is None:
        tokenizer = _dictionary().tokenizer(mode=SplitMode.C)
        _local.tokenizer = tokenizer
    return tokenizer


_dict: Dictionary | None = None
_dict_lock = threading.Lock()


def _dictionary() -> Dictionary:
    global _dict
    with _dict_lock:
        if _dict is None:
            _dict = Dictionary(dict="core")
        return _dict


# A synonym group as a term: letters then digits, one word for PostgreSQL's 'simple'
# parser (never split, never equal to a number of the text).
SYNONYM_PREFIX = "syn"


def _word_groups(text: str) -> list[list[str]]:
    """Each content word of ``text``: ``[form, syn<id>, …]`` (duplicates kept, in order)."""
    return [group for group, _pos in _word_groups_with_pos(text)]


def _word_groups_with_pos(text: str) -> list[tuple[list[str], tuple[str, ...]]]:
    """:func:`_word_groups` with each word's Sudachi part of speech."""
    text = unicodedata.normalize("NFKC", text)
    result: list[tuple[list[str], tuple[str, ...]]] = []
    # Sudachi refuses inputs over ~49 KB: tokenise long texts in slices.
    for start in range(0, len(text), 8000):
        for morpheme in _tokenizer().tokenize(text[start : start + 8000]):  # type: ignore[attr-defined]
            if _dropped(morpheme.part_of_speech()):
                continue
            form = morpheme.normalized_form().strip().lower()
            if form:
                result.append(
                    (
                        [form, *(f"{SYNONYM_PREFIX}{g}" for g in morpheme.synonym_group_ids())],
                        morpheme.part_of_speech(),
                    )
                )
            # A long unit (出張旅費) also yields its short units (出張, 旅費), so
            # "出張の費用" still meets it: recall on compounds and jargon.
            parts = morpheme.split(SplitMode.A)
            if len(parts) > 1:
                for part in parts:
                    sub = part.normalized_form().strip().lower()
                    if sub and sub != form and not _dropped(part.part_of_speech()):
                        result.append(
                            (
                                [sub, *(f"{SYNONYM_PREFIX}{g}" for g in part.synonym_group_ids())],
                                part.part_of_speech(),
                            )
                        )
    return result


def tokens(text: str) -> list[str]:
    """Normalised content-word forms of ``text``, lower-cased, in order (duplicates kept)."""
    return [group[0] for group in _word_groups(text)]


def index_terms(text: str) -> list[str]:
    """What the lexical index holds for ``text`` (and a query looks for): words and synonym groups."""
    return [term for group in _word_groups(text) for term in group]


# Question words (normalised forms) that are not pronouns: どう, なぜ, いくら, どの, どんな…,
# and demonstratives that are not pronouns: この, その, こんな…
_INTERROGATIVES = frozenset(
    {"どう", "何故", "幾ら", "幾つ", "どの", "どんな", "どういう", "如何", "どれほど", "どれだけ"}
    | {"此の", "其の", "彼の", "こんな", "そんな", "あんな"}
)


def _asks(form: str, pos: tuple[str, ...]) -> bool:
    """A pronoun, question word or demonstrative: 誰, 何, どれ, これ; どう, なぜ; 何日, 何回; この.

    A question names what it asks for with one of these; the passage that answers
    names the thing itself (所属長, 三日前, 一年以上), never the question word.
    """
    return pos[0] == "代名詞" or form in _INTERROGATIVES or form.startswith("何")


def query_word_groups(text: str) -> list[frozenset[str]]:
    """The distinct content words of a query, each with its synonym terms (one set per word).

    Pronouns and question words (:func:`_asks`) are left out: the passage that
    answers 「出張の命令は誰が出すのですか」 says 所属長, not 誰, so counting 誰 as a
    query word would only dilute the coverage of the words an answer does share.
    A query of nothing but such words keeps them (the lexical leg then still has
    words to look for, exactly the terms :func:`index_terms` gives it).
    """
    words = _word_groups_with_pos(text)
    content = [group for group, pos in words if not _asks(group[0], pos)] or [group for group, _ in words]
    return list(dict.fromkeys(frozenset(group) for group in content))


def token_string(text: str) -> str:
    """``tokens`` space-joined, for ``to_tsvector('simple', …)``."""
    return " ".join(tokens(text))
