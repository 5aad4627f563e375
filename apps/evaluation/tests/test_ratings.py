"""Bradley–Terry arena ratings: deterministic and equal to hand-computed results."""

from __future__ import annotations

import math

import pytest

from apps.evaluation.ratings import Vote, bradley_terry


def _votes(a: str, b: str, a_wins: int, b_wins: int, ties: int = 0) -> list[Vote]:
    return [Vote(a, b, "a")] * a_wins + [Vote(a, b, "b")] * b_wins + [Vote(a, b, "tie")] * ties


def test_two_candidates_match_the_closed_form() -> None:
    # Without a prior the MLE of p_A / p_B is wins_A / wins_B = 3: a gap of 400·log10(3) ≈ 190.85.
    top, bottom = bradley_terry(_votes("A", "B", 3, 1), prior=0)
    assert (top.candidate, bottom.candidate) == ("A", "B")
    assert top.rating - bottom.rating == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert top.rating + bottom.rating == pytest.approx(2000, abs=1e-6)  # geometric mean 1 → centred on 1000
    # SE of the log-ratio: 1 / sqrt(n · p(1-p)) with p = 3/4 and n = 4; half of it per side.
    se_gap = 1 / math.sqrt(4 * 0.75 * 0.25)
    assert top.high - top.rating == pytest.approx(
        400 / math.log(10) * 1.959963984540054 * se_gap / 2, rel=1e-6
    )


def test_ties_count_half_a_win() -> None:
    # 2 wins + 2 ties against 0 wins + 2 ties: 3 vs 1, the same as the 3:1 case above.
    with_ties = bradley_terry(_votes("A", "B", 2, 0, ties=2), prior=0)
    plain = bradley_terry(_votes("A", "B", 3, 1), prior=0)
    assert [r.rating for r in with_ties] == pytest.approx([r.rating for r in plain])


def test_three_candidates_satisfy_the_likelihood_equations() -> None:
    votes = _votes("A", "B", 6, 4) + _votes("B", "C", 7, 3) + _votes("A", "C", 8, 2)
    ratings = {r.candidate: r for r in bradley_terry(votes, prior=0)}
    p = {name: r.strength for name, r in ratings.items()}
    wins = {"A": 14, "B": 11, "C": 5}
    n = {("A", "B"): 10, ("B", "C"): 10, ("A", "C"): 10}
    # At the MLE: observed wins = expected wins, for every candidate (Zermelo's equations).
    for name in p:
        expected = sum(
            games * p[name] / (p[name] + p[other])
            for (x, y), games in n.items()
            for other in ([y] if x == name else [x] if y == name else [])
        )
        assert expected == pytest.approx(wins[name], abs=1e-6)
    assert [r.candidate for r in bradley_terry(votes, prior=0)] == ["A", "B", "C"]
    assert ratings["A"].wins == 14 and ratings["C"].comparisons == 20


def test_a_clean_sweep_stays_finite_with_the_prior_and_is_deterministic() -> None:
    votes = _votes("model-x", "model-y", 5, 0)
    first = bradley_terry(votes)
    assert first == bradley_terry(list(reversed(votes)))
    top, bottom = first
    assert top.candidate == "model-x" and math.isfinite(top.rating) and top.low < top.rating < top.high
    # 5.25 vs 0.25 virtual wins: ratio 21.
    assert top.rating - bottom.rating == pytest.approx(400 * math.log10(21), abs=1e-6)


def test_unknown_outcome_is_refused_and_self_votes_are_ignored() -> None:
    with pytest.raises(ValueError):
        bradley_terry([Vote("A", "B", "draw")])
    assert bradley_terry([Vote("A", "A", "a")]) == []
