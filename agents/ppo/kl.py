"""The KL penalty of RLHF fine-tuning: per-token rewards and the controllers of its coefficient.

The policy is rewarded per generated token by ``-beta * (log pi(a|s) - log pi_ref(a|s))``, a
sample of the KL divergence to the frozen reference model, plus the reward-function score at
the sequence's last token. The penalty keeps the policy near the reference so it cannot drift
into text the reward function overrates (reward hacking).

``beta`` is set by a controller: :class:`FixedKLController` keeps it constant;
:class:`AdaptiveKLController` (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences") moves it so that the measured KL tracks a target. ``beta = 0`` turns the
penalty off. Controllers hold only numbers, so their ``state_dict`` goes into checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


class KLController(Protocol):
    """The coefficient ``coef`` (beta) of the KL penalty and how it changes after each batch."""

    coef: float

    def update(self, kl: float, num_episodes: int) -> None:
        """Adjust ``coef`` after a batch of ``num_episodes`` episodes whose mean sequence KL was ``kl``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _check_coef(coef: float) -> float:
    if not coef >= 0.0:
        raise ValueError(f"KL coefficient must be a number >= 0 (0 turns the penalty off), got {coef}")
    return float(coef)


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, coef: float = 0.1) -> None:
        self.coef = _check_coef(coef)

    def update(self, kl: float, num_episodes: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])


class AdaptiveKLController:
    """Proportional control of beta toward a target KL (Ziegler et al. 2019).

    After a batch of ``n`` episodes with mean sequence KL ``kl``:
    ``beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon``.
    Too much KL raises beta, too little lowers it; ``horizon`` (in episodes) sets how fast.
    A non-finite ``kl`` leaves beta unchanged.
    """

    def __init__(self, coef: float = 0.1, target: float = 6.0, horizon: int = 10_000) -> None:
        if not target > 0:
            raise ValueError(f"target KL must be positive (nats per sequence), got {target}")
        if not horizon > 0:
            raise ValueError(f"horizon must be a positive number of episodes, got {horizon}")
        self.coef = _check_coef(coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, kl: float, num_episodes: int) -> None:
        if not math.isfinite(kl):
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * num_episodes / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])


@dataclass
class PenalizedRewards:
    """Per-token rewards with the KL penalty, and the KL sample they were built from.

    Shapes: rewards, kl (T, B) float32, zero where the step is not valid.
    """

    rewards: Tensor
    kl: Tensor


def token_kl(log_probs: Tensor, reference_log_probs: Tensor, valid: Tensor) -> Tensor:
    """The per-token KL sample ``log pi(a|s) - log pi_ref(a|s)`` of the sampled tokens, 0 where not valid.

    The one KL estimator of the project: the training penalty and the evaluation's "KL to the
    reference" both sum it over a completion's tokens. Shapes: all the same, e.g. (T, B).
    """
    return torch.where(valid.bool(), log_probs.float() - reference_log_probs.float(), 0.0)


def kl_penalized_rewards(
    scores: Tensor, log_probs: Tensor, reference_log_probs: Tensor, valid: Tensor, coef: float
) -> PenalizedRewards:
    """``scores - coef * (log pi - log pi_ref)`` on every valid token, 0 elsewhere.

    Shapes: all (T, B); ``valid`` bool, True where a token was generated.

    Args:
        scores: the env's per-step reward: the reward-function score at a sequence's last
            token, 0 before it.
        log_probs: log pi(a_t|s_t) of the generated tokens under the policy that sampled them.
        reference_log_probs: log pi_ref(a_t|s_t) under the frozen reference model.
        valid: the row generated a token at step t (False after its sequence ended).
        coef: beta; 0 leaves the scores unchanged.
    """
    valid = valid.bool()
    kl = token_kl(log_probs, reference_log_probs, valid)
    rewards = torch.where(valid, scores.float(), 0.0) - coef * kl
    return PenalizedRewards(rewards=rewards, kl=kl)


def whiten_rewards(rewards: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
    """Rewards divided by their standard deviation over valid tokens (the mean is kept).

    Shapes: rewards, valid (T, B) -> (T, B), zero where not valid.
    """
    valid = valid.bool()
    values = rewards[valid]
    if values.numel() < 2:
        return torch.where(valid, rewards, 0.0)
    return torch.where(valid, rewards / (values.std() + eps), 0.0)
