"""Deterministic checks of official-document style (公用文) over Sudachi tokens.

The rules follow 『公用文作成の考え方』 (文化審議会建議, 2022) and the 送り仮名 /
漢字使用 conventions it keeps for official documents. They need no model, so
proofreading (校正) gives the same findings whatever model is behind the app;
the model then explains and rewrites (:mod:`apps.aiapps.builtin`).

Each :class:`Finding` carries character offsets into the checked text, the
rule id, a suggestion where one is certain enough to apply automatically, and
a message in Japanese and English. Rules (ids):

* ``number.kanji`` — 横書きでは算用数字: 漢数字 with a counter (十二人 → 12人);
  和語の数え方 (一つ, 二つ) and 万・億・兆 stay.
* ``number.width`` — 全角の英数字は半角に (１２ → 12, ＡＢＣ → ABC).
* ``number.grouping`` — 5 digits or more get a comma every 3 digits (12000円 →
  12,000円); not years, article/issue numbers or numbers with 第.
* ``okurigana.verb`` — 送り仮名の付け方 (行なう → 行う, 終る → 終わる, 少い → 少ない).
* ``okurigana.noun`` — 公用文の複合名詞は送り仮名を省く (取り扱い → 取扱い,
  手続き → 手続, 申し込み → 申込み); the verbs (取り扱う) are not touched.
* ``kana.formal`` — 形式名詞・補助動詞・一部の副詞・接続詞は仮名で (する事 → すること,
  の為 → のため, 次の通り → 次のとおり, して下さい → してください, 出来る → できる,
  但し → ただし, 尚 → なお, 又 → また).
* ``conjunction.kanji`` — 「及び」「並びに」「又は」「若しくは」は漢字で (および → 及び).
* ``conjunction.level`` — 「並びに」 only joins groups already joined by 「及び」, and
  「若しくは」 only inside a choice made with 「又は」 (per sentence).
* ``ending.mixed`` — one document, one style: です・ます and だ・である are not mixed
  (the minority sentences are flagged, no automatic rewrite).
* ``punct.comma`` — 読点は「、」, 句点は「。」 (「，」「．」 between Japanese text).
* ``kana.halfwidth`` — 半角カタカナは全角に.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

from sudachipy import Dictionary, SplitMode


@dataclass(frozen=True)
class Finding:
    """One place in the text that does not follow the 公用文 rules."""

    start: int
    end: int
    rule: str
    original: str
    suggestion: str | None  # None: a person (or the model) must rewrite it
    message_ja: str
    message_en: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "rule": self.rule,
            "original": self.original,
            "suggestion": self.suggestion,
            "message_ja": self.message_ja,
            "message_en": self.message_en,
        }


_local = threading.local()
_dictionary: Dictionary | None = None
_lock = threading.Lock()


def _tokenizer() -> Any:
    global _dictionary
    tokenizer = getattr(_local, "tokenizer", None)
    if tokenizer is None:
        with _lock:
            if _dictionary is None:
                _dictionary = Dictionary(dict="core")
        tokenizer = _dictionary.tokenizer(mode=SplitMode.C)
        _local.tokenizer = tokenizer
    return tokenizer


# 送り仮名 (verbs, adjectives): dictionary form → (wrong stem, right stem).
_OKURIGANA_VERB = {
    "行なう": ("行な", "行"),
    "表わす": ("表わ", "表"),
    "現わす": ("現わ", "現"),
    "現われる": ("現わ", "現"),
    "断わる": ("断わ", "断"),
    "賜わる": ("賜わ", "賜"),
    "終る": ("終", "終わ"),
    "変る": ("変", "変わ"),
    "起る": ("起", "起こ"),
    "当る": ("当", "当た"),
    "押える": ("押", "押さ"),
    "捕える": ("捕", "捕ら"),
    "聞える": ("聞", "聞こ"),
    "少い": ("少", "少な"),
    "危い": ("危", "危な"),
}
# 公用文: compound nouns drop their 送り仮名 (verbs keep them).
_OKURIGANA_NOUN = {
    "取り扱い": "取扱い",
    "申し込み": "申込み",
    "手続き": "手続",
    "取り組み": "取組",
    "受け付け": "受付",
    "問い合わせ": "問合せ",
    "打ち合わせ": "打合せ",
    "取り消し": "取消し",
    "払い戻し": "払戻し",
    "見積もり": "見積り",
    "売り上げ": "売上げ",
    "貸し付け": "貸付け",
    "繰り越し": "繰越し",
    "割り当て": "割当て",
    "申し出": "申出",
    "届け出": "届出",
    "立ち入り": "立入り",
    "呼び出し": "呼出し",
    "書き換え": "書換え",
    "引き渡し": "引渡し",
}
# Formal nouns in kanji after a modifier (verb, adjective, auxiliary, 連体詞, の).
_FORMAL_NOUN = {"事": "こと", "所": "ところ", "物": "もの", "為": "ため", "様": "よう", "通り": "とおり"}
# 「時」 only as a condition after a verb or auxiliary (その時 = a point in time stays).
_FORMAL_AFTER_VERB = {"時": "とき"}
# Auxiliary verbs after て / お・ご + noun, and words 公用文 writes in kana wherever they occur.
_AUXILIARY = {"下さる": "くださ", "頂く": "いただ", "致す": "いた"}  # surface stem replaced
_KANA_ALWAYS = {
    "出来る": ("出来", "でき"),
    "有る": ("有", "あ"),
    "宜しい": ("宜し", "よろし"),
    "予め": ("予め", "あらかじめ"),
    "殆ど": ("殆ど", "ほとんど"),
    "即ち": ("即ち", "すなわち"),
    "但し": ("但し", "ただし"),
    "尚": ("尚", "なお"),
    "且つ": ("且つ", "かつ"),
    "従って": ("従って", "したがって"),
    "迄": ("迄", "まで"),
}
_CONJUNCTION_KANA = {"および": "及び", "ならびに": "並びに", "または": "又は", "もしくは": "若しくは"}
_MODIFIER_POS = {"動詞", "形容詞", "助動詞", "連体詞"}
_BIG_UNITS = set("万億兆")

_FULLWIDTH_ALNUM = re.compile(r"[０-９Ａ-Ｚａ-ｚ]+")
_HALFWIDTH_KANA = re.compile(r"[\uff66-\uff9f]+")
_LONG_NUMBER = re.compile(r"(?<![\d,.第])(\d{5,})(?![\d,.])(?!\s*[年号条項])")
_JA = r"[\u3040-\u30ff\u3400-\u9fff]"
_FULLWIDTH_COMMA = re.compile(rf"(?<={_JA})[，．](?=\s*\S)")
_SENTENCE = re.compile(r"[^。！？\n]+[。！？]?")
_DESU_MASU = re.compile(r"(です|ます|ました|ません|でした|ましょう|ください|下さい)[」』）)]*[。！？]?$")
_DE_ARU = re.compile(
    r"(である|であった|であろう|だ|だった|ではない|とする|ものとする|とされる|られる|ない|た)[」』）)]*[。！？]?$"
)


def _msg(rule: str) -> tuple[str, str]:
    return _MESSAGES[rule]


_MESSAGES = {
    "number.kanji": ("横書きの公用文では数量を算用数字で書きます。", "Write quantities in Arabic numerals."),
    "number.width": ("英数字は半角で書きます。", "Write Latin letters and digits in half width."),
    "number.grouping": (
        "5桁以上の数は3桁ごとに「,」で区切ります。",
        "Group numbers of 5 digits or more with a comma every 3 digits.",
    ),
    "okurigana.verb": (
        "送り仮名の付け方に従っていません。",
        "The okurigana do not follow the standard rules.",
    ),
    "okurigana.noun": (
        "公用文では、この複合名詞の送り仮名を省きます。",
        "In official documents this compound noun is written without okurigana.",
    ),
    "kana.formal": (
        "形式名詞・補助動詞・接続詞などは仮名で書きます。",
        "Formal nouns, auxiliary verbs and conjunctions are written in kana.",
    ),
    "conjunction.kanji": (
        "「及び」「並びに」「又は」「若しくは」は漢字で書きます。",
        "Write 及び, 並びに, 又は and 若しくは in kanji.",
    ),
    "conjunction.and_level": (
        "「並びに」は「及び」で結んだ語句を更に大きく結ぶときに使います。この文では「及び」を使います。",
        "並びに joins groups already joined by 及び; use 及び here.",
    ),
    "conjunction.or_level": (
        "「若しくは」は「又は」で分けた選択肢の中を更に分けるときに使います。この文では「又は」を使います。",
        "若しくは subdivides a choice made with 又は; use 又は here.",
    ),
    "ending.mixed": (
        "文末の文体（です・ます体／だ・である体）が文書内で混在しています。",
        "The document mixes sentence-ending styles (desu/masu and da/de aru).",
    ),
    "punct.comma": ("読点は「、」、句点は「。」を使います。", "Use 、 and 。 as Japanese punctuation."),
    "kana.halfwidth": ("半角カタカナは全角で書きます。", "Write katakana in full width."),
}


def _finding(start: int, end: int, rule: str, original: str, suggestion: str | None) -> Finding:
    ja, en = _msg(rule)
    return Finding(start, end, rule, original, suggestion, ja, en)


def check(text: str) -> list[Finding]:
    """All findings in ``text``, ordered by position (overlaps removed, first rule wins)."""
    findings = _character_rules(text) + _token_rules(text) + _sentence_rules(text)
    findings.sort(key=lambda f: (f.start, -f.end))
    kept: list[Finding] = []
    last_end = -1
    for finding in findings:
        if finding.suggestion is None:
            kept.append(finding)  # advice on a whole sentence never hides a fix inside it
            continue
        if finding.start < last_end:
            continue
        kept.append(finding)
        last_end = finding.end
    return kept


def apply_suggestions(text: str, findings: list[Finding]) -> str:
    """``text`` with every finding that has a suggestion applied (others left for a person)."""
    out = text
    for finding in sorted(findings, key=lambda f: f.start, reverse=True):
        if finding.suggestion is not None and out[finding.start : finding.end] == finding.original:
            out = out[: finding.start] + finding.suggestion + out[finding.end :]
    return out


def _character_rules(text: str) -> list[Finding]:
    found: list[Finding] = []
    for match in _FULLWIDTH_ALNUM.finditer(text):
        half = unicodedata.normalize("NFKC", match.group())
        if half.isdigit() and len(half) >= 5:
            half = f"{int(half):,}"
        found.append(_finding(match.start(), match.end(), "number.width", match.group(), half))
    for match in _HALFWIDTH_KANA.finditer(text):
        found.append(
            _finding(
                match.start(),
                match.end(),
                "kana.halfwidth",
                match.group(),
                unicodedata.normalize("NFKC", match.group()),
            )
        )
    for match in _LONG_NUMBER.finditer(text):
        found.append(
            _finding(
                match.start(1), match.end(1), "number.grouping", match.group(1), f"{int(match.group(1)):,}"
            )
        )
    for match in _FULLWIDTH_COMMA.finditer(text):
        found.append(
            _finding(
                match.start(),
                match.end(),
                "punct.comma",
                match.group(),
                "、" if match.group() == "，" else "。",
            )
        )
    for kana, kanji in _CONJUNCTION_KANA.items():
        for match in re.finditer(kana, text):
            found.append(_finding(match.start(), match.end(), "conjunction.kanji", kana, kanji))
    return found


def _morphemes(text: str) -> list[tuple[int, int, str, tuple[str, ...], str, str]]:
    """(start, end, surface, part of speech, dictionary form, normalised form) per token, line by line."""
    result = []
    position = 0
    for line in text.splitlines(keepends=True):
        # Sudachi refuses very long inputs: lines over 4,000 characters are cut (rare in documents).
        for start in range(0, len(line), 4000):
            piece = line[start : start + 4000]
            for m in _tokenizer().tokenize(piece):
                offset = position + start
                result.append(
                    (
                        offset + m.begin(),
                        offset + m.end(),
                        m.surface(),
                        tuple(m.part_of_speech()),
                        m.dictionary_form(),
                        m.normalized_form(),
                    )
                )
        position += len(line)
    return result


def _token_rules(text: str) -> list[Finding]:
    found: list[Finding] = []
    tokens = _morphemes(text)
    for i, (start, end, surface, pos, dictionary, normalized) in enumerate(tokens):
        previous = tokens[i - 1] if i else None
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if pos[1] == "数詞" and normalized.isdigit() and not (set(surface) & _BIG_UNITS):
            if any("一" <= ch <= "龥" or ch in "〇" for ch in surface) and (
                following is not None and following[3][0] == "接尾辞" and following[2] != "つ"
            ):
                found.append(_finding(start, end, "number.kanji", surface, normalized))
            continue
        if dictionary in _OKURIGANA_VERB and pos[0] in ("動詞", "形容詞"):
            wrong, right = _OKURIGANA_VERB[dictionary]
            if surface.startswith(wrong):
                found.append(_finding(start, end, "okurigana.verb", surface, right + surface[len(wrong) :]))
            continue
        if pos[0] == "名詞" and surface in _OKURIGANA_NOUN:
            found.append(_finding(start, end, "okurigana.noun", surface, _OKURIGANA_NOUN[surface]))
            continue
        after_modifier = previous is not None and (
            previous[3][0] in _MODIFIER_POS or (previous[2] == "の" and previous[3][0] == "助詞")
        )
        if surface in _FORMAL_NOUN and after_modifier and pos[0] in ("名詞", "形状詞"):
            found.append(_finding(start, end, "kana.formal", surface, _FORMAL_NOUN[surface]))
            continue
        if (
            surface in _FORMAL_AFTER_VERB
            and previous is not None
            and previous[3][0] in ("動詞", "助動詞")
            and pos[0] == "名詞"
        ):
            found.append(_finding(start, end, "kana.formal", surface, _FORMAL_AFTER_VERB[surface]))
            continue
        if (
            dictionary in _AUXILIARY
            and previous is not None
            and (previous[2] == "て" or previous[3][0] == "名詞")
        ):
            stem = dictionary[:-1] if dictionary != "下さる" else "下さ"
            if surface.startswith(stem):
                found.append(
                    _finding(
                        start, end, "kana.formal", surface, _AUXILIARY[dictionary] + surface[len(stem) :]
                    )
                )
            continue
        if dictionary in _KANA_ALWAYS:
            wrong, right = _KANA_ALWAYS[dictionary]
            if surface.startswith(wrong):
                found.append(_finding(start, end, "kana.formal", surface, right + surface[len(wrong) :]))
            continue
        if surface == "無い" and pos[0] == "形容詞":
            found.append(_finding(start, end, "kana.formal", surface, "ない"))
            continue
        if surface == "又" and not (following is not None and following[2] == "は"):
            found.append(_finding(start, end, "kana.formal", surface, "また"))
    return found


def _sentence_rules(text: str) -> list[Finding]:
    found: list[Finding] = []
    styles: list[tuple[str, re.Match[str]]] = []
    for sentence in _SENTENCE.finditer(text):
        body = sentence.group()
        for word, needs, rule in (
            ("並びに", "及び", "conjunction.and_level"),
            ("若しくは", "又は", "conjunction.or_level"),
        ):
            if word in body and needs not in body:
                at = sentence.start() + body.index(word)
                found.append(_finding(at, at + len(word), rule, word, needs))
        stripped = body.strip()
        if not stripped.endswith(("。", "！", "？")):
            continue  # headings and list items have no sentence ending to compare
        if _DESU_MASU.search(stripped):
            styles.append(("desu", sentence))
        elif _DE_ARU.search(stripped):
            styles.append(("dearu", sentence))
    desu = [m for style, m in styles if style == "desu"]
    dearu = [m for style, m in styles if style == "dearu"]
    if desu and dearu:
        minority = desu if len(desu) < len(dearu) else dearu
        for match in minority:
            body = match.group().rstrip()
            found.append(_finding(match.start(), match.start() + len(body), "ending.mixed", body, None))
    return found
