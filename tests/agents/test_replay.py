from __future__ import annotations

import pytest
import torch

from agents.core.base import Rollout
from agents.core.replay import ReplayBatch, ReplayBuffer, flatten_rollout

torch.set_num_threads(1)


def transitions(first: int, count: int, num_actions: int = 3, masks: bool = True) -> ReplayBatch:
    """``count`` transitions numbered ``first, first + 1, ...`` in every field."""
    ids = torch.arange(first, first + count)
    mask = torch.ones(count, num_actions, dtype=torch.bool) if masks else None
    return ReplayBatch(
        obs=torch.stack([ids, -ids], dim=1).to(torch.int8),
        action_masks=mask,
        actions=ids % num_actions,
        rewards=ids.float(),
        next_obs=torch.stack([ids + 1, -ids - 1], dim=1).to(torch.int8),
        next_action_masks=mask,
        terminated=ids % 2 == 0,
    )


def stored_ids(buffer: ReplayBuffer) -> list[int]:
    return buffer.gather(torch.arange(len(buffer))).rewards.long().tolist()


def test_add_fills_then_wraps_around_overwriting_the_oldest():
    buffer = ReplayBuffer(5)
    buffer.add(transitions(0, 3))
    assert (len(buffer), buffer.position) == (3, 3)
    assert stored_ids(buffer) == [0, 1, 2]
    buffer.add(transitions(3, 4))
    assert (len(buffer), buffer.position) == (5, 2)
    assert stored_ids(buffer) == [5, 6, 2, 3, 4]
    batch = buffer.gather(torch.tensor([0]))
    assert batch.obs.tolist() == [[5, -5]] and batch.next_obs.tolist() == [[6, -6]]
    assert batch.actions.tolist() == [2] and batch.terminated.tolist() == [False]


def test_adding_more_than_capacity_keeps_the_newest():
    buffer = ReplayBuffer(4)
    buffer.add(transitions(0, 1))
    buffer.add(transitions(10, 6))
    assert len(buffer) == 4
    assert sorted(stored_ids(buffer)) == [12, 13, 14, 15]


def test_storage_is_preallocated_with_the_incoming_dtypes():
    buffer = ReplayBuffer(100)
    assert buffer.memory_bytes() == 0
    buffer.add(transitions(0, 2))
    assert buffer.storage["obs"].shape == (100, 2) and buffer.storage["obs"].dtype == torch.int8
    assert buffer.storage["action_masks"].dtype == torch.bool
    per_transition = 2 + 2 + 3 + 3 + 8 + 4 + 1
    assert buffer.memory_bytes() == 100 * per_transition


def test_sample_draws_only_stored_transitions_uniformly():
    buffer = ReplayBuffer(10)
    buffer.add(transitions(0, 4))
    batch = buffer.sample(40_000)
    assert batch.obs.shape == (40_000, 2) and batch.action_masks.shape == (40_000, 3)
    counts = torch.bincount(batch.rewards.long(), minlength=10)
    assert counts[4:].sum() == 0
    assert torch.all((counts[:4] - 10_000).abs() < 500)


def test_sample_with_a_generator_is_reproducible():
    buffer = ReplayBuffer(10)
    buffer.add(transitions(0, 7))
    first = buffer.sample(16, torch.Generator().manual_seed(3)).rewards
    second = buffer.sample(16, torch.Generator().manual_seed(3)).rewards
    assert torch.equal(first, second)


def test_buffer_without_masks_returns_none_masks():
    buffer = ReplayBuffer(5, store_action_masks=False)
    buffer.add(transitions(0, 3, masks=False))
    batch = buffer.sample(2)
    assert batch.action_masks is None and batch.next_action_masks is None
    assert "action_masks" not in buffer.storage


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)
    with pytest.raises(ValueError, match="empty replay buffer"):
        ReplayBuffer(3).sample(1)
    buffer = ReplayBuffer(5)
    buffer.add(transitions(0, 2))
    with pytest.raises(ValueError, match=r"action_masks has per-transition shape \(4,\)"):
        buffer.add(transitions(0, 2, num_actions=4))
    with pytest.raises(ValueError, match="action_masks is None"):
        buffer.add(transitions(0, 2, masks=False))


def test_state_dict_round_trip_resumes_identically():
    buffer = ReplayBuffer(6)
    buffer.add(transitions(0, 8))
    restored = ReplayBuffer(6)
    restored.load_state_dict(buffer.state_dict())
    assert (restored.position, len(restored)) == (buffer.position, len(buffer))
    for b in (buffer, restored):
        b.add(transitions(100, 3))
    assert stored_ids(restored) == stored_ids(buffer)
    draw = [b.sample(32, torch.Generator().manual_seed(1)).next_obs for b in (buffer, restored)]
    assert torch.equal(draw[0], draw[1])
    with pytest.raises(ValueError, match="capacity=6"):
        ReplayBuffer(7).load_state_dict(buffer.state_dict())


def test_state_dict_of_a_partly_filled_buffer_holds_only_the_filled_rows():
    buffer = ReplayBuffer(50)
    buffer.add(transitions(0, 3))
    state = buffer.state_dict()
    assert state["storage"]["obs"].shape == (3, 2)
    restored = ReplayBuffer(50)
    restored.load_state_dict(state)
    assert restored.storage["obs"].shape == (50, 2)
    assert stored_ids(restored) == [0, 1, 2]


def test_flatten_rollout_is_time_major():
    steps, envs = 3, 2
    ids = torch.arange(steps * envs).reshape(steps, envs)
    mask = torch.ones(steps, envs, 4, dtype=torch.int8)
    rollout = Rollout(
        obs=ids.unsqueeze(-1),
        action_masks=mask,
        actions=ids % 4,
        log_probs=torch.zeros(steps, envs),
        values=torch.zeros(steps, envs),
        rewards=ids.float(),
        terminated=ids == 5,
        truncated=ids == 4,
        next_obs=ids.unsqueeze(-1) + 100,
        next_action_masks=mask,
    )
    batch = flatten_rollout(rollout)
    assert batch.rewards.tolist() == [0, 1, 2, 3, 4, 5]
    assert batch.obs.shape == (6, 1) and batch.next_obs[:, 0].tolist() == [100, 101, 102, 103, 104, 105]
    assert batch.action_masks.dtype == torch.bool and batch.terminated.tolist() == [False] * 5 + [True]
    assert flatten_rollout(rollout, keep_action_masks=False).action_masks is None
