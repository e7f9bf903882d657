import math

import pytest
import torch

from rlenv.reward.loss import bradley_terry_loss, pairwise_accuracy


def test_bradley_terry_value_by_hand() -> None:
    r_chosen = torch.tensor([2.0, 0.0, -1.0])
    r_rejected = torch.tensor([0.0, 0.0, 1.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(2.0))) / 3
    assert bradley_terry_loss(r_chosen, r_rejected).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_raises_chosen_and_lowers_rejected() -> None:
    r_chosen = torch.tensor([0.5, -1.0], requires_grad=True)
    r_rejected = torch.tensor([0.0, 3.0], requires_grad=True)
    bradley_terry_loss(r_chosen, r_rejected).backward()
    assert (r_chosen.grad < 0).all() and (r_rejected.grad > 0).all()
    # d/d r_chosen of -log σ(d) / B = -(1 - σ(d)) / B
    expected = -(1 - torch.sigmoid(torch.tensor([0.5, -4.0]))) / 2
    torch.testing.assert_close(r_chosen.grad, expected)
    torch.testing.assert_close(r_rejected.grad, -expected)


def test_large_margins_are_stable() -> None:
    loss = bradley_terry_loss(torch.tensor([1000.0, -1000.0]), torch.tensor([-1000.0, 1000.0]))
    assert loss.item() == pytest.approx(1000.0)


def test_pairwise_accuracy_counts_ties_as_wrong() -> None:
    acc = pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 3.0, 1.0]))
    assert acc.item() == 0.5


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match=r"chosen \(3,\), rejected \(2,\)"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
