"""Bradley–Terry ratings of arena votes, with confidence intervals.

Model: candidate *i* has strength ``p_i > 0`` and beats *j* with probability
``p_i / (p_i + p_j)``. A tie (or "both bad") counts as half a win for each side,
as in LMSYS' Chatbot Arena. Strengths are the maximum-likelihood estimate found
by Hunter's MM iteration (Hunter 2004, *MM algorithms for generalized
Bradley–Terry models*), normalised to a geometric mean of 1, and reported on the
familiar Elo-like scale ``rating = 1000 + 400·log10(p)``.

Confidence intervals come from the observed Fisher information of the
log-strengths (the Hessian of the log-likelihood, with the first candidate's
log-strength fixed to remove the scale freedom, then re-centred): deterministic
for a given vote set, so reports and tests do not depend on a random bootstrap.

A candidate that won every comparison (or lost every one) has no finite
maximum-likelihood strength; a small prior of ``prior`` virtual ties against
every opponent it met keeps estimates finite (0.5 by default, documented in the
report), which is how rankings stay stable with few votes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Vote:
    """One comparison: ``winner`` is ``"a"``, ``"b"`` or ``"tie"`` (both bad counts as a tie)."""

    a: str
    b: str
    winner: str


@dataclass(frozen=True)
class Rating:
    candidate: str
    rating: float
    low: float  # 95 % interval
    high: float
    strength: float
    wins: float  # ties count half
    comparisons: int


def _scale(log_strength: float) -> float:
    return 1000.0 + 400.0 * log_strength / math.log(10)


def bradley_terry(
    votes: Iterable[Vote], *, prior: float = 0.5, tolerance: float = 1e-10, max_iterations: int = 10_000
) -> list[Rating]:
    """Ratings of every candidate that appears in ``votes``, best first (ties by name)."""
    wins: dict[tuple[str, str], float] = {}
    names: set[str] = set()
    for vote in votes:
        if vote.a == vote.b:
            continue  # a candidate against itself says nothing
        names.update((vote.a, vote.b))
        if vote.winner == "a":
            shares = (1.0, 0.0)
        elif vote.winner == "b":
            shares = (0.0, 1.0)
        elif vote.winner == "tie":
            shares = (0.5, 0.5)
        else:
            raise ValueError(f"unknown outcome {vote.winner!r}")
        wins[(vote.a, vote.b)] = wins.get((vote.a, vote.b), 0.0) + shares[0]
        wins[(vote.b, vote.a)] = wins.get((vote.b, vote.a), 0.0) + shares[1]
    order = sorted(names)
    n = len(order)
    if n == 0:
        return []
    index = {name: k for k, name in enumerate(order)}
    w = np.zeros((n, n))
    for (i, j), value in wins.items():
        w[index[i], index[j]] += value
    played = w + w.T  # comparisons between each pair
    comparisons = played.sum(axis=1)
    if prior > 0:
        met = played > 0
        w = w + np.where(met, prior / 2, 0.0)
    games = w + w.T
    total_wins = w.sum(axis=1)
    p = np.ones(n)
    for _ in range(max_iterations):
        denominator = (games / (p[:, None] + p[None, :])).sum(axis=1)
        updated = np.where(denominator > 0, total_wins / np.where(denominator > 0, denominator, 1), p)
        updated = np.where(updated > 0, updated, 1e-12)
        updated /= math.exp(np.log(updated).mean())
        if np.max(np.abs(updated - p)) < tolerance:
            p = updated
            break
        p = updated
    theta = np.log(p)
    errors = _standard_errors(theta, games)
    ratings = [
        Rating(
            candidate=name,
            rating=_scale(theta[k]),
            low=_scale(theta[k] - Z95 * errors[k]),
            high=_scale(theta[k] + Z95 * errors[k]),
            strength=float(p[k]),
            wins=float(sum(v for (i, _j), v in wins.items() if i == name)),
            comparisons=round(float(comparisons[k])),
        )
        for k, name in enumerate(order)
    ]
    ratings.sort(key=lambda r: (-r.rating, r.candidate))
    return ratings


def _standard_errors(theta: np.ndarray, games: np.ndarray) -> np.ndarray:
    """Standard errors of the log-strengths from the observed information matrix."""
    n = len(theta)
    if n < 2:
        return np.zeros(n)
    p = np.exp(theta)
    q = p[:, None] * p[None, :] / (p[:, None] + p[None, :]) ** 2  # var of one comparison's outcome
    info = -games * q
    np.fill_diagonal(info, 0.0)
    np.fill_diagonal(info, -info.sum(axis=1))
    # Fix the scale: drop the first parameter, invert, then express every log-strength
    # relative to the mean (the normalisation used for the estimate).
    reduced = info[1:, 1:]
    try:
        cov_reduced = np.linalg.inv(reduced)
    except np.linalg.LinAlgError:
        return np.full(n, np.inf)
    cov = np.zeros((n, n))
    cov[1:, 1:] = cov_reduced
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    centred = centre @ cov @ centre.T
    errors: np.ndarray = np.sqrt(np.clip(np.diag(centred), 0.0, None))
    return errors
