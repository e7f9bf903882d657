"""Tabular Q-learning for small discrete observation spaces (a Q table as a torch tensor)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor

from agents.core.base import Rollout
from agents.core.replay import flatten_rollout
from agents.dqn.agent import _EpsilonGreedyAgent, next_state_values, td_targets


class StateIndexer:
    """Maps observations of a small discrete space to table rows by mixed radix of ``obs - low``.

    Accepts ``Discrete``, ``MultiDiscrete`` and integer-dtype ``Box`` spaces, and ``Dict``
    spaces of them (entries in the space's key order); the last element varies fastest.
    """

    def __init__(self, observation_space: gymnasium.Space, max_states: int, device: torch.device):
        low, radices = self._layout(observation_space)
        num_states = math.prod(radices)
        if num_states > max_states:
            count = f"{num_states:,}" if num_states < 10**15 else f"about 10^{len(str(num_states)) - 1}"
            raise ValueError(
                f"tabular Q needs at most max_states={max_states:,} states, but the observation space "
                f"has {count} states ({type(observation_space).__name__} of {len(radices)} elements); "
                "use a smaller space or DQNAgent"
            )
        strides = [math.prod(radices[i + 1 :]) for i in range(len(radices))]
        self.num_states = num_states
        self.low = torch.tensor(low, dtype=torch.int64, device=device)
        self.radices = torch.tensor(radices, dtype=torch.int64, device=device)
        self.strides = torch.tensor(strides, dtype=torch.int64, device=device)

    @staticmethod
    def _layout(space: gymnasium.Space) -> tuple[list[int], list[int]]:
        spaces = gymnasium.spaces
        if isinstance(space, spaces.Dict):
            low: list[int] = []
            radices: list[int] = []
            for child in space.spaces.values():
                child_low, child_radices = StateIndexer._layout(child)
                low, radices = low + child_low, radices + child_radices
            return low, radices
        if isinstance(space, spaces.Discrete):
            return [int(space.start)], [int(space.n)]
        if isinstance(space, spaces.MultiDiscrete):
            return [int(v) for v in space.start.flat], [int(v) for v in space.nvec.flat]
        if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.integer):
            low, high = [int(v) for v in space.low.flat], [int(v) for v in space.high.flat]
            return low, [h - lo + 1 for lo, h in zip(low, high, strict=True)]
        raise ValueError(
            f"tabular Q needs a Discrete, MultiDiscrete or integer Box space (or a Dict of them), got {space}"
        )

    def __call__(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Row index of each observation. Shapes: obs (B, *obs_shape) or a dict of such -> (B,) int64."""
        if isinstance(obs, dict):
            obs = torch.cat([value.reshape(value.shape[0], -1).long() for value in obs.values()], dim=1)
        digits = obs.reshape(obs.shape[0], -1).to(self.low.device, torch.int64) - self.low
        if digits.shape[1] != self.low.shape[0]:
            raise ValueError(f"observations have {digits.shape[1]} elements, the space {self.low.shape[0]}")
        outside = ((digits < 0) | (digits >= self.radices)).any(dim=1).nonzero().flatten()
        if outside.numel() > 0:
            row = int(outside[0])
            raise ValueError(f"observation {obs[row].tolist()} (row {row}) is outside the observation space")
        return (digits * self.strides).sum(dim=1)


class TabularQAgent(_EpsilonGreedyAgent):
    """Q-learning with a table Q (S, A) on the device, for small discrete observation spaces.

    Each :meth:`learn` call is one synchronous update of all T*B transitions of the rollout:
    every target is computed from the table as it was before the call, and a state-action
    pair that occurs several times moves toward the average of its targets. Spaces with more
    than ``max_states`` states are refused.

    Step size: ``step_size="constant"`` moves by ``learning_rate``; ``step_size="visits"``
    moves by ``max(c / n, min_learning_rate)`` (at most ``learning_rate``), where ``c`` is the
    pair's count in this update and ``n`` its visits so far: the running mean of its targets,
    which averages out the noise of a stochastic opponent instead of chasing the last sample.
    """

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        *,
        device: torch.device | str = "cpu",
        rollout_steps: int = 1,
        gamma: float = 0.99,
        learning_rate: float = 0.1,
        step_size: str = "constant",
        min_learning_rate: float = 0.0,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        epsilon_decay_steps: int = 10_000,
        initial_q: float = 0.0,
        max_states: int = 10_000_000,
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            action_space, device, rollout_steps, epsilon_start, epsilon_end, epsilon_decay_steps, generator
        )
        if step_size not in ("constant", "visits"):
            raise ValueError(f"step_size={step_size!r} is not one of 'constant', 'visits'")
        self.gamma, self.learning_rate = gamma, learning_rate
        self.step_size, self.min_learning_rate = step_size, min_learning_rate
        self.indexer = StateIndexer(observation_space, max_states, self.device)
        shape = (self.indexer.num_states, self.num_actions)
        self.q_table = torch.full(shape, float(initial_q), dtype=torch.float32, device=self.device)
        self.visits = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.updates = 0

    @staticmethod
    def check_spaces(observation_space: gymnasium.Space, action_space: gymnasium.Space) -> None:
        """A Q table needs a small discrete observation space and a ``Discrete`` action space."""
        _EpsilonGreedyAgent.check_spaces(observation_space, action_space)
        StateIndexer(observation_space, 10_000_000, torch.device("cpu"))

    def _q_values(self, obs: Tensor) -> Tensor:
        return self.q_table[self.indexer(obs)]

    def _freeze(self) -> None:
        self.q_table = self.q_table.clone()

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """One synchronous Q-learning update from the rollout's transitions."""
        batch = flatten_rollout(rollout.to(self.device))
        states, next_states = self.indexer(batch.obs), self.indexer(batch.next_obs)
        q_taken = self.q_table[states, batch.actions]
        next_values = next_state_values(self.q_table[next_states], batch.next_action_masks)
        td_errors = td_targets(batch.rewards, batch.terminated, next_values, self.gamma) - q_taken
        pairs, inverse = (states * self.num_actions + batch.actions).unique(return_inverse=True)
        error_sums = torch.zeros(pairs.shape[0], device=self.device).index_add_(0, inverse, td_errors)
        counts = torch.bincount(inverse, minlength=pairs.shape[0]).float()
        self.q_table.view(-1).index_add_(0, pairs, self._step_sizes(pairs, counts) * error_sums / counts)
        self.env_steps += rollout.num_valid
        self.updates += 1
        return {
            "loss/td": td_errors.square().mean().item(),
            "diag/q_mean": q_taken.mean().item(),
            "charts/epsilon": self.epsilon,
        }

    def _step_sizes(self, pairs: Tensor, counts: Tensor) -> Tensor:
        """Step size per updated (state, action) pair; counts its visits. Shapes: (P,) -> (P,)."""
        visits = self.visits.view(-1)
        visits.index_add_(0, pairs, counts)
        if self.step_size == "constant":
            return torch.full_like(counts, self.learning_rate)
        return (counts / visits[pairs]).clamp(min=self.min_learning_rate, max=self.learning_rate)

    def state_dict(self) -> dict[str, Any]:
        """The Q table, visit counts and counters."""
        return {
            "q_table": self.q_table.clone(),
            "visits": self.visits.clone(),
            "counters": {**self._counters(), "updates": self.updates},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        table: Tensor = state["q_table"]
        if table.shape != self.q_table.shape:
            raise ValueError(f"q_table has shape {tuple(table.shape)}, expected {tuple(self.q_table.shape)}")
        self.q_table.copy_(table)
        self.visits.copy_(state.get("visits", torch.zeros_like(self.visits)))
        self._load_counters(state["counters"])
        self.updates = int(state["counters"]["updates"])
