"""Proximal Policy Optimization with a clipped surrogate, GAE and action masks.

The objective is the one in the seed, ``L = L_policy + c1 * L_value + c2 * L_entropy``:

* ``L_policy = mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps)))`` with the probability
  ratio ``r = pi_new(a|s) / pi_old(a|s)``: the clip is the trust region;
* ``L_value = mean(0.5 * (V(s) - R)^2)``, optionally clipped around the old values;
* ``L_entropy = -mean(H[pi(.|s)])``, so a positive ``c2`` is an exploration bonus.

``ppo_loss`` computes the terms as a pure function; :class:`PPOAgent` collects nothing
itself: it acts for the training loop, and :meth:`PPOAgent.learn` turns a time-major
:class:`~agents.base.Rollout` into advantages (``agents.gae.gae``) and then runs
``num_epochs`` passes of ``num_minibatches`` gradient steps over the flattened samples.

Network contract: ``network(observation_space, action_space)`` builds a module whose
``forward(obs)`` returns ``(logits (B, A), values (B,))``. ``obs`` is handed over as the env
produced it, a tensor ``(B, *obs_shape)`` or a dict of such tensors, so a network may take
structured observations; the agent only moves it to the device and slices its batch dim.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import gymnasium
import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from agents.base import Observation, PolicyStep, Rollout, map_observation, masked_logits
from agents.gae import gae
from agents.networks import ActorCriticMLP

NetworkFactory = Callable[[gymnasium.Space, gymnasium.Space], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class PPOLossTerms(NamedTuple):
    """The named terms of the PPO objective (scalars); ``approx_kl`` and ``clipfrac`` carry no grad."""

    policy: Tensor
    value: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clipfrac: Tensor


def ppo_loss(
    new_log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    clip_coef: float,
    clip_value: float | None = None,
) -> PPOLossTerms:
    """Clipped-surrogate policy loss, (clipped) value loss and entropy loss.

    Shapes: every input (N,) -> every term a scalar.

    Args:
        new_log_probs: log pi_new(a|s) of the taken actions, with grad.
        old_log_probs: log pi_old(a|s) recorded when acting.
        advantages: advantage estimates (already normalised if wanted).
        new_values, old_values: V(s) now (with grad) and when acting.
        returns: value targets.
        entropy: entropy of pi_new(.|s) per sample.
        clip_coef: epsilon of the ratio clip.
        clip_value: clip the value change to ``[-clip_value, clip_value]``; ``None`` = no clip.

    Returns:
        ``PPOLossTerms(policy, value, entropy=-mean(entropy), approx_kl, clipfrac)``.
    """
    log_ratio = new_log_probs - old_log_probs
    ratio = log_ratio.exp()
    surrogate = -advantages * ratio
    clipped_surrogate = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    policy_loss = torch.max(surrogate, clipped_surrogate).mean()

    value_error = (new_values - returns).pow(2)
    if clip_value is not None:
        clipped_values = old_values + torch.clamp(new_values - old_values, -clip_value, clip_value)
        value_error = torch.max(value_error, (clipped_values - returns).pow(2))
    value_loss = 0.5 * value_error.mean()

    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return PPOLossTerms(policy_loss, value_loss, -entropy.mean(), approx_kl, clipfrac)


def logit_spread(logits: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """Mean squared deviation of the legal actions' logits from their mean, averaged over states.

    A penalty on it keeps the policy from saturating: its gradient pulls every logit toward
    the state's mean in proportion to the distance, so a move that no advantage supports
    drifts back to a sampled probability. The entropy bonus cannot do that once the policy
    is nearly deterministic (its gradient with respect to a logit is ``-p (log p + H)``,
    which vanishes with ``p``).

    Illegal entries are ignored, so masked logits (:func:`agents.base.masked_logits`) do too.

    Shapes: ``logits`` (B, A), ``action_mask`` (B, A) nonzero = legal -> scalar.
    """
    if action_mask is None:
        return logits.var(dim=-1, unbiased=False).mean()
    legal = action_mask.bool()
    count = legal.sum(dim=-1).clamp(min=1)
    mean = torch.where(legal, logits, 0.0).sum(dim=-1) / count
    deviation = torch.where(legal, logits - mean.unsqueeze(-1), 0.0)
    return (deviation.pow(2).sum(dim=-1) / count).mean()


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 - Var[targets - predictions] / Var[targets]``; NaN when the targets are constant.

    Shapes: predictions, targets: (N,) -> float.
    """
    target_variance = targets.var(unbiased=False)
    if target_variance.item() == 0.0:
        return math.nan
    return float(1.0 - (targets - predictions).var(unbiased=False) / target_variance)


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam as in the PPO reference implementations: lr 2.5e-4, eps 1e-5."""
    return torch.optim.Adam(params, lr=2.5e-4, eps=1e-5)


@dataclass
class PPOBatch:
    """Training samples flattened from a rollout.

    Shapes: N = T * B samples. obs (N, *obs_shape) or a dict of such; action_masks (N, A) bool;
    actions (N,) int64; log_probs, values, advantages, returns (N,) float32.
    """

    obs: Observation
    action_masks: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    def __getitem__(self, index: Tensor) -> PPOBatch:
        return PPOBatch(
            **{f.name: map_observation(lambda x: x[index], getattr(self, f.name)) for f in fields(self)}
        )


def _value_clip(clip_value_loss: bool | float | None, clip_coef: float) -> float | None:
    if clip_value_loss is True:
        return clip_coef
    if clip_value_loss is False or clip_value_loss is None:
        return None
    if clip_value_loss <= 0:
        raise ValueError(f"clip_value_loss must be a bool or a positive float, got {clip_value_loss!r}")
    return float(clip_value_loss)


def _check_settings(
    rollout_steps: int,
    num_epochs: int,
    num_minibatches: int,
    gamma: float,
    gae_lambda: float,
    clip_coef: float,
) -> None:
    counts = {"rollout_steps": rollout_steps, "num_epochs": num_epochs, "num_minibatches": num_minibatches}
    for name, count in counts.items():
        if int(count) < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    for name, rate in (("gamma", gamma), ("gae_lambda", gae_lambda)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    if clip_coef <= 0:
        raise ValueError(f"clip_coef must be positive, got {clip_coef}")


class PPOAgent:
    """PPO for discrete (maskable) actions; implements the :class:`~agents.base.Agent` protocol.

    ``clip_value_loss``: ``True`` clips the value loss with ``clip_coef``, a float clips it with
    that coefficient, ``False`` disables the clip. ``target_kl``: stop the update (all epochs)
    at the first minibatch whose approximate KL exceeds it, before its gradient step (its terms
    still count in the reported means; ``diag/epochs_run`` counts the epochs begun).
    ``lr_schedule``: factory ``optimizer -> LRScheduler``, stepped once per :meth:`learn`.
    Only parameters with ``requires_grad`` reach the optimizer (frozen weights stay out).
    """

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        *,
        network: NetworkFactory = ActorCriticMLP,
        optimizer: OptimizerFactory = default_optimizer,
        device: str | torch.device = "cpu",
        rollout_steps: int = 128,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_coef: float = 0.2,
        clip_value_loss: bool | float = True,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        logit_coef: float = 0.0,
        num_epochs: int = 4,
        num_minibatches: int = 4,
        normalize_advantages: bool = True,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        lr_schedule: ScheduleFactory | None = None,
    ) -> None:
        _check_settings(rollout_steps, num_epochs, num_minibatches, gamma, gae_lambda, clip_coef)
        self.device = torch.device(device)
        self.rollout_steps = int(rollout_steps)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.clip_coef = float(clip_coef)
        self.clip_value = _value_clip(clip_value_loss, self.clip_coef)
        self.value_coef, self.entropy_coef = float(value_coef), float(entropy_coef)
        if logit_coef < 0:
            raise ValueError(f"logit_coef must be >= 0, got {logit_coef}")
        self.logit_coef = float(logit_coef)
        self.num_epochs, self.num_minibatches = int(num_epochs), int(num_minibatches)
        self.normalize_advantages = normalize_advantages
        self.max_grad_norm = max_grad_norm
        self.target_kl = target_kl
        self.network = network(observation_space, action_space).to(self.device)
        self.optimizer = optimizer([p for p in self.network.parameters() if p.requires_grad])
        self.lr_schedule = lr_schedule(self.optimizer) if lr_schedule is not None else None
        self.updates = 0
        self.env_steps = 0

    def _to_device(self, obs: Any) -> Observation:
        return map_observation(lambda x: torch.as_tensor(x, device=self.device), obs)

    def _masked_logits(self, obs: Observation, action_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        logits, values = self.network(obs)
        if action_mask is not None:
            action_mask = torch.as_tensor(action_mask, device=self.device)
        return masked_logits(logits.float(), action_mask), values.float()

    @torch.no_grad()
    def act(self, obs: Tensor, action_mask: Tensor | None = None, deterministic: bool = False) -> Tensor:
        """Actions (B,): the most probable legal action, or a sample from the masked policy."""
        logits, _ = self._masked_logits(self._to_device(obs), action_mask)
        if deterministic:
            return logits.argmax(dim=-1)
        return Categorical(logits=logits, validate_args=False).sample()

    @torch.no_grad()
    def explore(self, obs: Tensor, action_mask: Tensor | None = None) -> PolicyStep:
        """Sampled actions (B,) with their log-probabilities (B,) and state values (B,)."""
        logits, values = self._masked_logits(self._to_device(obs), action_mask)
        policy = Categorical(logits=logits, validate_args=False)
        actions = policy.sample()
        return PolicyStep(actions=actions, log_probs=policy.log_prob(actions), values=values)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """One PPO update from a time-major rollout; returns ``loss/*`` and ``diag/*`` metrics."""
        rollout = rollout.to(self.device)
        num_samples = rollout.num_steps * rollout.num_envs
        if num_samples < self.num_minibatches:
            raise ValueError(
                f"rollout holds {num_samples} samples (T={rollout.num_steps} x B={rollout.num_envs}), "
                f"fewer than num_minibatches={self.num_minibatches}"
            )
        advantages, returns = self._advantages(rollout)
        batch = PPOBatch(
            obs=map_observation(lambda x: x.flatten(0, 1), rollout.obs),
            action_masks=rollout.action_masks.flatten(0, 1),
            actions=rollout.actions.flatten(0, 1),
            log_probs=rollout.log_probs.flatten(0, 1).float(),
            values=rollout.values.flatten(0, 1).float(),
            advantages=advantages.flatten(0, 1),
            returns=returns.flatten(0, 1),
        )
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        metrics = self._update(batch)
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.updates += 1
        self.env_steps += num_samples
        metrics["diag/explained_variance"] = explained_variance(batch.values, batch.returns)
        metrics["diag/learning_rate"] = learning_rate
        return metrics

    @torch.no_grad()
    def _advantages(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """GAE with ``next_values = V(next_obs)``, evaluated in minibatch-sized chunks."""
        num_steps, num_envs = rollout.num_steps, rollout.num_envs
        next_obs = map_observation(lambda x: x.flatten(0, 1), rollout.next_obs)
        chunks = torch.arange(num_steps * num_envs, device=self.device).tensor_split(self.num_minibatches)
        next_values = torch.cat(
            [self.network(map_observation(lambda x, c=chunk: x[c], next_obs))[1].float() for chunk in chunks]
        )
        return gae(
            rollout.rewards,
            rollout.values,
            next_values.reshape(num_steps, num_envs),
            rollout.terminated,
            rollout.done,
            self.gamma,
            self.gae_lambda,
        )

    def _minibatch_loss(self, minibatch: PPOBatch) -> tuple[Tensor, PPOLossTerms]:
        logits, new_values = self._masked_logits(minibatch.obs, minibatch.action_masks)
        policy = Categorical(logits=logits, validate_args=False)
        advantages = minibatch.advantages
        if self.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        terms = ppo_loss(
            policy.log_prob(minibatch.actions),
            minibatch.log_probs,
            advantages,
            new_values,
            minibatch.values,
            minibatch.returns,
            policy.entropy(),
            self.clip_coef,
            self.clip_value,
        )
        total = terms.policy + self.value_coef * terms.value + self.entropy_coef * terms.entropy
        if self.logit_coef > 0:
            total = total + self.logit_coef * logit_spread(logits, minibatch.action_masks)
        return total, terms

    def _update(self, batch: PPOBatch) -> dict[str, float]:
        """Epochs x minibatches of clipped gradient steps; metrics are means over minibatches.

        A minibatch whose loss or gradient is not finite is refused: no optimizer step, the
        parameters stay untouched, its terms stay out of the means, and it is counted in
        ``diag/skipped_updates``.
        """
        sums = torch.zeros(6, device=self.device)
        evaluated = epochs_run = skipped = 0
        stop = False
        for _ in range(self.num_epochs):
            epochs_run += 1
            order = torch.randperm(batch.actions.shape[0], device=self.device)
            for indices in order.tensor_split(self.num_minibatches):
                total, terms = self._minibatch_loss(batch[indices])
                if not bool(torch.isfinite(total)):
                    skipped += 1
                    continue
                evaluated += 1
                sums += torch.stack(
                    [terms.policy, terms.value, terms.entropy, total, terms.approx_kl, terms.clipfrac]
                ).detach()
                if self.target_kl is not None and terms.approx_kl.item() > self.target_kl:
                    stop = True
                    break
                if not self._gradient_step(total):
                    skipped += 1
            if stop:
                break
        means = (sums / evaluated).tolist() if evaluated else [math.nan] * 6
        policy, value, entropy, total, approx_kl, clipfrac = means
        return {
            "loss/policy": policy,
            "loss/value": value,
            "loss/entropy": entropy,
            "loss/total": total,
            "diag/approx_kl": approx_kl,
            "diag/clipfrac": clipfrac,
            "diag/entropy": -entropy,
            "diag/epochs_run": float(epochs_run),
            "diag/skipped_updates": float(skipped),
        }

    def _gradient_step(self, total: Tensor) -> bool:
        """Backpropagate ``total`` and step, unless the gradient is not finite (then refuse, False)."""
        self.optimizer.zero_grad()
        total.backward()
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.network.parameters(), max_norm)
        if not bool(torch.isfinite(grad_norm)):
            self.optimizer.zero_grad()
            return False
        self.optimizer.step()
        return True

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of weights, optimizer, LR schedule and counters."""
        state: dict[str, Any] = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "env_steps": self.env_steps,
        }
        if self.lr_schedule is not None:
            state["lr_schedule"] = self.lr_schedule.state_dict()
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_schedule is not None and "lr_schedule" in state:
            self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.updates = int(state["updates"])
        self.env_steps = int(state["env_steps"])
