"""Sampling actions by the inverse CDF: the right distribution, masked actions never drawn."""

import math

import torch

from agents.core.sampling import CDF_MIN_ACTIONS, sample_actions, sample_inverse_cdf


def test_inverse_cdf_draws_each_action_with_its_probability():
    torch.manual_seed(0)
    logits = torch.tensor([0.0, 1.0, 2.0, -math.inf, -1.0])
    log_probs = torch.log_softmax(logits, -1).expand(200_000, -1)
    counts = torch.bincount(sample_inverse_cdf(log_probs), minlength=5) / 200_000
    expected = log_probs[0].exp()
    assert counts[3] == 0  # probability 0: never drawn
    assert torch.allclose(counts, expected, atol=4e-3), (counts, expected)


def test_masked_actions_are_never_drawn_even_when_the_last_actions_are_masked():
    torch.manual_seed(1)
    logits = torch.full((4096, CDF_MIN_ACTIONS), -math.inf)
    logits[:, :3] = torch.tensor([5.0, 0.0, -5.0])
    actions, log_probs = sample_actions(logits)
    assert int(actions.max()) <= 2
    assert torch.allclose(log_probs, torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1))


def test_large_action_spaces_sample_like_the_categorical_distribution():
    torch.manual_seed(2)
    logits = torch.randn(1, CDF_MIN_ACTIONS * 2) * 0.1
    logits[0, 7] = 4.0  # one likely action among many
    actions, _ = sample_actions(logits.expand(20_000, -1))
    expected = float(torch.softmax(logits, -1)[0, 7])
    assert abs(float((actions == 7).float().mean()) - expected) < 0.01
