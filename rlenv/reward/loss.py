"""The reward model's pairwise loss and accuracy (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Mean of ``-log σ(r_chosen - r_rejected)``: small when the preferred completion scores higher.

    Under the Bradley-Terry model ``P(chosen ≻ rejected) = σ(r_chosen - r_rejected)``,
    so this is the negative log-likelihood of the labelers' choices.

    Shapes: ``r_chosen`` (B,), ``r_rejected`` (B,) -> scalar ().
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(
            f"reward shapes differ: chosen {tuple(r_chosen.shape)}, rejected {tuple(r_rejected.shape)}"
        )
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pairwise_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Fraction of pairs with ``r_chosen > r_rejected`` (a tie counts as wrong).

    Shapes: ``r_chosen`` (B,), ``r_rejected`` (B,) -> scalar ().
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(
            f"reward shapes differ: chosen {tuple(r_chosen.shape)}, rejected {tuple(r_rejected.shape)}"
        )
    return (r_chosen > r_rejected).to(torch.float32).mean()
