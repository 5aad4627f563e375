"""The deterministic 公用文 checks (『公用文作成の考え方』2022) over Sudachi tokens."""

from __future__ import annotations

import pytest

from apps.aiapps.kobun import apply_suggestions, check


def _pairs(text: str) -> list[tuple[str, str, str | None]]:
    return [(f.rule, f.original, f.suggestion) for f in check(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("参加者は十二人である。", [("number.kanji", "十二", "12")]),
        ("案は二つある。", []),  # 和語の数え方 stays in kanji
        ("一部を改正する。", []),  # 一部 is a word, not a quantity
        ("予算は１２０００円である。", [("number.width", "１２０００", "12,000")]),
        ("予算は15000円である。", [("number.grouping", "15000", "15,000")]),
        ("第12345号による。2024年度である。", []),  # identifiers and years are not grouped
        ("手続を行なった。", [("okurigana.verb", "行なっ", "行っ")]),
        ("作業が終る。", [("okurigana.verb", "終る", "終わる")]),
        ("取り扱いに注意する。", [("okurigana.noun", "取り扱い", "取扱い")]),
        (
            "申し込みの手続きをする。",
            [("okurigana.noun", "申し込み", "申込み"), ("okurigana.noun", "手続き", "手続")],
        ),
        ("書類を取り扱う。", []),  # the verb keeps its okurigana
        ("報告する事とする。", [("kana.formal", "事", "こと")]),
        ("会議の為に準備する。", [("kana.formal", "為", "ため")]),
        ("次の通りである。", [("kana.formal", "通り", "とおり")]),
        ("申請する時は届け出る。", [("kana.formal", "時", "とき")]),
        ("その時、決定した。", []),  # 時 meaning a point in time stays
        ("確認して下さい。", [("kana.formal", "下さい", "ください")]),
        ("提出出来る。", [("kana.formal", "出来る", "できる")]),
        ("但し、この限りでない。", [("kana.formal", "但し", "ただし")]),
        ("又、審査する。", [("kana.formal", "又", "また")]),
        ("AとB又はCとする。", []),
        ("AおよびBとする。", [("conjunction.kanji", "および", "及び")]),
        ("A及びB並びにCとする。", []),
        ("AとB並びにCとする。", [("conjunction.and_level", "並びに", "及び")]),
        ("A又はB若しくはCとする。", []),
        ("A若しくはBとする。", [("conjunction.or_level", "若しくは", "又は")]),
        ("規定によるが，例外がある。", [("punct.comma", "，", "、")]),
        ("ｶﾀｶﾅで書く。", [("kana.halfwidth", "ｶﾀｶﾅ", "カタカナ")]),
        ("円周率は3.14159である。", []),  # decimals are not grouped
    ],
)
def test_rules(text: str, expected: list[tuple[str, str, str | None]]) -> None:
    assert _pairs(text) == expected


def test_mixed_sentence_endings_flag_the_minority_without_rewriting() -> None:
    text = "本制度は次のとおりである。対象は職員とする。申請してください。"
    findings = [f for f in check(text) if f.rule == "ending.mixed"]
    assert [(f.original, f.suggestion) for f in findings] == [("申請してください。", None)]
    assert text[findings[0].start : findings[0].end] == "申請してください。"


def test_one_style_throughout_is_not_flagged() -> None:
    assert not [f for f in check("申請してください。書類を確認します。") if f.rule == "ending.mixed"]


def test_offsets_point_at_the_original_and_fixes_apply_together() -> None:
    text = "本件の取り扱いについて、会議の為に十二人が集まる事とする。\n但し、予算は１２０００円とする。"
    findings = check(text)
    for finding in findings:
        assert text[finding.start : finding.end] == finding.original
    assert apply_suggestions(text, findings) == (
        "本件の取扱いについて、会議のために12人が集まることとする。\nただし、予算は12,000円とする。"
    )
    # Applying twice changes nothing more: the corrected text is clean for these rules.
    assert check(apply_suggestions(text, findings)) == []


def test_findings_are_bilingual() -> None:
    [finding] = check("報告する事とする。")
    assert "仮名" in finding.message_ja and "kana" in finding.message_en
    assert finding.as_dict()["suggestion"] == "こと"
