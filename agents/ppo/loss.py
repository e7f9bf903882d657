"""The PPO objective as pure functions, and the one update loop that applies it.

``L = L_policy + c1 * L_value + c2 * L_entropy``:

* ``L_policy = mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps)))`` with the probability
  ratio ``r = pi_new(a|s) / pi_old(a|s)``: the clip is the trust region;
* ``L_value = mean(0.5 * (V(s) - R)^2)``, optionally clipped around the old values;
* ``L_entropy = -mean(H[pi(.|s)])``, so a positive ``c2`` is an exploration bonus.

:func:`ppo_update` runs the epochs and minibatches over any batch with ``__len__`` and
``__getitem__`` (:mod:`agents.ppo.batches`), given the minibatch loss and the gradient step
as explicit parts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from agents.core import distributed


class PPOLossTerms(NamedTuple):
    """The named terms of the PPO objective (scalars); ``approx_kl`` and ``clipfrac`` carry no grad."""

    policy: Tensor
    value: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clipfrac: Tensor
    count: int = 1  # samples the means are over (weights a rank's gradient in data-parallel runs)


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
    return PPOLossTerms(policy_loss, value_loss, -entropy.mean(), approx_kl, clipfrac, new_log_probs.numel())


def logit_spread(logits: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """Mean squared deviation of the legal actions' logits from their mean, averaged over states.

    A penalty on it keeps the policy from saturating: its gradient pulls every logit toward
    the state's mean in proportion to the distance, so a move that no advantage supports
    drifts back to a sampled probability. The entropy bonus cannot do that once the policy
    is nearly deterministic (its gradient with respect to a logit is ``-p (log p + H)``,
    which vanishes with ``p``).

    Illegal entries are ignored, so masked logits (:func:`agents.core.base.masked_logits`) do too.

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


def standardized(minibatch: Any, parallel: bool = False) -> Any:
    """``minibatch`` with its advantages standardised over its valid steps (over every
    process's part of it in a data-parallel run); unchanged with fewer than 2 of them."""
    values = minibatch.valid_advantages()
    if parallel:
        mean, std = distributed.mean_std(values)
    elif values.numel() > 1:
        mean, std = values.mean(), values.std()
    else:
        return minibatch
    return dataclasses.replace(minibatch, advantages=(minibatch.advantages - mean) / (std + 1e-8))


def ppo_update(
    batch: Any,
    minibatch_loss: Callable[[Any], tuple[Tensor, PPOLossTerms]],
    gradient_step: Callable[[Tensor | None, float], bool],
    num_epochs: int,
    num_minibatches: int,
    target_kl: float | None = None,
    normalize_advantages: bool = False,
) -> dict[str, float]:
    """Epochs x minibatches of clipped gradient steps over ``batch``; metrics are minibatch means.

    ``batch`` is any batch with ``len(batch)`` rows, ``batch[rows]`` and ``batch.advantages``
    (:class:`agents.ppo.batches.StepBatch`, :class:`agents.ppo.batches.EpisodeBatch`).

    ``minibatch_loss(batch[rows]) -> (total, terms)``; ``gradient_step(total, weight) -> bool``
    (False: the gradient was not finite and no step was taken; ``weight`` is this process's
    share of the minibatch's samples, 1 in one process, and ``total`` is ``None`` where this
    process has no rows in the minibatch). A minibatch whose loss is not finite is refused:
    no step, its terms stay out of the means, it counts in ``diag/skipped_updates``.
    ``normalize_advantages`` standardises each minibatch's advantages (over its valid steps)
    before its loss.

    In a data-parallel run (:mod:`agents.core.distributed`) the minibatches are drawn over all
    processes' rows, and the early stop and the refusal are decided on every process alike
    from the KL and the losses of all of them.
    """
    device = batch.advantages.device
    parallel = distributed.is_distributed()
    sums = torch.zeros(6, device=device)
    evaluated = epochs_run = skipped = 0
    stop = False
    for _ in range(num_epochs):
        epochs_run += 1
        for rows in distributed.minibatch_rows(len(batch), num_minibatches, device):
            total: Tensor | None = None
            count, weight = 0, 1.0
            minibatch = batch[rows]
            if normalize_advantages:
                minibatch = standardized(minibatch, parallel)
            if rows.numel() or not parallel:
                total, terms = minibatch_loss(minibatch)
                count = int(terms.count)
            finite = total is None or bool(torch.isfinite(total))
            if parallel:
                kl_sum = float(terms.approx_kl) * count if total is not None and finite else 0.0
                global_count, global_kl, refused = distributed.sum_floats(count, kl_sum, float(not finite))
                weight = count / global_count if global_count else 0.0
                approx_kl = global_kl / global_count if global_count else 0.0
                finite = refused == 0
            if not finite:
                skipped += 1
                continue
            if total is not None:
                evaluated += 1
                sums += torch.stack(
                    [terms.policy, terms.value, terms.entropy, total, terms.approx_kl, terms.clipfrac]
                ).detach()
                if not parallel:
                    approx_kl = terms.approx_kl.item() if target_kl is not None else 0.0
            if target_kl is not None and approx_kl > target_kl:
                stop = True
                break
            if not gradient_step(total, weight):
                skipped += 1
        if stop:
            break
    means = (sums / evaluated).tolist() if evaluated else [math.nan] * 6
    policy, value, entropy, total_mean, approx_kl_mean, clipfrac = means
    return {
        "loss/policy": policy,
        "loss/value": value,
        "loss/entropy": entropy,
        "loss/total": total_mean,
        "diag/approx_kl": approx_kl_mean,
        "diag/clipfrac": clipfrac,
        "diag/entropy": -entropy,
        "diag/epochs_run": float(epochs_run),
        "diag/skipped_updates": float(skipped),
    }
