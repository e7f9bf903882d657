"""Consensus of several labelers' rankings, and how much they agree.

Each labeler's ranking is first made *effective*: completions the labeler flagged
rank below all the ones they did not flag (tied among themselves), since a
flagged completion is unusable. Then:

- **Consensus ranks** (Borda count with ties): in each labeler's effective
  ranking a completion earns 2 points for every completion it beats and 1 for
  every completion it ties with. Points are summed over labelers; the
  completion with the most points gets rank 1, equal totals tie (dense ranks:
  1, 2, 3, ... without gaps).
- **Consensus flags**: a completion is flagged when strictly more than half of
  the labelers flagged it.
- **Agreement** in [0, 1]: for every pair of labelers, the fraction of the
  N-choose-2 completion pairs they order the same way (both prefer the same
  completion, or both call it a tie), averaged over labeler pairs. 1 means
  identical orderings; without ties it equals ``(1 + Kendall's tau) / 2``, so
  0.5 is what two independent random rankings give on average and 0 means one
  labeler reversed the other. With a single labeler it is ``nan`` (nothing to
  compare).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

from rlenv.feedback.rankings import Label

CONSENSUS_LABELER = "consensus"


class Consensus(NamedTuple):
    """The consensus label (ranks and flags) and the labelers' agreement in [0, 1]."""

    label: Label
    agreement: float


def effective_ranks(ranks: Sequence[int], flagged: Sequence[int] = ()) -> tuple[int, ...]:
    """Ranks with every flagged completion moved below all unflagged ones (tied among themselves)."""
    if not flagged:
        return tuple(ranks)
    flagged_set = set(flagged)
    unflagged = [r for i, r in enumerate(ranks) if i not in flagged_set]
    last = max(unflagged, default=0) + 1
    return tuple(last if i in flagged_set else r for i, r in enumerate(ranks))


def dense_ranks(points: Sequence[float]) -> tuple[int, ...]:
    """Dense ranks (1 = most points, equal points tie) of a list of scores, higher is better."""
    order = sorted(set(points), reverse=True)
    position = {value: rank for rank, value in enumerate(order, start=1)}
    return tuple(position[p] for p in points)


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def pair_agreement(ranks_a: Sequence[int], ranks_b: Sequence[int]) -> float:
    """Fraction of completion pairs two rankings order the same way (ties must match ties)."""
    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"rankings differ in length: {len(ranks_a)} vs {len(ranks_b)}")
    pairs = list(itertools.combinations(range(len(ranks_a)), 2))
    if not pairs:
        return math.nan
    same = sum(_sign(ranks_a[i] - ranks_a[j]) == _sign(ranks_b[i] - ranks_b[j]) for i, j in pairs)
    return same / len(pairs)


def consensus(labels: Sequence[Label]) -> Consensus:
    """Combine several labelers' rankings of the same completions (see module docstring).

    Returns:
        ``Consensus(label, agreement)``: ``label.ranks`` are the consensus ranks,
        ``label.flagged`` the majority flags, ``label.labeler == "consensus"``
        (a lone label is returned unchanged); ``agreement`` is in [0, 1], ``nan``
        for a single labeler.
    """
    if not labels:
        raise ValueError("consensus needs at least one label, got none")
    n = len(labels[0].ranks)
    lengths = sorted({len(label.ranks) for label in labels})
    if len(lengths) > 1:
        raise ValueError(f"labels rank different numbers of completions: {lengths}")
    if len(labels) == 1:
        return Consensus(labels[0], math.nan)
    effective = [effective_ranks(label.ranks, label.flagged) for label in labels]
    points = [0] * n
    for ranks in effective:
        for i, j in itertools.permutations(range(n), 2):
            points[i] += 2 if ranks[i] < ranks[j] else 1 if ranks[i] == ranks[j] else 0
    votes = [sum(i in label.flagged for label in labels) for i in range(n)]
    flagged = tuple(i for i, v in enumerate(votes) if 2 * v > len(labels))
    agreements = [pair_agreement(a, b) for a, b in itertools.combinations(effective, 2)]
    agreement = sum(agreements) / len(agreements)
    return Consensus(Label(CONSENSUS_LABELER, dense_ranks(points), flagged), agreement)
