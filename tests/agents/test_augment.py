"""Replay augmentation by board symmetries: a group of permutations applied consistently."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.core.augment import CellSymmetries
from agents.core.replay import ReplayBatch
from agents.dqn.agent import DQNAgent
from agents.networks import QNetworkMLP
from rlenv.tictactoe.rules import LINES, board_symmetries, winners


def test_the_eight_board_symmetries_form_a_group_that_keeps_the_lines():
    perms = [tuple(p) for p in board_symmetries()]
    assert len(set(perms)) == 8 and tuple(range(9)) in perms
    for a, b in itertools.product(perms, perms):
        assert tuple(a[i] for i in b) in perms  # closed under composition
    lines = {frozenset(line) for line in LINES.tolist()}
    for perm in perms:
        assert {frozenset(perm[i] for i in line) for line in lines} == lines
    boards = torch.randint(-1, 2, (200, 9), dtype=torch.int8)
    for perm in perms:
        assert torch.equal(winners(boards[:, list(perm)]), winners(boards))


def test_each_transition_is_moved_by_one_symmetry_as_a_whole():
    torch.manual_seed(0)
    n = 64
    obs = torch.randint(-1, 2, (n, 9), dtype=torch.int8)
    obs[torch.arange(n), torch.randint(9, (n,))] = 0  # at least one legal move
    masks = obs == 0
    actions = torch.multinomial(masks.float() + 1e-9, 1).squeeze(1)
    marked = obs.clone()
    marked[torch.arange(n), actions] = 1
    batch = ReplayBatch(
        obs, masks, actions, torch.rand(n), marked, marked == 0, torch.zeros(n, dtype=torch.bool)
    )
    augment = CellSymmetries(board_symmetries())
    out = augment(batch, torch.Generator().manual_seed(1))
    assert torch.equal(out.rewards, batch.rewards) and torch.equal(out.terminated, batch.terminated)
    # the same move on the transformed board gives the transformed next board
    replayed = out.obs.clone()
    replayed[torch.arange(n), out.actions] = 1
    assert torch.equal(replayed, out.next_obs)
    assert torch.equal(out.action_masks, out.obs == 0) and torch.equal(
        out.next_action_masks, out.next_obs == 0
    )
    assert bool(out.action_masks[torch.arange(n), out.actions].all())
    assert not torch.equal(out.obs, batch.obs)  # some transitions were moved
    counts = torch.tensor(
        [sorted(row.tolist()) == sorted(o.tolist()) for row, o in zip(out.obs, obs, strict=True)]
    )
    assert bool(counts.all())  # a permutation: the same marks


def test_bad_permutations_and_spaces_are_refused():
    with pytest.raises(ValueError, match="is not a permutation"):
        CellSymmetries([[0, 1, 1]])
    board = gym.spaces.Box(-1, 1, (9,), np.int8)
    augment = CellSymmetries(board_symmetries())
    augment.check_spaces(board, gym.spaces.Discrete(9))
    with pytest.raises(TypeError, match=r"needs a \(9,\) observation and Discrete\(9\) actions"):
        DQNAgent(
            gym.spaces.Box(-1, 1, (4,), np.float32),
            gym.spaces.Discrete(2),
            network=QNetworkMLP,
            optimizer=lambda p: torch.optim.Adam(p),
            augment=augment,
        )
