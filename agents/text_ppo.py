"""PPO for language models: the RLHF fine-tuning step of the seed.

The generic :class:`~agents.ppo.PPOAgent`, fed batches of whole episodes
(:class:`agents.text_rollout.TextRollout`), with three changes that make it RLHF:

1. **Rewards per token.** Each generated token is rewarded ``-beta * (log pi(a|s) -
   log pi_ref(a|s))`` (KL penalty against the frozen reference model: the LM with its LoRA
   adapter switched off) and the last token also gets the reward-function score
   (:func:`agents.kl.kl_penalized_rewards`). ``beta`` comes from a KL controller
   (:mod:`agents.kl`), updated after every batch; ``beta = 0`` turns the penalty off.
2. **Advantages over tokens.** :func:`agents.gae.gae` over the (T, B) token steps; a sequence
   ends after its last generated token, EOS or length limit alike (the score is final, so
   nothing is bootstrapped), and steps after the end are masked out.
3. **One forward pass per minibatch.** Minibatches are whole sequences; the network's
   ``evaluate_sequences`` gives every response token's log-prob, entropy and value in one
   pass, and :func:`agents.ppo.ppo_loss` is applied to the valid tokens.

Acting, the update loop (epochs, minibatches, clipping, early stop at ``target_kl``, refusal
of non-finite updates), the optimizer and checkpoints are PPOAgent's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import gymnasium
import torch
from torch import Tensor

from agents.base import Rollout
from agents.gae import gae
from agents.kl import AdaptiveKLController, KLController, kl_penalized_rewards, whiten_rewards
from agents.lm import SequenceEvaluation
from agents.ppo import PPOAgent, PPOLossTerms, explained_variance, ppo_loss
from agents.text_rollout import TextRollout


@runtime_checkable
class SequencePolicy(Protocol):
    """What TextPPOAgent needs from its network beyond ``forward`` (see ``agents.lm.LMActorCritic``)."""

    def evaluate_sequences(
        self, input_ids: Tensor, attention_mask: Tensor, response_start: int
    ) -> SequenceEvaluation: ...

    def reference_log_probs(
        self, input_ids: Tensor, attention_mask: Tensor, response_start: int
    ) -> Tensor: ...


@dataclass
class SequenceBatch:
    """Whole sequences to draw PPO minibatches from, one row per episode.

    Indexed by rows like :class:`~agents.ppo.PPOBatch`, so PPOAgent's update loop draws
    minibatches of whole sequences from it.

    Shapes: N sequences, S = W + T columns (prompt window, then T response steps).
        input_ids, attention_mask (N, S) int64; valid (N, T) bool;
        log_probs, values, advantages, returns (N, T) float32, from acting and GAE.
    """

    input_ids: Tensor
    attention_mask: Tensor
    valid: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    response_start: int

    @property
    def actions(self) -> Tensor:
        """(N, T) the response tokens."""
        return self.input_ids[:, self.response_start :]

    def __getitem__(self, rows: Tensor) -> SequenceBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SequenceBatch(**{k: v[rows] if isinstance(v, Tensor) else v for k, v in values.items()})


def token_advantages(
    rewards: Tensor, values: Tensor, valid: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE over generated tokens; each sequence ends after its last valid token, without bootstrap.

    Shapes: rewards, values, valid (T, B) -> advantages, returns (T, B), zero where not valid.
    """
    valid = valid.bool()
    values = torch.where(valid, values.float(), 0.0)
    ended = ~torch.cat([valid[1:], torch.zeros_like(valid[:1])])
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
    advantages, returns = gae(rewards, values, next_values, ended, ended, gamma, lam)
    return torch.where(valid, advantages, 0.0), torch.where(valid, returns, 0.0)


class TextPPOAgent(PPOAgent):
    """PPO with a KL penalty to the reference model over whole generated sequences.

    Takes every :class:`~agents.ppo.PPOAgent` argument, plus:

    Args:
        kl: the KL controller (default: adaptive, beta 0.1 toward 6 nats per sequence).
        whiten_rewards: divide the per-token rewards by their standard deviation over the
            batch's tokens before GAE (the mean is kept).

    ``learn`` needs a :class:`agents.text_rollout.TextRollout`
    (:class:`agents.text_rollout.EpisodeBatchCollector`) and a network with
    ``evaluate_sequences`` and ``reference_log_probs`` (:class:`agents.lm.LMActorCritic`).
    """

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        *,
        kl: KLController | None = None,
        whiten_rewards: bool = False,
        **ppo_arguments: Any,
    ) -> None:
        if ppo_arguments.get("logit_coef", 0.0):
            raise ValueError(
                f"logit_coef={ppo_arguments['logit_coef']} is not supported by TextPPOAgent "
                "(its update never materialises the full-vocabulary logits); use 0"
            )
        super().__init__(observation_space, action_space, **ppo_arguments)
        if not isinstance(self.network, SequencePolicy):
            raise TypeError(
                f"TextPPOAgent needs a network with evaluate_sequences and reference_log_probs "
                f"(e.g. agents.lm.LMActorCritic), got {type(self.network).__name__}"
            )
        self.policy: SequencePolicy = self.network
        self.kl = kl if kl is not None else AdaptiveKLController()
        self.whiten_rewards = bool(whiten_rewards)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """One PPO update from a batch of whole episodes; returns loss, diag and KL metrics."""
        if not isinstance(rollout, TextRollout):
            raise TypeError(
                f"TextPPOAgent learns from batches of whole episodes (a TextRollout from "
                f"agents.text_rollout.EpisodeBatchCollector), got {type(rollout).__name__}"
            )
        rollout = rollout.to(self.device)
        if rollout.num_envs < self.num_minibatches:
            raise ValueError(
                f"a batch of {rollout.num_envs} episodes cannot be split into "
                f"num_minibatches={self.num_minibatches} minibatches of sequences"
            )
        batch, kl_metrics = self._batch(rollout)
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        metrics = self._update(batch)  # type: ignore[arg-type]
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.updates += 1
        self.env_steps += int(rollout.valid.sum())
        self.kl.update(kl_metrics["charts/kl"], rollout.num_envs)
        valid = batch.valid
        metrics |= kl_metrics
        metrics["diag/explained_variance"] = explained_variance(batch.values[valid], batch.returns[valid])
        metrics["diag/learning_rate"] = learning_rate
        return metrics

    @torch.no_grad()
    def _batch(self, rollout: TextRollout) -> tuple[SequenceBatch, dict[str, float]]:
        """KL-penalised token rewards, GAE, and the sequences to draw minibatches from."""
        input_ids, attention_mask, response_start = rollout.sequences()
        valid = rollout.valid
        reference = self.policy.reference_log_probs(input_ids, attention_mask, response_start)
        coef = self.kl.coef
        penalized = kl_penalized_rewards(rollout.rewards, rollout.log_probs, reference, valid, coef)
        rewards = whiten_rewards(penalized.rewards, valid) if self.whiten_rewards else penalized.rewards
        advantages, returns = token_advantages(rewards, rollout.values, valid, self.gamma, self.gae_lambda)
        batch = SequenceBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            valid=valid.T,
            log_probs=rollout.log_probs.float().T,
            values=torch.where(valid, rollout.values.float(), 0.0).T,
            advantages=advantages.T,
            returns=returns.T,
            response_start=response_start,
        )
        sequence_kl = penalized.sequence_kl(valid)
        metrics = {
            "charts/kl": float(sequence_kl.mean()),
            "charts/kl_per_token": float(penalized.kl[valid].mean()),
            "charts/kl_coef": coef,
            "charts/non_score_reward": float(-coef * sequence_kl.mean()),
        }
        return batch, metrics

    def _minibatch_loss(self, minibatch: SequenceBatch) -> tuple[Tensor, PPOLossTerms]:  # type: ignore[override]
        evaluation = self.policy.evaluate_sequences(
            minibatch.input_ids, minibatch.attention_mask, minibatch.response_start
        )
        valid = minibatch.valid
        advantages = minibatch.advantages[valid]
        if self.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        terms = ppo_loss(
            evaluation.log_probs.T[valid],
            minibatch.log_probs[valid],
            advantages,
            evaluation.values.T[valid],
            minibatch.values[valid],
            minibatch.returns[valid],
            evaluation.entropies.T[valid],
            self.clip_coef,
            self.clip_value,
        )
        total = terms.policy + self.value_coef * terms.value + self.entropy_coef * terms.entropy
        return total, terms

    def state_dict(self) -> dict[str, Any]:
        """PPOAgent's state plus the KL controller's."""
        return {**super().state_dict(), "kl": copy.deepcopy(self.kl.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kl.load_state_dict(state["kl"])
