"""KL penalty: per-token reward assembly on a hand-made case, and the fixed and adaptive controllers."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from agents.ppo.kl import AdaptiveKLController, FixedKLController, kl_penalized_rewards, whiten_rewards

torch.set_num_threads(1)


def test_rewards_are_kl_penalty_per_token_plus_score_at_the_last_token():
    # Two sequences: row 0 generates 3 tokens, row 1 ends after its 2nd token (step 2 is padding).
    scores = torch.tensor([[0.0, 0.0], [0.0, 0.8], [2.0, 0.0]])
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -1.0], [-3.0, -9.0]])
    reference = torch.tensor([[-1.5, -2.0], [-0.5, -0.25], [-1.0, 7.0]])
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    penalized = kl_penalized_rewards(scores, log_probs, reference, valid, coef=0.1)
    expected_kl = torch.tensor([[0.5, 0.0], [0.0, -0.75], [-2.0, 0.0]])
    expected = torch.tensor([[-0.05, 0.0], [0.0, 0.8 + 0.075], [2.0 + 0.2, 0.0]])
    assert_close(penalized.kl, expected_kl)
    assert_close(penalized.rewards, expected)
    assert_close(penalized.kl.sum(0), torch.tensor([-1.5, -0.75]))


def test_zero_coefficient_leaves_the_scores():
    scores = torch.tensor([[0.0], [1.5]])
    valid = torch.ones(2, 1, dtype=torch.bool)
    penalized = kl_penalized_rewards(scores, torch.tensor([[-1.0], [-2.0]]), torch.zeros(2, 1), valid, 0.0)
    assert_close(penalized.rewards, scores)
    assert penalized.kl.sum(0).item() == pytest.approx(-3.0)


def test_fixed_controller_never_moves():
    controller = FixedKLController(0.2)
    controller.update(100.0, 64)
    controller.update(0.0, 64)
    assert controller.coef == 0.2
    restored = FixedKLController(1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.coef == 0.2


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        (12.0, 0.1 * (1 + 0.2 * 10 / 100)),  # far above target: error clipped to +0.2
        (6.6, 0.1 * (1 + 0.1 * 10 / 100)),  # 10 % above target
        (6.0, 0.1),  # on target
        (3.0, 0.1 * (1 - 0.2 * 10 / 100)),  # far below: clipped to -0.2
    ],
)
def test_adaptive_controller_moves_beta_toward_the_target(kl, expected):
    controller = AdaptiveKLController(coef=0.1, target=6.0, horizon=100)
    controller.update(kl, num_episodes=10)
    assert controller.coef == pytest.approx(expected)


def test_adaptive_controller_keeps_state_ignores_nan_and_zero_stays_off():
    controller = AdaptiveKLController(coef=0.1, target=6.0, horizon=100)
    for _ in range(5):
        controller.update(20.0, 10)
    assert controller.coef > 0.1
    restored = AdaptiveKLController(coef=0.1, target=6.0, horizon=100)
    restored.load_state_dict(controller.state_dict())
    assert restored.coef == controller.coef
    coef = controller.coef
    controller.update(math.nan, 10)
    assert controller.coef == coef
    off = AdaptiveKLController(coef=0.0)
    off.update(50.0, 1000)
    assert off.coef == 0.0


@pytest.mark.parametrize("coef", [-0.1, math.nan])
def test_bad_coefficient_is_rejected(coef):
    with pytest.raises(ValueError, match="KL coefficient"):
        FixedKLController(coef)


def test_whitening_scales_valid_rewards_and_keeps_their_sign():
    rewards = torch.tensor([[1.0, -3.0], [2.0, 100.0]])
    valid = torch.tensor([[True, True], [True, False]])
    whitened = whiten_rewards(rewards, valid)
    assert whitened[1, 1] == 0.0
    assert whitened[valid].std().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(whitened[valid].sign(), rewards[valid].sign())
