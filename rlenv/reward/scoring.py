"""Reward functions for the text env built on reward models: ``scores = reward_fn(prompts, completions)``.

- :class:`RewardModelReward`: a saved :class:`rlenv.reward.model.RewardModel` (what
  ``reward_fn="model:<dir>"`` of :func:`rlenv.text.rewards.make_reward_fn` builds); it
  returns the model's calibrated scores.
- :class:`MonitoredReward`: returns one reward function's scores (the trained reward
  model's) and records another's on the same completions (the labeler's), so that a
  training loop can log how far the two drift apart. A reward model that the policy
  learns to exploit scores its completions ever higher while the labeler does not: the
  gap ``rm_minus_labeler`` grows. Both scores are standardised with their mean and
  standard deviation on the completions the reward model was trained on, so the gap
  starts near 0 and is measured in units of each score's spread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlenv.reward.model import RewardModel

ScoreFn = Callable[[list[str], list[str]], Any]


class RewardModelReward:
    """Calibrated scores of a saved reward model, on CPU tensors (B,) float32.

    Args:
        path: a directory written by :meth:`RewardModel.save` (or a loaded model).
        device: where the model runs.
        batch_size: pairs per forward pass.
    """

    def __init__(
        self, path: str | os.PathLike[str] | RewardModel, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self.model = path if isinstance(path, RewardModel) else RewardModel.load(path, device=device)
        self.model.eval()
        self.batch_size = int(batch_size)

    def __call__(self, prompts: list[str], completions: list[str]) -> Tensor:
        return self.model.score(prompts, completions, self.batch_size).cpu()


def as_array(scores: Any) -> np.ndarray:
    """Scores of any reward function (list, array, tensor) as float64 (B,)."""
    if isinstance(scores, Tensor):
        scores = scores.detach().to("cpu", torch.float64)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


class MonitoredReward:
    """``reward_fn``'s scores, with ``monitor_fn``'s scores of the same completions kept for logging.

    Args:
        reward_fn: the reward the policy is trained on (e.g. :class:`RewardModelReward`).
        monitor_fn: the score to compare with (e.g. a noise-free simulated labeler).
        reward_mean, reward_std: standardise ``reward_fn``'s scores for the gap (its scores
            are returned unchanged).
        monitor_mean, monitor_std: standardise ``monitor_fn``'s scores for the gap.

    :meth:`drain` returns the means over every completion scored since the last call.
    """

    def __init__(
        self,
        reward_fn: ScoreFn,
        monitor_fn: ScoreFn,
        *,
        reward_mean: float = 0.0,
        reward_std: float = 1.0,
        monitor_mean: float = 0.0,
        monitor_std: float = 1.0,
    ) -> None:
        if reward_std <= 0 or monitor_std <= 0:
            raise ValueError(f"standard deviations must be > 0, got {reward_std} and {monitor_std}")
        self.reward_fn, self.monitor_fn = reward_fn, monitor_fn
        self.reward_mean, self.reward_std = float(reward_mean), float(reward_std)
        self.monitor_mean, self.monitor_std = float(monitor_mean), float(monitor_std)
        self._rewards: list[np.ndarray] = []
        self._monitored: list[np.ndarray] = []

    def __call__(self, prompts: list[str], completions: list[str]) -> Any:
        scores = self.reward_fn(prompts, completions)
        self._rewards.append(as_array(scores))
        self._monitored.append(as_array(self.monitor_fn(prompts, completions)))
        return scores

    def drain(self, prefix: str = "charts/") -> dict[str, float]:
        """``rm_score``, ``labeler_score`` (raw means) and their standardised gap; {} if nothing scored."""
        if not self._rewards:
            return {}
        rewards, monitored = np.concatenate(self._rewards), np.concatenate(self._monitored)
        self._rewards, self._monitored = [], []
        gap = (rewards - self.reward_mean) / self.reward_std - (
            monitored - self.monitor_mean
        ) / self.monitor_std
        return {
            f"{prefix}rm_score": float(rewards.mean()),
            f"{prefix}labeler_score": float(monitored.mean()),
            f"{prefix}rm_minus_labeler": float(gap.mean()),
        }


def standardization(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (at least 1e-6) of a list of scores."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size < 2:
        raise ValueError(f"need at least 2 scores to standardise, got {values.size}")
    return float(values.mean()), max(float(values.std(ddof=1)), 1e-6)
