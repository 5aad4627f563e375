"""Scoring an answer against a task: exact, contains, character-level F1, and the LLM judge's reply.

Japanese has no spaces between words, so word-level F1 is meaningless for it;
character-level F1 (precision and recall over the multisets of characters,
after NFKC normalisation and removing whitespace) is the usual reference-match
measure for Japanese QA (e.g. JSQuAD in JGLUE).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC (full-width ASCII → half-width, etc.) and no whitespace at all."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text or ""))


def exact(output: str, reference: str) -> float:
    return 1.0 if normalise(output) == normalise(reference) else 0.0


def contains(output: str, reference: str) -> float:
    """1 if the normalised reference occurs in the normalised output (an empty reference never does)."""
    ref = normalise(reference)
    return 1.0 if ref and ref in normalise(output) else 0.0


def char_f1(output: str, reference: str) -> float:
    """Harmonic mean of character precision and recall over multisets (0 when either is empty)."""
    predicted, gold = Counter(normalise(output)), Counter(normalise(reference))
    overlap = sum((predicted & gold).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(predicted.values())
    recall = overlap / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


REFERENCE_METRICS = {"exact": exact, "contains": contains, "char_f1": char_f1}

# Judge replies: prefer an explicit "score: N" / "評価: N" / "N/5" / "N点"; a lone digit 1–5 otherwise.
_LABELLED = re.compile(
    r"(?:score|rating|評価|点数|スコア)\s*[:：=は]?\s*\**\s*([1-5])(?![0-9])", re.IGNORECASE
)
_OUT_OF_FIVE = re.compile(r"(?<![0-9])([1-5])\s*(?:/|／|out of)\s*5(?![0-9])", re.IGNORECASE)
_POINTS = re.compile(r"(?<![0-9])([1-5])\s*点")
_LONE = re.compile(r"(?<![0-9.])([1-5])(?![0-9.])")


def parse_judge_score(reply: str) -> int | None:
    """The 1–5 score in a judge's reply, or None if it has no unambiguous one.

    Full-width digits are folded by NFKC first. Labelled forms win; a reply
    with only bare digits counts only if they all agree (``"3"`` yes, ``"2 or 4"`` no).
    """
    text = unicodedata.normalize("NFKC", reply or "")
    for pattern in (_LABELLED, _OUT_OF_FIVE, _POINTS):
        found = pattern.findall(text)
        if found:
            return int(found[-1])
    lone = set(_LONE.findall(text))
    if len(lone) == 1:
        return int(lone.pop())
    return None


JUDGE_PROMPT = (
    "あなたは回答の品質を評価する審査員です。以下の評価基準に従い、回答を1〜5の整数で採点してください。"
    "最後の行に「評価: N」の形式で点数だけを書いてください。\n\n"
    "# 評価基準\n{rubric}\n\n# 質問\n{input}\n\n# 参照解答\n{reference}\n\n# 回答\n{output}\n"
)


def judge_prompt(*, rubric: str, input: str, reference: str, output: str) -> str:
    return JUDGE_PROMPT.format(
        rubric=rubric or "正確さ・有用さ・日本語の自然さ",
        input=input,
        reference=reference or "（なし）",
        output=output,
    )
