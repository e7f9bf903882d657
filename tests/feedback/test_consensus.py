import math

import pytest

from rlenv.feedback.consensus import consensus, effective_ranks, pair_agreement
from rlenv.feedback.rankings import Label


def test_identical_labelers_agree_fully() -> None:
    label, agreement = consensus([Label("a", (2, 1, 3)), Label("b", (2, 1, 3))])
    assert label.ranks == (2, 1, 3)
    assert label.labeler == "consensus"
    assert agreement == 1.0


def test_reversed_labelers_disagree_fully_and_tie() -> None:
    label, agreement = consensus([Label("a", (1, 2, 3)), Label("b", (3, 2, 1))])
    assert label.ranks == (1, 1, 1)
    assert agreement == 0.0


def test_borda_majority_and_agreement_by_hand() -> None:
    labels = [Label("a", (1, 2, 3)), Label("b", (1, 3, 2)), Label("c", (2, 1, 3))]
    label, agreement = consensus(labels)
    # Borda points (2 per win): c0 = 4+4+2, c1 = 2+0+4, c2 = 0+2+0
    assert label.ranks == (1, 2, 3)
    # a-b agree on 2/3 pairs, a-c on 2/3, b-c on 1/3
    assert agreement == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)


def test_ties_count_as_half_wins_and_rank_scale_does_not_matter() -> None:
    dense = consensus([Label("a", (1, 1, 2)), Label("b", (1, 2, 3))])
    gaps = consensus([Label("a", (1, 1, 3)), Label("b", (1, 2, 3))])
    assert dense == gaps
    assert dense.label.ranks == (1, 2, 3)
    assert dense.agreement == pytest.approx(2 / 3)


def test_majority_flags_and_flagged_rank_last() -> None:
    labels = [Label("a", (1, 2, 3), (0,)), Label("b", (1, 2, 3), (0,)), Label("c", (1, 2, 3), (2,))]
    label, _ = consensus(labels)
    assert label.flagged == (0,)
    # effective ranks: a, b = (4, 2, 3); c = (1, 2, 3); Borda points 4, 10, 4
    assert label.ranks == (2, 1, 2)
    assert effective_ranks((1, 2, 3), (0,)) == (4, 2, 3)


def test_single_label_is_its_own_consensus() -> None:
    only = Label("a", (2, 1), (1,))
    label, agreement = consensus([only])
    assert label == only and math.isnan(agreement)


def test_errors() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        consensus([])
    with pytest.raises(ValueError, match=r"different numbers of completions: \[2, 3\]"):
        consensus([Label("a", (1, 2)), Label("b", (1, 2, 3))])
    assert pair_agreement((1, 2), (1, 2)) == 1.0
