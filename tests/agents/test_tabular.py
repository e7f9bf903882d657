"""Tabular Q-learning step sizes."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

from agents.core.base import Rollout
from agents.dqn.tabular import TabularQAgent


def one_step_rollout(reward: float) -> Rollout:
    """A single terminal transition from state 0 with action 1 and the given reward."""
    ones = torch.ones(1, 1, 2, dtype=torch.bool)
    return Rollout(
        obs=torch.zeros(1, 1, dtype=torch.long),
        action_masks=ones,
        actions=torch.ones(1, 1, dtype=torch.long),
        log_probs=torch.zeros(1, 1),
        values=torch.zeros(1, 1),
        rewards=torch.tensor([[reward]]),
        terminated=torch.ones(1, 1, dtype=torch.bool),
        truncated=torch.zeros(1, 1, dtype=torch.bool),
        next_obs=torch.zeros(1, 1, dtype=torch.long),
        next_action_masks=~ones,
    )


def test_visit_step_size_gives_the_running_mean_of_targets():
    agent = TabularQAgent(spaces.Discrete(3), spaces.Discrete(2), learning_rate=1.0, step_size="visits")
    rewards = [1.0, -1.0, 1.0, 1.0, 0.0, -1.0, 1.0]
    for reward in rewards:
        agent.learn(one_step_rollout(reward))
    assert agent.q_table[0, 1].item() == pytest.approx(sum(rewards) / len(rewards))
    assert agent.visits[0, 1].item() == len(rewards)
    assert agent.q_table[0, 0].item() == 0.0


def test_constant_step_size_chases_the_last_targets():
    agent = TabularQAgent(spaces.Discrete(3), spaces.Discrete(2), learning_rate=0.5)
    for reward in (1.0, 1.0, -1.0):
        agent.learn(one_step_rollout(reward))
    assert agent.q_table[0, 1].item() == pytest.approx(((0 + 0.5) * 0.5 + 0.5) * 0.5 - 0.5)


def test_unknown_step_size_is_refused():
    with pytest.raises(ValueError, match="step_size='adaptive'"):
        TabularQAgent(spaces.Discrete(3), spaces.Discrete(2), step_size="adaptive")
