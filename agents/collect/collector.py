"""Stepping a vector env with an agent and storing the transitions time-major."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from agents.core.base import Agent, Observation, Rollout, map_observation
from rlenv.env_state import get_env_state, set_env_state


@dataclass
class EpisodeStats:
    """Episodes that ended during a rollout.

    ``returns`` and ``lengths`` per episode; ``outcomes`` (+1/0/-1) when the env reports
    ``info["outcome"]``; ``extras`` the numbers of ``info["episode_metrics"]`` (name -> (B,)
    values at the rows that ended); ``samples`` (prompt, completion, return) when it describes its
    episodes as text (``info["prompt"]`` and ``info["completion"]``); ``texts`` maps a
    TensorBoard tag to markdown to log.
    """

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    outcomes: list[int] = field(default_factory=list)
    samples: list[tuple[str, str, float]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    extras: dict[str, list[float]] = field(default_factory=dict)  # info["episode_metrics"]

    def metrics(self) -> dict[str, float]:
        if not self.returns:
            return {}
        out = {
            "charts/episode_return": float(np.mean(self.returns)),
            "charts/episode_length": float(np.mean(self.lengths)),
            "charts/episodes": float(len(self.returns)),
        }
        out |= {f"charts/{name}": float(np.mean(values)) for name, values in self.extras.items() if values}
        if self.outcomes:
            outcomes = np.asarray(self.outcomes)
            out["charts/win_rate"] = float(np.mean(outcomes > 0))
            out["charts/draw_rate"] = float(np.mean(outcomes == 0))
            out["charts/loss_rate"] = float(np.mean(outcomes < 0))
        return out


def samples_markdown(samples: list[tuple[str, str, float]]) -> str:
    """A markdown table of (prompt, completion, return) rows (for ``logger.text``)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ").strip() or " "

    rows = [f"| {cell(prompt)} | {cell(completion)} | {value:.3f} |" for prompt, completion, value in samples]
    return "\n".join(["| prompt | completion | return |", "|---|---|---|", *rows])


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


STEP_FIELDS = tuple(f.name for f in fields(Rollout) if f.name != "whole_episodes")


def _stack(values: list[Any]) -> Any:
    if values[0] is None:
        return None
    if isinstance(values[0], dict):
        return {key: torch.stack([value[key] for value in values]) for key in values[0]}
    return torch.stack(values)


def _where_rows(rows: Tensor, chosen: Observation, other: Observation) -> Observation:
    """Per row of the batch: ``chosen`` where ``rows`` is True, else ``other``."""
    if isinstance(chosen, dict):
        return {key: _where_rows(rows, chosen[key], other[key]) for key in chosen}
    return torch.where(rows.view(-1, *([1] * (chosen.dim() - 1))), chosen, other)


def autoreset_mode(env: Any) -> AutoresetMode:
    """The env's ``metadata["autoreset_mode"]`` (Gymnasium's default, next-step, when absent)."""
    mode = getattr(env, "metadata", {}).get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(mode.value if isinstance(mode, AutoresetMode) else mode)


class RolloutCollector:
    """The one collector: steps a vector env with an agent and stores the steps time-major.

    It follows the env's ``metadata["autoreset_mode"]``:

    * ``same_step``: an ended row's returned obs already starts the next episode; the
      final obs comes from ``info["final_obs"]``. Every step is valid.
    * ``next_step``: an ended row is reset by the following step, whose action the env
      ignores; that step is stored as padding (``valid`` False).
    * ``disabled`` (batch episodes): each :meth:`collect` resets every row and steps until
      all rows have ended (or ``num_steps``); a row's steps after its end are padding. The
      rollout is marked ``whole_episodes``. Envs that keep ended rows idle say so with
      ``info["active"]`` (the text env); other envs get their ended rows restarted with
      ``reset(options={"reset_mask": rows})``, and those new episodes stay padding.

    Between rollouts it keeps the current observations, so episodes run across rollouts
    (except in disabled mode). Env steps (``EpisodeStats`` and the rollout's ``num_valid``)
    exclude padding.

    Args:
        env: a vector env returning torch tensors (or arrays) with a ``Discrete`` action space.
        agent: acts with ``explore(obs, action_mask)``.
        seed: seeds the env's first reset.
        samples_every: rollouts between tables of sample texts (envs that report
            ``info["prompt"]`` and ``info["completion"]``; 0: never).
        num_samples: rows per table.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        agent: Agent,
        seed: int | None = None,
        samples_every: int = 10,
        num_samples: int = 4,
    ) -> None:
        self.env = env
        self.agent = agent
        self.device = agent.device
        self.num_envs = env.num_envs
        self.num_actions = int(env.single_action_space.n)
        self.mode = autoreset_mode(env)
        self.seed = seed
        self.samples_every, self.num_samples = int(samples_every), int(num_samples)
        self.rollouts = 0
        self.episode_return = torch.zeros(self.num_envs, device=self.device)
        self.episode_length = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.obs: Observation | None = None
        self.masked = False  # whether the env reports info["action_mask"]
        self.mask: Tensor | None = None
        self.resetting = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        if self.mode != AutoresetMode.DISABLED:
            self._reset(seed)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the same episodes: the env's state
        (:func:`rlenv.env_state.get_env_state`), the current observations and the running
        episode returns and lengths."""
        return {
            "env": get_env_state(self.env),
            "obs": self.obs,
            "mask": self.mask,
            "masked": self.masked,
            "resetting": self.resetting,
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
            "rollouts": self.rollouts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = int(state["episode_return"].shape[0])
        if saved != self.num_envs:
            raise ValueError(
                f"the saved collector stepped {saved} envs, this one steps {self.num_envs}: "
                f"resume with the saved num_envs={saved}"
            )
        set_env_state(self.env, state["env"])
        self.obs = (
            map_observation(lambda t: t.to(self.device).clone(), state["obs"])
            if state["obs"] is not None
            else None
        )
        self.mask = state["mask"].to(self.device) if state["mask"] is not None else None
        self.masked = bool(state["masked"])
        self.resetting = state["resetting"].to(self.device).clone()
        self.episode_return = state["episode_return"].to(self.device).clone()
        self.episode_length = state["episode_length"].to(self.device).clone()
        self.rollouts = int(state["rollouts"])

    def _reset(self, seed: int | None) -> None:
        obs, info = self.env.reset(seed=seed)
        self.obs = map_observation(torch.clone, as_observation(obs, self.device))
        self.masked = "action_mask" in info
        self.mask = self._mask(info, "action_mask")
        self.resetting = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self.episode_return.zero_()
        self.episode_length.zero_()

    def _mask(self, info: dict[str, Any], key: str) -> Tensor | None:
        """(B, A) bool legal actions from ``info[key]``; ``None`` for envs without action masks."""
        if not self.masked:
            return None
        return action_mask_from_info(info, key, self.num_envs, self.num_actions, self.device)

    @torch.no_grad()
    def collect(self, num_steps: int) -> tuple[Rollout, EpisodeStats]:
        """``num_steps`` steps of every env (fewer in disabled mode once all rows have ended)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        whole_episodes = self.mode == AutoresetMode.DISABLED
        if whole_episodes:
            self._reset(self.seed if self.rollouts == 0 else None)
        ended = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        steps: dict[str, list[Any]] = {name: [] for name in STEP_FIELDS}
        stats = EpisodeStats()
        for _ in range(num_steps):
            assert self.obs is not None
            valid = ~(ended | self.resetting) if whole_episodes else ~self.resetting
            policy = self.agent.explore(self.obs, self.mask)
            obs, rewards, terminated, truncated, info = self.env.step(policy.actions)
            obs = map_observation(torch.clone, as_observation(obs, self.device))  # envs may reuse buffers
            rewards = torch.where(valid, as_tensor(rewards, self.device).float(), 0.0)
            terminated = as_tensor(terminated, self.device).bool() & valid
            truncated = as_tensor(truncated, self.device).bool() & valid
            done = terminated | truncated
            mask = self._mask(info, "action_mask")
            next_obs, next_mask = obs, mask
            if self.mode == AutoresetMode.SAME_STEP and bool(done.any()):
                next_obs = _where_rows(done, as_observation(info["final_obs"], self.device), obs)
                final_mask = self._mask(info, "final_action_mask")
                if final_mask is not None and next_mask is not None:
                    next_mask = torch.where(done[:, None], final_mask & ~done[:, None], next_mask)
            zeros = torch.zeros(self.num_envs, device=self.device)
            for name, value in (
                ("obs", self.obs),
                ("action_masks", self.mask),
                ("actions", policy.actions.long()),
                ("log_probs", zeros if policy.log_probs is None else policy.log_probs.float() * valid),
                ("values", zeros if policy.values is None else policy.values.float() * valid),
                ("rewards", rewards),
                ("terminated", terminated),
                ("truncated", truncated),
                ("next_obs", next_obs),
                ("next_action_masks", next_mask),
                ("valid", valid),
            ):
                steps[name].append(value)
            self._track_episodes(rewards, valid, done, info, stats)
            self.obs, self.mask = obs, mask
            if self.mode == AutoresetMode.NEXT_STEP:
                self.resetting = done
            ended |= done
            if whole_episodes and bool(ended.all()):
                break
            if whole_episodes and bool(done.any()) and "active" not in info:
                self._restart(done)
        stacked = {name: _stack(values) for name, values in steps.items()}
        padded = not bool(stacked["valid"].all())
        stacked["valid"] = stacked["valid"] if padded or whole_episodes else None
        rollout = Rollout(**stacked, whole_episodes=whole_episodes)
        self.rollouts += 1
        if stats.samples and self.samples_every > 0 and (self.rollouts - 1) % self.samples_every == 0:
            stats.texts["samples"] = samples_markdown(stats.samples[: self.num_samples])
        return rollout, stats

    def _restart(self, rows: Tensor) -> None:
        """Reset the rows that just ended (disabled mode, for envs that cannot step them further).

        Envs that keep ended rows idle report ``info["active"]`` and are left alone; the
        restarted rows' new episodes are padding until the batch ends.
        """
        obs, info = self.env.reset(options={"reset_mask": rows.cpu().numpy()})
        fresh = map_observation(torch.clone, as_observation(obs, self.device))
        assert self.obs is not None
        self.obs = _where_rows(rows, fresh, self.obs)
        mask = self._mask(info, "action_mask")
        if mask is not None and self.mask is not None:
            self.mask = torch.where(rows[:, None], mask, self.mask)

    def _track_episodes(
        self, rewards: Tensor, valid: Tensor, done: Tensor, info: dict[str, Any], stats: EpisodeStats
    ) -> None:
        self.episode_return += rewards
        self.episode_length += valid.long()
        if not bool(done.any()):
            return
        ended = done.nonzero().flatten()
        returns = self.episode_return[ended].tolist()
        stats.returns.extend(returns)
        stats.lengths.extend(self.episode_length[ended].tolist())
        if "outcome" in info:
            stats.outcomes.extend(as_tensor(info["outcome"], self.device)[ended].long().tolist())
        for name, values in info.get("episode_metrics", {}).items():
            stats.extras.setdefault(name, []).extend(as_tensor(values, self.device)[ended].float().tolist())
        if "prompt" in info and "completion" in info:
            rows = ended.tolist()
            stats.samples.extend(
                (str(info["prompt"][row]), str(info["completion"][row]), value)
                for row, value in zip(rows, returns, strict=True)
            )
        self.episode_return[ended] = 0.0
        self.episode_length[ended] = 0
