"""Stepping a vector env with an agent and storing the transitions time-major."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents.base import Agent, Observation, Rollout, map_observation


@dataclass
class EpisodeStats:
    """Episodes that ended during a rollout: returns, lengths, outcomes (+1/0/-1, if reported)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    outcomes: list[int] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        if not self.returns:
            return {}
        out = {
            "charts/episode_return": float(np.mean(self.returns)),
            "charts/episode_length": float(np.mean(self.lengths)),
            "charts/episodes": float(len(self.returns)),
        }
        if self.outcomes:
            outcomes = np.asarray(self.outcomes)
            out["charts/win_rate"] = float(np.mean(outcomes > 0))
            out["charts/draw_rate"] = float(np.mean(outcomes == 0))
            out["charts/loss_rate"] = float(np.mean(outcomes < 0))
        return out


def as_observation(value: Any, device: torch.device) -> Observation:
    """A batch of observations from an env as a tensor (or dict of tensors) on ``device``."""
    if isinstance(value, dict):
        return {key: as_tensor(item, device) for key, item in value.items()}
    return as_tensor(value, device)


def as_tensor(value: Any, device: torch.device) -> Tensor:
    return (
        value.to(device) if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value), device=device)
    )


def action_mask_from_info(
    info: dict[str, Any], key: str, num_envs: int, num_actions: int, device: torch.device
) -> Tensor:
    """(B, A) bool mask from ``info[key]``; all legal when the env gives none."""
    if key in info:
        return as_tensor(info[key], device).bool()
    return torch.ones(num_envs, num_actions, dtype=torch.bool, device=device)


def _stack(values: list[Any]) -> Observation:
    if isinstance(values[0], dict):
        return {key: torch.stack([value[key] for value in values]) for key in values[0]}
    return torch.stack(values)


def _where_rows(rows: Tensor, chosen: Observation, other: Observation) -> Observation:
    """Per row of the batch: ``chosen`` where ``rows`` is True, else ``other``."""
    if isinstance(chosen, dict):
        return {key: _where_rows(rows, chosen[key], other[key]) for key in chosen}
    return torch.where(rows.view(-1, *([1] * (chosen.dim() - 1))), chosen, other)


class RolloutCollector:
    """Keeps the current observations of a vector env between rollouts.

    The env must use SAME_STEP autoreset (the obs returned for an ended episode is already
    the next episode's first obs, the final one is in ``info["final_obs"]``).
    """

    def __init__(self, env: gym.vector.VectorEnv, agent: Agent, seed: int | None = None) -> None:
        self.env = env
        self.agent = agent
        self.device = agent.device
        self.num_envs = env.num_envs
        self.num_actions = int(env.single_action_space.n)
        obs, info = env.reset(seed=seed)
        self.obs = as_observation(obs, self.device)
        self.mask = self._mask(info, "action_mask")
        self.episode_return = torch.zeros(self.num_envs, device=self.device)
        self.episode_length = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.env_steps = 0

    def _mask(self, info: dict[str, Any], key: str) -> Tensor:
        return action_mask_from_info(info, key, self.num_envs, self.num_actions, self.device)

    @torch.no_grad()
    def collect(self, num_steps: int) -> tuple[Rollout, EpisodeStats]:
        steps: dict[str, list[Tensor]] = {k: [] for k in Rollout.__dataclass_fields__}
        stats = EpisodeStats()
        for _ in range(num_steps):
            policy = self.agent.explore(self.obs, self.mask)
            obs, rewards, terminated, truncated, info = self.env.step(policy.actions)
            obs = map_observation(torch.clone, as_observation(obs, self.device))  # envs may reuse buffers
            rewards = as_tensor(rewards, self.device).float()
            terminated = as_tensor(terminated, self.device).bool()
            truncated = as_tensor(truncated, self.device).bool()
            done = terminated | truncated
            next_obs, next_mask = obs, self._mask(info, "action_mask")
            if bool(done.any()):
                next_obs = _where_rows(done, as_observation(info["final_obs"], self.device), obs)
                final_mask = self._mask(info, "final_action_mask") & ~done[:, None]
                next_mask = torch.where(done[:, None], final_mask, next_mask)
            zeros = torch.zeros(self.num_envs, device=self.device)
            for name, value in (
                ("obs", self.obs),
                ("action_masks", self.mask),
                ("actions", policy.actions.long()),
                ("log_probs", zeros if policy.log_probs is None else policy.log_probs.float()),
                ("values", zeros if policy.values is None else policy.values.float()),
                ("rewards", rewards),
                ("terminated", terminated),
                ("truncated", truncated),
                ("next_obs", next_obs),
                ("next_action_masks", next_mask),
            ):
                steps[name].append(value)
            self._track_episodes(rewards, done, info, stats)
            self.obs, self.mask = obs, self._mask(info, "action_mask")
            self.env_steps += self.num_envs
        rollout = Rollout(**{name: _stack(values) for name, values in steps.items()})
        return rollout, stats

    def _track_episodes(
        self, rewards: Tensor, done: Tensor, info: dict[str, Any], stats: EpisodeStats
    ) -> None:
        self.episode_return += rewards
        self.episode_length += 1
        if not bool(done.any()):
            return
        ended = done.nonzero().flatten()
        stats.returns.extend(self.episode_return[ended].tolist())
        stats.lengths.extend(self.episode_length[ended].tolist())
        if "outcome" in info:
            stats.outcomes.extend(as_tensor(info["outcome"], self.device)[ended].long().tolist())
        self.episode_return[ended] = 0.0
        self.episode_length[ended] = 0
