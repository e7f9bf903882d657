"""Preference pairs for reward-model training: split by prompt, batched by prompt, evaluated.

Pairs come from each ranking record's consensus (:func:`rlenv.feedback.pairs.records_to_pairs`)
and are split so that no prompt is on both sides. A step's batch holds whole prompts, and
:func:`pair_rewards` scores each distinct (prompt, completion) once, so the N-choose-2 pairs
of a prompt cost N forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlenv.feedback.consensus import consensus
from rlenv.feedback.pairs import (
    FlaggedPolicy,
    Pair,
    pair_support,
    ranked_index_pairs,
    records_to_pairs,
    split_by_prompt,
)
from rlenv.feedback.rankings import RankingRecord
from rlenv.reward.loss import bradley_terry_loss, pairwise_accuracy
from rlenv.reward.model import RewardModel

ScoreFn = Callable[[Sequence[str], Sequence[str]], Tensor]


@dataclass
class PairData:
    """Training and validation pairs, and the held-out records they came from (if any)."""

    train: list[Pair]
    val: list[Pair]
    val_all: list[Pair] = field(default_factory=list)
    val_records: list[RankingRecord] = field(default_factory=list)


def split_pairs(
    data: Sequence[RankingRecord] | Sequence[Pair],
    val_fraction: float,
    seed: int,
    flagged_policy: FlaggedPolicy = "last",
    min_agreement: float | None = None,
    min_pair_agreement: float | None = None,
    val_data: Sequence[RankingRecord] | Sequence[Pair] | None = None,
) -> PairData:
    """Pairs split by prompt, from records (filtered as :func:`records_to_pairs` says) or pairs.

    ``val_data``: a held-out set given explicitly; then all of ``data`` trains,
    ``val_fraction`` and ``seed`` are unused, and no prompt may be in both.
    """
    if val_data is None:
        train, val = split_by_prompt(list(data), val_fraction, seed)
    else:
        train, val = list(data), list(val_data)
        shared = {item.prompt for item in train} & {item.prompt for item in val}
        if shared:
            example = next(iter(shared))
            raise ValueError(
                f"{len(shared)} prompt(s) are in both the training and the validation data "
                f"(e.g. {example[:60]!r}); a held-out set must not share prompts with training"
            )
        data = train + val
    if all(isinstance(item, Pair) for item in data):
        return PairData(train, val, list(val))  # type: ignore[arg-type]
    filters = (flagged_policy, min_agreement, min_pair_agreement)
    return PairData(
        records_to_pairs(train, *filters),  # type: ignore[arg-type]
        records_to_pairs(val, *filters),  # type: ignore[arg-type]
        records_to_pairs(val, flagged_policy),  # type: ignore[arg-type]
        list(val),  # type: ignore[arg-type]
    )


def labeler_agreement(
    records: Sequence[RankingRecord], flagged_policy: FlaggedPolicy = "last"
) -> dict[str, float]:
    """How much the labelers of multi-labeler records agree (``nan`` when there are none).

    ``labeler_agreement``: mean pairwise agreement of two labelers over completion pairs
    (:func:`rlenv.feedback.consensus.consensus`). ``labeler_vs_consensus``: the mean share
    of labelers who order a consensus pair as the consensus does.
    """
    agreements, supports = [], []
    for record in records:
        if len(record.labels) < 2:
            continue
        label, agreement = consensus(record.labels)
        agreements.append(agreement)
        for i, j in ranked_index_pairs(label.ranks, label.flagged, flagged_policy):
            supports.append(pair_support(record.labels, i, j))
    mean = lambda values: sum(values) / len(values) if values else math.nan  # noqa: E731
    return {"labeler_agreement": mean(agreements), "labeler_vs_consensus": mean(supports)}


def pair_rewards(reward: ScoreFn, pairs: Sequence[Pair]) -> tuple[Tensor, Tensor]:
    """Rewards of chosen and rejected completions in one call of ``reward`` (e.g. ``model.reward``).

    Each distinct (prompt, completion) is scored once: the N-choose-2 pairs of one prompt
    cost N forward passes, not N * (N - 1).

    Shapes: returns ``r_chosen`` (B,), ``r_rejected`` (B,).
    """
    keys = list(dict.fromkeys((p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)))
    index = {key: i for i, key in enumerate(keys)}
    rewards = reward([k[0] for k in keys], [k[1] for k in keys])
    chosen = torch.tensor([index[(p.prompt, p.chosen)] for p in pairs], device=rewards.device)
    rejected = torch.tensor([index[(p.prompt, p.rejected)] for p in pairs], device=rewards.device)
    return rewards[chosen], rewards[rejected]


def prompt_batches(pairs: Sequence[Pair], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Indices of ``pairs`` in batches of whole prompts (shuffled), each of at least ``batch_size`` pairs.

    Keeping a prompt's pairs together lets :func:`pair_rewards` score each completion once
    per step. The last batch may be smaller.
    """
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.prompt, []).append(i)
    order = torch.randperm(len(groups), generator=generator).tolist()
    prompts = list(groups)
    batches, current = [], []
    for k in order:
        current += groups[prompts[k]]
        if len(current) >= batch_size:
            batches.append(current)
            current = []
    return batches + ([current] if current else [])


def evaluate_pairs(
    model: RewardModel, pairs: Sequence[Pair], batch_size: int = 32, score: ScoreFn | None = None
) -> dict[str, float]:
    """Bradley-Terry loss (raw rewards) and pairwise accuracy on ``pairs`` (nan if empty).

    ``score``: raw rewards without gradients (default: ``model.score(..., calibrated=False)``).
    """
    if not pairs:
        return {"loss": math.nan, "accuracy": math.nan}
    score = score or (lambda p, c: model.score(p, c, batch_size, calibrated=False))
    r_chosen, r_rejected = pair_rewards(score, pairs)
    return {
        "loss": bradley_terry_loss(r_chosen, r_rejected).item(),
        "accuracy": pairwise_accuracy(r_chosen, r_rejected).item(),
    }
