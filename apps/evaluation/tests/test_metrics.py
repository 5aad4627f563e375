from __future__ import annotations

import pytest

from apps.evaluation.metrics import char_f1, contains, exact, normalise, parse_judge_score


def test_normalise_folds_width_and_drops_whitespace() -> None:
    assert normalise(" ＡＢＣ　１２３\n東京 都 ") == "ABC123東京都"


def test_exact_and_contains() -> None:
    assert exact("東京都 ", "東京都") == 1.0
    assert exact("東京", "東京都") == 0.0
    assert contains("答えは東京都です。", "東京都") == 1.0
    assert contains("答えは大阪府です。", "東京都") == 0.0
    assert contains("anything", "") == 0.0


def test_char_f1_by_hand() -> None:
    # output 東京都庁 (4 chars), reference 東京都 (3): overlap 3 → P=3/4, R=1, F1=6/7.
    assert char_f1("東京都庁", "東京都") == pytest.approx(6 / 7)
    # multisets: 東東 vs 東 → overlap 1, P=1/2, R=1 → 2/3
    assert char_f1("東東", "東") == pytest.approx(2 / 3)
    assert char_f1("", "東京") == 0.0
    assert char_f1("大阪", "東京") == 0.0
    assert char_f1("ｔｏｋｙｏ", "tokyo") == 1.0


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("評価: 4", 4),
        ("理由：簡潔で正確。\n評価：５", 5),
        ("Score: 2/5", 2),
        ("I would give it 3 out of 5.", 3),
        ("3点です", 3),
        ("4", 4),
        ("**Rating**: 1", 1),
        ("2 or 4", None),
        ("評価できません", None),
        ("score: 7", None),
        ("", None),
    ],
)
def test_parse_judge_score(reply: str, score: int | None) -> None:
    assert parse_judge_score(reply) == score
