"""The agent protocol and the typed batches that flow between rollouts and agents.

An agent never owns an environment. The training loop steps a vector env, asks the
agent for actions (:meth:`Agent.explore`), stores the transitions time-major in a
:class:`Rollout`, and hands the rollout to :meth:`Agent.learn`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Observation = Tensor | dict[str, Tensor]
"""A batch of observations: one tensor, or a dict of tensors (e.g. token ids and attention mask)."""


def map_observation(fn: Callable[[Tensor], Tensor], obs: Observation) -> Observation:
    """Apply ``fn`` to ``obs``, or to every tensor of a dict observation."""
    if isinstance(obs, dict):
        return {key: fn(value) for key, value in obs.items()}
    return fn(obs)


def take_rows(obs: Observation, rows: Any) -> Observation:
    """The rows ``rows`` (an index or mask over the batch dims) of ``obs`` or of each tensor of a dict."""
    return map_observation(lambda x: x[rows], obs)


def move_observation(obs: Observation, device: torch.device | str) -> Observation:
    """``obs`` (a tensor or a dict of tensors) on ``device``."""
    return map_observation(lambda x: torch.as_tensor(x, device=device), obs)


def batch_size(obs: Observation) -> int:
    """B, the leading dimension of a batch of observations (of any tensor of a dict one)."""
    if isinstance(obs, dict):
        return int(next(iter(obs.values())).shape[0])
    return int(obs.shape[0])


@dataclass
class PolicyStep:
    """What an agent returns when it acts during training.

    Shapes: ``actions`` (B,); ``log_probs`` and ``values`` (B,) or ``None`` for agents
    that do not produce them (value-based agents return ``None``).
    """

    actions: Tensor
    log_probs: Tensor | None = None
    values: Tensor | None = None


@dataclass
class Rollout:
    """Transitions collected from a vector env, stored time-major.

    Shapes: T steps, B envs, A actions.
        obs, next_obs: (T, B, *obs_shape), or a dict of such tensors; ``next_obs[t]`` is the observation that
            followed ``actions[t]``; for a step that ended an episode it is the
            final observation of that episode (not the reset observation).
        action_masks, next_action_masks: (T, B, A) bool, True = legal; ``None`` when the
            env reports no action masks (every action legal).
        actions: (T, B) int64.
        log_probs, values: (T, B) float32 from the behaviour policy (zeros when the
            agent produced none).
        rewards: (T, B) float32.
        terminated, truncated: (T, B) bool.
        valid: (T, B) bool or ``None`` (every step valid). False marks padding: a row of a
            batch of whole episodes after its episode ended, or the reset step of an env in
            next-step autoreset mode. Padding steps carry no learning signal and are not
            counted as env steps.
        whole_episodes: every row's episode started at step 0 and no row restarted within
            the rollout (a batch of whole episodes: the env's autoreset is disabled), so a
            row is one episode from its first observation ``obs[0]`` on.
    """

    obs: Observation
    action_masks: Tensor | None
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    next_obs: Observation
    next_action_masks: Tensor | None
    valid: Tensor | None = None
    whole_episodes: bool = False

    @property
    def done(self) -> Tensor:
        """(T, B) bool: the episode ended at this step (terminated or truncated)."""
        return self.terminated | self.truncated

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.actions.shape[1])

    @property
    def valid_mask(self) -> Tensor:
        """(T, B) bool: ``valid``, or all True when the rollout has no padding."""
        if self.valid is None:
            return torch.ones_like(self.terminated, dtype=torch.bool)
        return self.valid

    @property
    def num_valid(self) -> int:
        """Env steps the rollout holds, padding excluded."""
        return self.num_steps * self.num_envs if self.valid is None else int(self.valid.sum())

    def to(self, device: torch.device | str) -> Rollout:
        """A copy on ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = (
                value if value is None or isinstance(value, bool) else move_observation(value, device)
            )
        return type(self)(**moved)


@dataclass
class EpisodeEvaluation:
    """Per-step quantities of a batch of episodes under the current network, time-major.

    Shapes: log_probs, entropies, values (T, B); ``values[t]`` is V(s_t).
    """

    log_probs: Tensor
    entropies: Tensor
    values: Tensor


@runtime_checkable
class EpisodePolicy(Protocol):
    """A network that scores whole episodes from their first observation and their actions."""

    def evaluate_episodes(self, first_obs: Observation, actions: Tensor, valid: Tensor) -> EpisodeEvaluation:
        """Shapes: first_obs (B, ...); actions, valid (T, B) -> outputs (T, B).

        A network may also define ``episode_context(rollout)``: what else it needs to score
        the episodes (the LM networks: the tokens an env wrote between actions), passed back
        as a fourth argument when not ``None``.
        """
        ...


@runtime_checkable
class Agent(Protocol):
    """What every learning algorithm in ``agents/`` provides.

    Agents are built from the env's spaces: ``Agent(observation_space, action_space, ...)``.
    ``rollout_steps`` tells the training loop how many vector-env steps to collect
    before each call to :meth:`learn`.
    """

    rollout_steps: int
    device: torch.device

    def act(self, obs: Observation, action_mask: Tensor | None = None, deterministic: bool = False) -> Tensor:
        """Actions (B,) for a batch of observations (B, ...). Never picks a masked action."""
        ...

    def explore(self, obs: Observation, action_mask: Tensor | None = None) -> PolicyStep:
        """Act for training (sampling / exploration), returning what ``learn`` needs."""
        ...

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """Update from a rollout; return metrics named ``loss/...``, ``diag/...``, ``charts/...``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimizer, schedules, counters."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def masked_logits(logits: Tensor, action_mask: Tensor | None) -> Tensor:
    """Logits with illegal actions pushed to the most negative finite value.

    Shapes: logits (B, A); action_mask (B, A) bool or int, nonzero = legal.
    """
    if action_mask is None:
        return logits
    return logits.masked_fill(~action_mask.bool(), torch.finfo(logits.dtype).min)
