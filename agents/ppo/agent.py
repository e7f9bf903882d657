"""Proximal Policy Optimization for discrete (maskable) actions, on any env and network.

:class:`PPOAgent` collects nothing itself: it acts for the training loop, and
:meth:`PPOAgent.learn` turns a time-major :class:`~agents.core.base.Rollout` into rewards
(with the KL penalty to a reference policy when ``kl`` is set), advantages
(``agents.gae.gae``) and a batch of steps or whole episodes (:mod:`agents.ppo.batches`), then
runs the one update loop (:func:`agents.ppo.loss.ppo_update`) with the loss of
:func:`agents.ppo.loss.ppo_loss`.

Network contract: ``network(observation_space, action_space)`` builds a module whose
``forward(obs)`` returns ``(logits (B, A), values (B,))``. ``obs`` is handed over as the env
produced it, a tensor ``(B, *obs_shape)`` or a dict of such tensors, so a network may take
structured observations; the agent only moves it to the device and slices its batch dim.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium
import torch
from torch import Tensor, nn

from agents.core import distributed
from agents.core.base import Observation, PolicyStep, Rollout, move_observation, take_rows
from agents.core.sampling import sample_actions
from agents.core.schedule import ScheduleFactory, load_schedule
from agents.gae import gae
from agents.networks.mlp import ActorCriticMLP
from agents.ppo.batches import EpisodeBatch, StepBatch, batch_layout, policy_outputs
from agents.ppo.kl import (
    KL_ESTIMATORS,
    KL_PLACEMENTS,
    KLCeiling,
    KLController,
    kl_estimate,
    kl_penalized_rewards,
    whiten_rewards,
)
from agents.ppo.loss import PPOLossTerms, explained_variance, logit_spread, ppo_loss, ppo_update

ADVANTAGES = ("gae", "grpo", "rloo")
GROUP_BASELINES = ("episode", "step")
NetworkFactory = Callable[[gymnasium.Space, gymnasium.Space], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam as in the PPO reference implementations: lr 2.5e-4, eps 1e-5."""
    return torch.optim.Adam(params, lr=2.5e-4, eps=1e-5)


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
    """PPO for discrete (maskable) actions; implements the :class:`~agents.core.base.Agent` protocol.

    Args:
        observation_space, action_space: the env's single spaces.
        network: factory ``(observation_space, action_space) -> module`` whose
            ``forward(obs)`` returns ``(logits (B, A), values (B,))``.
        optimizer: factory ``params -> torch.optim.Optimizer`` over the trainable parameters.
        device: where the network lives and learning happens.
        rollout_steps: env steps per env collected before each update.
        gamma, gae_lambda: discount and GAE trace parameter, in [0, 1].
        clip_coef: epsilon of the ratio clip (> 0).
        clip_value_loss: ``True`` clips the value change with ``clip_coef``, a float with that
            value, ``False`` not at all.
        value_coef, entropy_coef: ``c1`` and ``c2`` of the objective.
        logit_coef: weight of the penalty on the spread of legal logits (:func:`logit_spread`),
            >= 0; needs the step layout (the logits of every action).
        num_epochs, num_minibatches: passes over the batch and minibatches per pass (>= 1).
        normalize_advantages: standardise advantages within each minibatch.
        max_grad_norm: clip the gradient norm (``None``: no clip).
        target_kl: stop the update at the first minibatch whose approximate KL exceeds it,
            before its gradient step (``diag/epochs_run`` counts the epochs begun).
        lr_schedule: factory ``optimizer -> LRScheduler``, stepped once per :meth:`learn`.
        kl: a KL controller (:mod:`agents.ppo.kl`): each valid step is rewarded
            ``-coef * (log pi(a|s) - log pi_ref(a|s))`` against the network's frozen reference
            policy, and the controller adapts ``coef`` after every update. ``None``: no penalty.
        whiten_rewards: divide the (penalised) step rewards by their standard deviation over
            the batch's valid steps before GAE (the mean is kept).
        bootstrap_truncated: a truncated step bootstraps from the value of its final
            observation; ``False`` treats truncation as the end of all reward (text
            completions cut at their length limit are scored and final).
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``, the per-token KL the penalty uses
            (:mod:`agents.ppo.kl`; the measured and controlled KL is always k1).
        kl_placement: ``"reward"`` (per-token penalty in the rewards) or ``"loss"`` (a term
            ``coef * mean k`` of the policy being optimised added to the loss).
        advantage: ``"gae"`` (the critic's GAE), or a group-relative baseline without a
            critic: ``"grpo"`` (returns minus the group mean, over the group's standard
            deviation) or ``"rloo"`` (returns minus the mean of the group's other episodes).
            Groups are ``group_size`` consecutive rows of a rollout of whole episodes (an env
            that gives each group one prompt, e.g. the text env's ``group_size``).
        group_size: episodes per group (>= 2 for ``grpo``/``rloo``; divides the number of envs).
        group_baseline: what ``grpo``/``rloo`` subtract from the return-to-go ``G_t`` (discounted
            by ``gamma``): ``"episode"``, the group's whole-episode returns ``G_0`` at every step
            (the usual form, for a reward at the end); ``"step"``, the group's returns-to-go at
            the same step ``t``, over the episodes still running there (for dense rewards, e.g.
            the text env's ``reward_shaping=potential``: each token is judged by what follows it
            against what followed the same position in the other completions of its prompt).
        kl_ceiling: bound the KL inside each update (:mod:`agents.ppo.kl`, "The ceiling"): a
            minibatch on which the policy's estimated KL to the reference exceeds
            ``kl_ceiling * kl.target`` nats per completion takes a step that descends that KL
            alone (``diag/kl_ceiling_steps`` counts them). Needs a controller with a target;
            ``None``: no ceiling.

    Batches: whole episodes when the rollout holds them and the network has
    ``evaluate_episodes`` (one call per minibatch of episodes), else single steps
    (:mod:`agents.ppo.batches`). Only parameters with ``requires_grad`` reach the optimizer.
    """

    data_parallel = True  # torchrun: gradients summed over the processes (agents.core.distributed)

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
        kl: KLController | None = None,
        whiten_rewards: bool = False,
        bootstrap_truncated: bool = True,
        kl_estimator: str = "k1",
        kl_placement: str = "reward",
        advantage: str = "gae",
        group_size: int = 1,
        kl_ceiling: float | None = None,
        group_baseline: str = "episode",
    ) -> None:
        _check_settings(rollout_steps, num_epochs, num_minibatches, gamma, gae_lambda, clip_coef)
        for name, value, valid in (
            ("kl_estimator", kl_estimator, KL_ESTIMATORS),
            ("kl_placement", kl_placement, KL_PLACEMENTS),
            ("advantage", advantage, ADVANTAGES),
            ("group_baseline", group_baseline, GROUP_BASELINES),
        ):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not one of {list(valid)}")
        if advantage != "gae" and int(group_size) < 2:
            raise ValueError(
                f"advantage={advantage!r} needs group_size >= 2 episodes per group, got {group_size}"
            )
        if int(group_size) < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        for name, value in (("logit_coef", logit_coef), ("value_coef", value_coef)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or null (no clipping), got {max_grad_norm}")
        if target_kl is not None and not target_kl > 0:
            raise ValueError(f"target_kl must be positive or null (no early stop), got {target_kl}")
        self.ceiling = None if kl_ceiling is None else KLCeiling(kl_ceiling, kl)
        self.device = torch.device(device)
        self.rollout_steps = int(rollout_steps)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.clip_coef = float(clip_coef)
        self.clip_value = _value_clip(clip_value_loss, self.clip_coef)
        self.value_coef, self.entropy_coef = float(value_coef), float(entropy_coef)
        self.logit_coef = float(logit_coef)
        self.num_epochs, self.num_minibatches = int(num_epochs), int(num_minibatches)
        self.normalize_advantages = normalize_advantages
        self.max_grad_norm = max_grad_norm
        self.target_kl = target_kl
        self.network = network(observation_space, action_space).to(self.device)
        self.optimizer = optimizer([p for p in self.network.parameters() if p.requires_grad])
        self.lr_schedule = lr_schedule(self.optimizer) if lr_schedule is not None else None
        self.kl = kl
        self.whiten_rewards = bool(whiten_rewards)
        self.bootstrap_truncated = bool(bootstrap_truncated)
        self.kl_estimator, self.kl_placement = kl_estimator, kl_placement
        self.advantage, self.group_size = advantage, int(group_size)
        self.group_baseline = group_baseline
        self.updates = 0
        self.env_steps = 0

    @staticmethod
    def check_spaces(observation_space: gymnasium.Space, action_space: gymnasium.Space) -> None:
        """PPO needs a ``Discrete`` action space (any observation its network reads)."""
        if not isinstance(action_space, gymnasium.spaces.Discrete):
            raise TypeError(f"PPOAgent needs a Discrete action space, got {action_space}")

    def _outputs(self, obs: Any, action_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if action_mask is not None:
            action_mask = torch.as_tensor(action_mask, device=self.device)
        return policy_outputs(self.network, move_observation(obs, self.device), action_mask)

    @torch.no_grad()
    def act(self, obs: Observation, action_mask: Tensor | None = None, deterministic: bool = False) -> Tensor:
        """Actions (B,): the most probable legal action, or a sample from the masked policy."""
        logits, _ = self._outputs(obs, action_mask)
        if deterministic:
            return logits.argmax(dim=-1)
        return sample_actions(logits)[0]

    @torch.no_grad()
    def explore(self, obs: Observation, action_mask: Tensor | None = None) -> PolicyStep:
        """Sampled actions (B,) with their log-probabilities (B,) and state values (B,)."""
        logits, values = self._outputs(obs, action_mask)
        actions, log_probs = sample_actions(logits)
        return PolicyStep(actions=actions, log_probs=log_probs, values=values)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """One PPO update from a time-major rollout; returns ``loss/*``, ``diag/*`` (and KL) metrics."""
        rollout = rollout.to(self.device)
        layout = batch_layout(self.network, rollout)
        if self.logit_coef > 0 and layout is EpisodeBatch:
            raise ValueError(
                f"logit_coef={self.logit_coef} needs every action's logit, which the whole-episode "
                "batches of this network do not compute; use logit_coef=0"
            )
        rows = rollout.num_valid if layout is StepBatch else rollout.num_envs
        if rows < self.num_minibatches:
            unit = "valid steps" if layout is StepBatch else "episodes"
            raise ValueError(
                f"rollout holds {rows} {unit} (T={rollout.num_steps} x B={rollout.num_envs}), "
                f"fewer than num_minibatches={self.num_minibatches}"
            )
        rewards, reference, metrics, counts = self._penalized_rewards(rollout, layout)
        if self.advantage == "gae":
            advantages, returns = self._advantages(rollout, rewards)
        else:
            advantages, returns = self._group_advantages(rollout, rewards)
        in_loss = self.kl is not None and (self.kl_placement == "loss" or self.ceiling is not None)
        batch = layout.from_rollout(
            rollout, advantages, returns, reference if in_loss else None, network=self.network
        )
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        if self.ceiling is not None:
            self.ceiling.start(*counts)
        metrics |= ppo_update(
            batch,
            self._minibatch_loss,
            self._gradient_step,
            self.num_epochs,
            self.num_minibatches,
            self.target_kl,
            self.normalize_advantages,
        )
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.updates += 1
        self.env_steps += int(distributed.sum_floats(rollout.num_valid)[0])
        valid = rollout.valid_mask
        metrics["diag/explained_variance"] = explained_variance(rollout.values[valid], returns[valid])
        metrics["diag/learning_rate"] = learning_rate
        if self.ceiling is not None:
            metrics |= self.ceiling.finish()
        return metrics

    @torch.no_grad()
    def _penalized_rewards(
        self, rollout: Rollout, layout: type[StepBatch | EpisodeBatch]
    ) -> tuple[Tensor, Tensor | None, dict[str, float], tuple[int, int]]:
        """The rollout's rewards with the KL penalty (placement ``reward``) and whitening
        applied, the reference log-probs of the taken actions (when there is a KL), KL metrics,
        and the episodes and valid steps the KL was measured over (all processes; (0, 0)
        without a KL).

        The KL measured (k1 summed per completion) drives the controller whatever the
        estimator and placement of the penalty."""
        valid = rollout.valid_mask
        counts = (0, 0)
        if self.kl is None:
            rewards, reference, metrics = torch.where(valid, rollout.rewards.float(), 0.0), None, {}
        else:
            reference = layout.reference_log_probs(self.network, rollout, self.num_minibatches)
            coef = self.kl.coef
            in_reward = coef if self.kl_placement == "reward" else 0.0
            penalized = kl_penalized_rewards(
                rollout.rewards, rollout.log_probs, reference, valid, in_reward, self.kl_estimator
            )
            rewards = penalized.rewards
            episodes = int(rollout.done.sum()) if not rollout.whole_episodes else rollout.num_envs
            # one controller input on every process
            kl_sum, episodes_sum, steps = distributed.sum_floats(
                float(penalized.kl.sum()), episodes, rollout.num_valid
            )
            episodes, counts = int(episodes_sum), (int(episodes_sum), int(steps))
            kl_per_episode = kl_sum / max(episodes, 1)
            metrics = {
                "charts/kl": kl_per_episode,
                "charts/kl_per_token": float(penalized.kl[valid].mean()),
                "charts/kl_coef": coef,
                "charts/non_score_reward": -coef * kl_per_episode,
            }
            target = getattr(self.kl, "target", None)
            if target is not None:
                metrics["charts/kl_target"] = float(target)
            if episodes > 0:
                self.kl.update(kl_per_episode, episodes)
        if self.whiten_rewards:
            rewards = whiten_rewards(rewards, valid)
        return rewards, reference, metrics, counts

    @torch.no_grad()
    def _group_advantages(self, rollout: Rollout, rewards: Tensor) -> tuple[Tensor, Tensor]:
        """Group-relative advantages without a critic (``grpo``, ``rloo``).

        Returns-to-go ``G_t`` come from the one GAE with zero values and lambda 1; each
        episode's baseline is its group's mean return (``grpo``, then divided by the standard
        deviation of the group's episode returns) or the mean return of the group's other
        episodes (``rloo``): whole-episode returns, or with ``group_baseline="step"`` the
        returns-to-go at the same step.
        """
        if not rollout.whole_episodes:
            raise ValueError(
                f"advantage={self.advantage!r} needs rollouts of whole episodes, one per row "
                "(an env with autoreset_mode disabled, e.g. the text env)"
            )
        num_envs, size = rollout.num_envs, self.group_size
        if num_envs % size:
            raise ValueError(f"group_size={size} does not divide the {num_envs} envs of the rollout")
        valid = rollout.valid_mask
        zeros = torch.zeros_like(rewards)
        _, returns = gae(rewards, zeros, zeros, rollout.done, rollout.done, self.gamma, 1.0)
        returns = torch.where(valid, returns, 0.0)
        episode = returns[0].view(-1, size)  # (groups, size): every row is valid at its first step
        if self.group_baseline == "step":  # (T, groups, size): each step against the same step
            steps, members = returns.view(returns.shape[0], -1, size), valid.view(valid.shape[0], -1, size)
        else:
            steps, members = episode.unsqueeze(0), torch.ones_like(episode, dtype=torch.bool).unsqueeze(0)
        count = members.sum(dim=2, keepdim=True)
        total = steps.sum(dim=2, keepdim=True)
        if self.advantage == "rloo":  # the others' mean (a row alone at its step: no baseline)
            baseline = torch.where(members, total - steps, 0.0) / (count - members.long()).clamp(min=1)
            scale = torch.ones_like(episode)
        else:  # the group's mean, over the spread of its whole-episode returns
            baseline = (total / count.clamp(min=1)).expand_as(steps)
            scale = episode.std(dim=1, keepdim=True).expand_as(episode) + 1e-4
        baseline = baseline.reshape(baseline.shape[0], -1)
        advantages = (returns - baseline) / scale.reshape(1, -1)
        return torch.where(valid, advantages, 0.0), returns

    @torch.no_grad()
    def _advantages(self, rollout: Rollout, rewards: Tensor) -> tuple[Tensor, Tensor]:
        """GAE; ``next_values[t]`` is the recorded ``values[t + 1]`` within an episode, and
        V(next_obs) only where that is not available (bootstrapped ends and the last step)."""
        terminated = rollout.terminated if self.bootstrap_truncated else rollout.done
        values = torch.where(rollout.valid_mask, rollout.values.float(), 0.0)
        next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
        needed = rollout.done & ~terminated
        needed[-1] |= rollout.valid_mask[-1] & ~terminated[-1]
        if bool(needed.any()):
            where = needed.nonzero(as_tuple=True)
            obs = take_rows(rollout.next_obs, where)
            count = int(where[0].numel())
            chunks = torch.arange(count, device=self.device).tensor_split(
                max(1, min(count, self.num_minibatches))
            )
            bootstrap = torch.cat([self.network(take_rows(obs, chunk))[1].float() for chunk in chunks])
            next_values = next_values.index_put(where, bootstrap)
        advantages, returns = gae(
            rewards, values, next_values, terminated, rollout.done, self.gamma, self.gae_lambda
        )
        valid = rollout.valid_mask
        return torch.where(valid, advantages, 0.0), torch.where(valid, returns, 0.0)

    def _minibatch_loss(self, minibatch: StepBatch | EpisodeBatch) -> tuple[Tensor, PPOLossTerms]:
        samples = minibatch.evaluate(self.network)
        advantages = samples.advantages
        terms = ppo_loss(
            samples.new_log_probs,
            samples.old_log_probs,
            advantages,
            samples.new_values,
            samples.old_values,
            samples.returns,
            samples.entropy,
            self.clip_coef,
            self.clip_value,
        )
        value_coef = self.value_coef if self.advantage == "gae" else 0.0  # no critic to train otherwise
        if self.ceiling is not None:  # kept for _gradient_step, which decides
            self.ceiling.observe(samples.new_log_probs, samples.old_log_probs, samples.reference_log_probs)
        total = terms.policy + value_coef * terms.value + self.entropy_coef * terms.entropy
        if samples.reference_log_probs is not None and self.kl is not None:
            kl_term = kl_estimate(
                samples.new_log_probs, samples.reference_log_probs, self.kl_estimator
            ).mean()
            total = total + self.kl.coef * kl_term
        if self.logit_coef > 0 and samples.logits is not None:
            total = total + self.logit_coef * logit_spread(samples.logits, samples.action_masks)
        return total, terms

    def _gradient_step(self, total: Tensor | None, weight: float = 1.0) -> bool:
        """Backpropagate ``total`` and step, unless the gradient is not finite (then refuse, False).

        In a data-parallel run the gradient is first summed over the processes, each weighted
        by ``weight``, its share of the minibatch (``total`` is ``None`` on a process without
        rows in it).

        With a KL ceiling (``kl_ceiling``), a minibatch whose estimated KL to the reference
        (over all processes) is above it takes a switching step instead, straight down the
        gradient ``g`` of that estimate: the step that brings the linearised estimate back to
        the ceiling, ``excess / |g|`` long, at most as long as the last optimizer step, with
        the optimizer's moments left alone (with Adam's momentum, a step through the
        optimizer would be mostly the objective's last direction)."""
        parameters = [p for p in self.network.parameters() if p.requires_grad]
        excess, toward = self.ceiling.excess() if self.ceiling is not None else (0.0, None)
        switch = excess > 0
        self.optimizer.zero_grad()
        loss = toward if switch else total
        if loss is not None:
            loss.backward()
        distributed.reduce_gradients(parameters, weight)
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else math.inf
        grad_norm = nn.utils.clip_grad_norm_(parameters, math.inf if switch else max_norm)
        if not bool(torch.isfinite(grad_norm)):
            self.optimizer.zero_grad()
            return False
        with_grad = [p for p in parameters if p.grad is not None]
        if switch and self.ceiling is not None:
            self.ceiling.switch(with_grad, float(grad_norm), excess)
            self.optimizer.zero_grad()
            return True
        before = self.ceiling.snapshot(with_grad) if self.ceiling is not None else None
        self.optimizer.step()
        if before is not None and self.ceiling is not None:
            self.ceiling.remember_step(with_grad, before)
        return True

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of weights, optimizer, LR schedule, KL controller and counters."""
        state: dict[str, Any] = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "env_steps": self.env_steps,
        }
        if self.lr_schedule is not None:
            state["lr_schedule"] = self.lr_schedule.state_dict()
        if self.kl is not None:
            state["kl"] = self.kl.state_dict()
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_schedule is not None and "lr_schedule" in state:
            load_schedule(self.lr_schedule, state["lr_schedule"])
        if self.kl is not None and "kl" in state:
            self.kl.load_state_dict(state["kl"])
        self.updates = int(state["updates"])
        self.env_steps = int(state["env_steps"])
