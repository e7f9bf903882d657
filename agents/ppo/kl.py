"""The KL penalty of RLHF fine-tuning: per-token rewards and the controllers of its coefficient.

The policy is rewarded per generated token by ``-beta * (log pi(a|s) - log pi_ref(a|s))``, a
sample of the KL divergence to the frozen reference model, plus the reward-function score at
the sequence's last token. The penalty keeps the policy near the reference so it cannot drift
into text the reward function overrates (reward hacking).

``beta`` is set by a controller: :class:`FixedKLController` keeps it constant;
:class:`PIKLController` (the default of the text presets) holds the measured KL at a target
whatever the run length; :class:`AdaptiveKLController` is Ziegler et al. (2019)'s
proportional rule, whose horizon is counted in episodes. ``beta = 0`` turns the penalty off.
Controllers hold only numbers, so their ``state_dict`` goes into checkpoints.

## Estimators and placement

With ``log r = log pi_ref(a|s) - log pi(a|s)`` on tokens sampled from pi (Schulman, 2020,
"Approximating KL divergence"):

- ``k1 = -log r``: unbiased, high variance, negative on some tokens. The project's measured
  KL (``charts/kl``, the evaluation's "KL to the reference") is always k1 summed over a
  completion.
- ``k2 = (log r)^2 / 2``: biased (exact to second order), low variance, never negative.
- ``k3 = (r - 1) - log r``: unbiased and never negative, low variance while pi stays near
  pi_ref; it grows like ``r`` where the reference is far more likely than the policy.

``placement="reward"`` subtracts ``beta * k`` from each token's reward (the classic RLHF
penalty: its effect reaches the policy through the advantages, so the critic must learn it);
``placement="loss"`` adds ``beta * mean k`` of the current policy's tokens to the loss
instead (as GRPO does): it acts directly on the gradient and leaves rewards and advantages
to the task. The penalty in the reward uses the sampling policy's log-probs; in the loss,
the log-probs of the policy being optimised, so the gradient of k3 pulls toward pi_ref.

## The ceiling

A controller acts on ``beta`` after each update, and the policy answers a change of ``beta``
only over the next updates: in a short run (tens of updates) the KL overshoots before
``beta`` has risen. ``PPOAgent(kl_ceiling=c)`` bounds the KL inside the update: before each
minibatch step it estimates the KL of the policy being optimised
(:func:`policy_kl_to_reference`, scaled to nats per completion by the batch's tokens per
completion); above ``c * target`` that step descends this KL estimate alone instead of the
PPO objective (a switching step, as in switching subgradient methods for constrained
problems), by as much as brings the linearised estimate back to the ceiling (a Polyak step,
at most as long as the last optimizer step). The controller then settles ``beta`` below the
ceiling without the overshoot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from agents.core import distributed


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


class PIKLController:
    """Holds the measured KL at ``target`` by proportional-integral control of ``log beta``.

    After each batch with mean sequence KL ``kl`` (k1, nats per completion):
    ``e = clip(log(kl / target), -1, 1)``; ``log beta += ki * e * (decrease if e < 0 else 1)
    + kp * (e - e_prev)``.
    The integral term is dual ascent on the constraint ``KL <= target`` (``beta`` is its
    Lagrange multiplier), taken in log space so that the step is relative and ``beta`` stays
    positive; the proportional term on the change of the error damps the overshoot that the
    policy's lag behind ``beta`` would cause. Unlike a horizon counted in episodes, the
    speed is per update: ``beta`` can change by a factor ``e^(ki)`` per update whatever the
    run length, so a short run reaches its target as well as a long one. ``beta`` falls more
    slowly than it rises (``decrease`` < 1): early in a run the KL is below any target only
    because the policy has not moved yet, and a ``beta`` wound down then lets it overshoot.

    Args:
        coef: the initial beta (> 0; 0 turns the penalty off and the controller with it).
        target: the KL to hold, nats per completion (> 0).
        ki, kp: integral and proportional gains (per update, on the log error).
        decrease: factor on the integral step while the KL is below the target, in (0, 1].
        hold_until_reached: keep beta from falling until the measured KL first reaches the
            target (the policy has not moved yet; a beta wound down then is what lets the KL
            overshoot in short runs). Off by default.
        min_coef, max_coef: bounds of beta.
    """

    def __init__(
        self,
        coef: float = 0.1,
        target: float = 1.0,
        ki: float = 0.3,
        kp: float = 0.5,
        decrease: float = 0.5,
        min_coef: float = 1e-4,
        max_coef: float = 100.0,
        hold_until_reached: bool = False,
    ) -> None:
        if not target > 0:
            raise ValueError(f"target KL must be positive (nats per completion), got {target}")
        if not (coef == 0 or 0 < min_coef <= coef <= max_coef):
            raise ValueError(
                "need coef = 0 (penalty off) or 0 < min_coef <= coef <= max_coef, got "
                f"min_coef={min_coef}, coef={coef}, max_coef={max_coef}"
            )
        for name, gain in (("ki", ki), ("kp", kp)):
            if not gain >= 0:
                raise ValueError(f"{name} must be >= 0, got {gain}")
        self.coef = float(coef)
        self.target = float(target)
        if not 0 < decrease <= 1:
            raise ValueError(f"decrease must be in (0, 1], got {decrease}")
        self.ki, self.kp, self.decrease = float(ki), float(kp), float(decrease)
        self.min_coef, self.max_coef = float(min_coef), float(max_coef)
        self.previous_error: float | None = None
        self.hold_until_reached = bool(hold_until_reached)
        self.reached = False

    def update(self, kl: float, num_episodes: int) -> None:
        if not math.isfinite(kl) or num_episodes < 1 or self.coef == 0 or self.ki == self.kp == 0:
            return  # nothing measured, the penalty off, or zero gains (a fixed coefficient)
        error = min(max(math.log(max(kl, 1e-6) / self.target), -1.0), 1.0)
        change = 0.0 if self.previous_error is None else error - self.previous_error
        integral = self.ki * error * (self.decrease if error < 0 else 1.0)
        step = integral + self.kp * change
        self.reached = self.reached or error >= 0
        if self.hold_until_reached and not self.reached:
            step = max(step, 0.0)
        self.coef = min(max(math.exp(math.log(self.coef) + step), self.min_coef), self.max_coef)
        self.previous_error = error

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef, "previous_error": self.previous_error, "reached": self.reached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])
        previous = state.get("previous_error")
        self.previous_error = None if previous is None else float(previous)
        self.reached = bool(state.get("reached", False))


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


KL_ESTIMATORS = ("k1", "k2", "k3")
KL_PLACEMENTS = ("reward", "loss")


def kl_estimate(log_probs: Tensor, reference_log_probs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (see the module docs).

    Shapes: log_probs, reference_log_probs (...) -> (...). Differentiable in ``log_probs``.
    """
    k1 = log_probs.float() - reference_log_probs.float()
    if estimator == "k1":
        return k1
    if estimator == "k2":
        return 0.5 * k1.square()
    if estimator == "k3":
        return torch.expm1(-k1) + k1
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: {list(KL_ESTIMATORS)}")


def policy_kl_to_reference(
    new_log_probs: Tensor, old_log_probs: Tensor, reference_log_probs: Tensor
) -> Tensor:
    """Per-token estimate of KL(pi_new || pi_ref) from tokens sampled by pi_old, with its gradient.

    The value is ``mean(rho * (log pi_new - log pi_ref))`` with ``rho = pi_new / pi_old``:
    importance-weighted k1 over the states the samples visited (their change under pi_new is
    ignored, a first-order approximation for a policy that moved little since sampling). The
    gradient is the score-function form of the KL's, ``mean(grad(rho) * k1)``: the ``+1`` term
    of differentiating ``rho * log pi_new`` has expectation 0 and only adds noise. (No
    baseline: a mean over the minibatch would differ between the processes of a data-parallel
    run.) Descending it pulls pi_new toward pi_ref on those states. Shapes: (N,) -> ().
    """
    new = new_log_probs.float()
    ratio = torch.exp(new - old_log_probs.float())
    return (ratio * (new - reference_log_probs.float()).detach()).mean()


def token_kl(log_probs: Tensor, reference_log_probs: Tensor, valid: Tensor) -> Tensor:
    """The per-token KL sample ``log pi(a|s) - log pi_ref(a|s)`` of the sampled tokens, 0 where not valid.

    The one KL estimator of the project: the training penalty and the evaluation's "KL to the
    reference" both sum it over a completion's tokens. Shapes: all the same, e.g. (T, B).
    """
    return torch.where(valid.bool(), log_probs.float() - reference_log_probs.float(), 0.0)


def kl_penalized_rewards(
    scores: Tensor,
    log_probs: Tensor,
    reference_log_probs: Tensor,
    valid: Tensor,
    coef: float,
    estimator: str = "k1",
) -> PenalizedRewards:
    """``scores - coef * k`` on every valid token, 0 elsewhere (``k``: the ``estimator``'s
    per-token KL; ``kl`` in the result is always k1, the measured KL).

    Shapes: all (T, B); ``valid`` bool, True where a token was generated.

    Args:
        scores: the env's per-step reward: the reward-function score at a sequence's last
            token, 0 before it.
        log_probs: log pi(a_t|s_t) of the generated tokens under the policy that sampled them.
        reference_log_probs: log pi_ref(a_t|s_t) under the frozen reference model.
        valid: the row generated a token at step t (False after its sequence ended).
        coef: beta; 0 leaves the scores unchanged.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
    """
    valid = valid.bool()
    kl = token_kl(log_probs, reference_log_probs, valid)
    penalty = (
        kl
        if estimator == "k1"
        else torch.where(valid, kl_estimate(log_probs, reference_log_probs, estimator), 0.0)
    )
    rewards = torch.where(valid, scores.float(), 0.0) - coef * penalty
    return PenalizedRewards(rewards=rewards, kl=kl)


def whiten_rewards(rewards: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
    """Rewards divided by their standard deviation over valid tokens (the mean is kept).

    Shapes: rewards, valid (T, B) -> (T, B), zero where not valid.
    """
    valid = valid.bool()
    values = rewards[valid]
    if distributed.is_distributed():  # the std over every process's valid tokens
        count = distributed.sum_floats(values.numel())[0]
        std = distributed.mean_std(values)[1]
    else:
        count, std = values.numel(), values.std() if values.numel() > 1 else None
    if count < 2 or std is None:
        return torch.where(valid, rewards, 0.0)
    return torch.where(valid, rewards / (std + eps), 0.0)


class KLCeiling:
    """The KL ceiling inside a PPO update (module docs, "The ceiling").

    Per update, :meth:`start` turns ``factor * controller.target`` (nats per completion) into
    nats per token. Per minibatch, :meth:`observe` keeps the policy's estimated KL to the
    reference; :meth:`excess` says (on every process alike) how far above the ceiling it is,
    and :meth:`switch` takes the step down its gradient. :meth:`snapshot` and
    :meth:`remember_step` measure the length of the optimizer's steps, which bounds a switch.

    Args:
        factor: the ceiling as a multiple of the controller's target (> 0).
        controller: a KL controller with a ``target`` (:class:`PIKLController`,
            :class:`AdaptiveKLController`).
    """

    def __init__(self, factor: float, controller: Any) -> None:
        if not factor > 0:
            raise ValueError(f"kl_ceiling must be a positive factor of kl.target or null, got {factor!r}")
        if getattr(controller, "target", None) is None:
            raise ValueError(
                f"kl_ceiling={factor} is a factor of the KL controller's target, but "
                f"kl={type(controller).__name__ if controller is not None else None} has none; use "
                "agents.ppo.kl.PIKLController or AdaptiveKLController, or kl_ceiling=null"
            )
        self.factor, self.controller = float(factor), controller
        self.token_ceiling: float | None = None  # during an update with the penalty on
        self.steps = 0  # switching steps in the current update
        self.step_length: float | None = None  # of the last optimizer step
        self._pending: tuple[Tensor, float, int] | None = None

    def start(self, episodes: int, tokens: int) -> None:
        """A new update over ``episodes`` completions of ``tokens`` tokens (all processes)."""
        active = self.controller.coef > 0
        self.token_ceiling = (
            self.factor * float(self.controller.target) * episodes / max(tokens, 1) if active else None
        )
        self.steps = 0

    def finish(self) -> dict[str, float]:
        """The update's metric (``diag/kl_ceiling_steps``, when it was active); ends the update."""
        metrics = {"diag/kl_ceiling_steps": float(self.steps)} if self.token_ceiling is not None else {}
        self.token_ceiling = None
        return metrics

    def observe(self, new_log_probs: Tensor, old_log_probs: Tensor, reference: Tensor | None) -> None:
        """Keep this minibatch's KL estimate (:func:`policy_kl_to_reference`) for :meth:`excess`."""
        self._pending = None
        if self.token_ceiling is not None and reference is not None:
            estimate = policy_kl_to_reference(new_log_probs, old_log_probs, reference)
            count = new_log_probs.numel()
            self._pending = (estimate, float(estimate.detach()) * count, count)

    def excess(self) -> tuple[float, Tensor | None]:
        """(nats per token above the ceiling, 0 when not above or no step measured yet; the
        estimate to descend, ``None`` on a process without rows). Decided from every process's
        estimates, so every process switches alike."""
        pending, self._pending = self._pending, None
        if self.token_ceiling is None:
            return 0.0, None
        kl_sum, count = distributed.sum_floats(*(pending[1:] if pending is not None else (0.0, 0)))
        above = kl_sum / count - self.token_ceiling if count > 0 else 0.0
        if above <= 0 or self.step_length is None:
            return 0.0, None
        return above, pending[0] if pending is not None else None

    def switch(self, parameters: list[Tensor], grad_norm: float, excess: float) -> None:
        """Step ``parameters`` straight down their (reduced) gradient, the linearised estimate
        back to the ceiling, at most the last optimizer step's length."""
        self.steps += 1
        if grad_norm > 0:
            length = min(float(self.step_length or 0.0), excess / grad_norm)
            with torch.no_grad():
                torch._foreach_add_(parameters, [p.grad for p in parameters], alpha=-length / grad_norm)

    @staticmethod
    def snapshot(parameters: list[Tensor]) -> list[Tensor]:
        return [p.detach().clone() for p in parameters]

    def remember_step(self, parameters: list[Tensor], before: list[Tensor]) -> None:
        moved = [float((p.detach() - b).square().sum()) for p, b in zip(parameters, before, strict=True)]
        self.step_length = math.sqrt(sum(moved))
