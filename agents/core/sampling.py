"""Sampling one action per row from a categorical policy, fast for vocabulary-sized action spaces.

``torch.multinomial`` (what ``Categorical.sample`` calls) draws one exponential variate per
action and row on CPU: at a 49,152-token vocabulary and 64 rows that is about 65 ms a step,
a fifth of a SmolLM2 rollout step on 2 cores. Inverting the cumulative distribution needs
one uniform number per row instead (a cumulative sum in float64 and a binary search), about
10x less there. Below :data:`CDF_MIN_ACTIONS` actions the ``Categorical`` path is kept: it is
as cheap there and its random stream is the one earlier runs used.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Categorical

CDF_MIN_ACTIONS = 1024
"""Action spaces at least this large sample by the inverse CDF."""


def sample_inverse_cdf(log_probs: Tensor) -> Tensor:
    """One index per row drawn with probabilities ``exp(log_probs)``; shapes (..., A) -> (...).

    Actions of probability 0 (masked, ``-inf``) are never drawn: the search finds the first
    cumulative sum strictly above a uniform number below the total.
    """
    cumulative = log_probs.exp().double().cumsum(-1)
    total = cumulative[..., -1:]
    uniform = torch.rand(total.shape, dtype=torch.float64, device=log_probs.device) * total
    uniform = torch.minimum(uniform, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(-1)


def sample_actions(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Sampled actions (B,) and their log-probabilities (B,) from masked logits (B, A)."""
    if logits.shape[-1] >= CDF_MIN_ACTIONS:
        log_probs = torch.log_softmax(logits, dim=-1)
        actions = sample_inverse_cdf(log_probs)
        return actions, log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    policy = Categorical(logits=logits, validate_args=False)
    actions = policy.sample()
    return actions, policy.log_prob(actions)
