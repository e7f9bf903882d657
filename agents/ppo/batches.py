"""How a PPO update sees a rollout: as single steps, or as whole episodes.

PPO's update loop (:func:`agents.ppo.ppo_update`) draws minibatches from a batch and asks
the batch to evaluate them under the current network. Two layouts exist:

* :class:`StepBatch`: the rollout's valid steps flattened to N samples; the network is
  called on a minibatch of observations, ``network(obs) -> (logits, values)``. Works for
  every network and every rollout.
* :class:`EpisodeBatch`: one row per episode of a rollout of whole episodes
  (``rollout.whole_episodes``); the network scores every step of a minibatch of episodes in
  one call, ``network.evaluate_episodes(first_obs, actions, valid)``. A language model
  scores a whole completion in one forward pass this way instead of one pass per token.

Both layouts also give the reference policy's log-probs of the taken actions, for the
per-step KL penalty (:mod:`agents.ppo.kl`), from a network that has a reference:
``reference_logits(obs)`` for steps, ``reference_episodes(first_obs, actions, valid)`` for
episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from agents.core.base import (
    EpisodePolicy,
    Observation,
    Rollout,
    map_observation,
    masked_logits,
    take_rows,
)


class Samples(NamedTuple):
    """A minibatch evaluated under the current network, flattened over its valid steps (N,).

    ``logits`` and ``action_masks`` (N, A) are there when the layout materialises them.
    """

    new_log_probs: Tensor
    old_log_probs: Tensor
    advantages: Tensor
    new_values: Tensor
    old_values: Tensor
    returns: Tensor
    entropy: Tensor
    logits: Tensor | None = None
    action_masks: Tensor | None = None
    reference_log_probs: Tensor | None = None  # when the batch carries them (KL in the loss)


def _index(value: Any, rows: Tensor) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    return take_rows(value, rows)


def policy_outputs(network: nn.Module, obs: Observation, action_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Masked float logits (B, A) and float values (B,) of ``network(obs)``."""
    logits, values = network(obs)
    return masked_logits(logits.float(), action_mask), values.float()


@dataclass
class StepBatch:
    """The valid steps of a rollout, flattened. Shapes: N samples; obs (N, ...); the rest (N,) or (N, A)."""

    obs: Observation
    action_masks: Tensor | None
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    taken_reference_log_probs: Tensor | None = None

    @classmethod
    def from_rollout(
        cls,
        rollout: Rollout,
        advantages: Tensor,
        returns: Tensor,
        reference_log_probs: Tensor | None = None,
        network: nn.Module | None = None,
    ) -> StepBatch:
        """``reference_log_probs`` (T, B): log pi_ref of the taken actions, kept for a KL loss term.

        Samples are ordered env by env (env-major), so the batches of processes that each step
        a block of the envs, put one after the other, are the batch of one process stepping them all.
        """
        keep = rollout.valid_mask.T.flatten()

        def flat(x: Tensor | None) -> Any:
            return None if x is None else x.transpose(0, 1).flatten(0, 1)[keep]

        return cls(
            obs=map_observation(flat, rollout.obs),
            action_masks=flat(rollout.action_masks),
            actions=flat(rollout.actions),
            log_probs=flat(rollout.log_probs).float(),
            values=flat(rollout.values).float(),
            advantages=flat(advantages),
            returns=flat(returns),
            taken_reference_log_probs=flat(reference_log_probs),
        )

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def valid_advantages(self) -> Tensor:
        """The advantages of the samples the loss sees, flattened (N,)."""
        return self.advantages

    def __getitem__(self, rows: Tensor) -> StepBatch:
        return StepBatch(**{f.name: _index(getattr(self, f.name), rows) for f in fields(self)})

    def evaluate(self, network: nn.Module) -> Samples:
        logits, values = policy_outputs(network, self.obs, self.action_masks)
        policy = Categorical(logits=logits, validate_args=False)
        return Samples(
            policy.log_prob(self.actions),
            self.log_probs,
            self.advantages,
            values,
            self.values,
            self.returns,
            policy.entropy(),
            logits,
            self.action_masks,
            self.taken_reference_log_probs,
        )

    @staticmethod
    @torch.no_grad()
    def reference_log_probs(network: nn.Module, rollout: Rollout, chunks: int) -> Tensor:
        """log pi_ref(a_t|s_t) of the rollout's actions (T, B), from ``network.reference_logits``."""
        reference_logits = _require(network, "reference_logits")
        obs = map_observation(lambda x: x.flatten(0, 1), rollout.obs)
        actions = rollout.actions.flatten(0, 1)
        masks = None if rollout.action_masks is None else rollout.action_masks.flatten(0, 1)
        parts = []
        for rows in torch.arange(actions.shape[0], device=actions.device).tensor_split(max(1, chunks)):
            logits = masked_logits(reference_logits(_index(obs, rows)).float(), _index(masks, rows))
            parts.append(torch.log_softmax(logits, -1).gather(-1, actions[rows, None]).squeeze(-1))
        return torch.cat(parts).view_as(rollout.rewards)


@dataclass
class EpisodeBatch:
    """A rollout of whole episodes, one row per episode.

    Shapes: N episodes of at most T steps. first_obs (N, ...); actions, valid (N, T);
    log_probs, values, advantages, returns (N, T) float32.
    """

    first_obs: Observation
    actions: Tensor
    valid: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    taken_reference_log_probs: Tensor | None = None
    context: Any = None

    @classmethod
    def from_rollout(
        cls,
        rollout: Rollout,
        advantages: Tensor,
        returns: Tensor,
        reference_log_probs: Tensor | None = None,
        network: nn.Module | None = None,
    ) -> EpisodeBatch:
        """``reference_log_probs`` (T, B): log pi_ref of the taken actions, kept for a KL loss term.
        ``network``: asked for the episodes' context (:func:`episode_context`)."""
        return cls(
            first_obs=map_observation(lambda x: x[0], rollout.obs),
            actions=rollout.actions.T,
            valid=rollout.valid_mask.T,
            log_probs=rollout.log_probs.float().T,
            values=rollout.values.float().T,
            advantages=advantages.T,
            returns=returns.T,
            taken_reference_log_probs=None if reference_log_probs is None else reference_log_probs.T,
            context=episode_context(network, rollout),
        )

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def valid_advantages(self) -> Tensor:
        """The advantages of the valid steps, flattened (number of valid steps,)."""
        return self.advantages[self.valid]

    def __getitem__(self, rows: Tensor) -> EpisodeBatch:
        return EpisodeBatch(**{f.name: _index(getattr(self, f.name), rows) for f in fields(self)})

    def evaluate(self, network: nn.Module) -> Samples:
        arguments = () if self.context is None else (self.context,)
        evaluation = network.evaluate_episodes(self.first_obs, self.actions.T, self.valid.T, *arguments)
        valid = self.valid
        return Samples(
            evaluation.log_probs.T[valid],
            self.log_probs[valid],
            self.advantages[valid],
            evaluation.values.T[valid].float(),
            self.values[valid],
            self.returns[valid],
            evaluation.entropies.T[valid],
            reference_log_probs=(
                None if self.taken_reference_log_probs is None else self.taken_reference_log_probs[valid]
            ),
        )

    @staticmethod
    @torch.no_grad()
    def reference_log_probs(network: nn.Module, rollout: Rollout, chunks: int) -> Tensor:
        """log pi_ref(a_t|s_t) of the rollout's actions (T, B), from ``network.reference_episodes``."""
        reference_episodes = _require(network, "reference_episodes")
        first_obs = map_observation(lambda x: x[0], rollout.obs)
        context = episode_context(network, rollout)
        parts = []
        for rows in torch.arange(rollout.num_envs, device=rollout.actions.device).tensor_split(
            max(1, chunks)
        ):
            arguments = () if context is None else (_index(context, rows),)
            parts.append(
                reference_episodes(
                    _index(first_obs, rows), rollout.actions[:, rows], rollout.valid_mask[:, rows], *arguments
                )
            )
        return torch.cat(parts, dim=1)


def episode_context(network: nn.Module | None, rollout: Rollout) -> Any:
    """What the network needs to score the rollout's episodes beyond their first observations
    and actions (``network.episode_context(rollout)``, e.g. the tokens an env wrote between
    actions), or ``None``. Passed on to ``evaluate_episodes`` and ``reference_episodes``."""
    method = getattr(network, "episode_context", None)
    return None if method is None else method(rollout)


def _require(network: nn.Module, method: str) -> Any:
    function = getattr(network, method, None)
    if function is None:
        raise TypeError(
            f"the KL penalty needs a network with a reference policy ({method}); "
            f"{type(network).__name__} has none (agents.networks.LMActorCritic has one; or set agent.kl=null)"
        )
    return function


def batch_layout(network: nn.Module, rollout: Rollout) -> type[StepBatch] | type[EpisodeBatch]:
    """Whole episodes when the rollout holds them and the network can score them, else steps."""
    if rollout.whole_episodes and isinstance(network, EpisodePolicy):
        return EpisodeBatch
    return StepBatch
