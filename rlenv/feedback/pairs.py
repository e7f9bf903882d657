"""From rankings to the pairwise comparisons a reward model trains on.

A prompt with N ranked completions gives up to N-choose-2 pairs. Each pair is
stored with the preferred completion first (``chosen``), the other second
(``rejected``), so the reward model's loss is always ``-log σ(r_chosen -
r_rejected)``. Pairs are listed in the order of ``itertools.combinations`` over
completion indices (0-1, 0-2, ..., 1-2, ...); a tie gives no pair.

Flagged completions (``flagged_policy``):

- ``"last"``: they rank below every unflagged completion and tie among
  themselves, so each unflagged completion beats each flagged one.
- ``"exclude"``: they are dropped before pairing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import numpy as np

from rlenv.feedback.consensus import consensus, effective_ranks
from rlenv.feedback.rankings import Label, RankingRecord

FlaggedPolicy = Literal["last", "exclude"]
FLAGGED_POLICIES = ("last", "exclude")


@dataclass(frozen=True)
class Pair:
    """One comparison: ``chosen`` was preferred over ``rejected`` as a reply to ``prompt``."""

    chosen: str
    rejected: str
    prompt: str = ""


def ranked_index_pairs(
    ranks: Sequence[int], flagged: Sequence[int] = (), flagged_policy: FlaggedPolicy = "last"
) -> list[tuple[int, int]]:
    """``(preferred, other)`` completion indices of a ranking's strict pairs (see module docstring)."""
    if flagged_policy not in FLAGGED_POLICIES:
        raise ValueError(f"unknown flagged_policy {flagged_policy!r} (valid: {list(FLAGGED_POLICIES)})")
    bad = [i for i in flagged if not 0 <= i < len(ranks)]
    if bad:
        raise ValueError(f"flagged index {bad[0]} out of range (valid: 0..{len(ranks) - 1})")
    if flagged_policy == "last":
        ranks = effective_ranks(ranks, flagged)
        kept = list(range(len(ranks)))
    else:
        kept = [i for i in range(len(ranks)) if i not in set(flagged)]
    pairs = []
    for i, j in itertools.combinations(kept, 2):
        if ranks[i] < ranks[j]:
            pairs.append((i, j))
        elif ranks[j] < ranks[i]:
            pairs.append((j, i))
    return pairs


def ranking_to_pairs(
    completions: Sequence[str],
    ranks: Sequence[int],
    flagged: Sequence[int] = (),
    flagged_policy: FlaggedPolicy = "last",
    prompt: str = "",
) -> list[Pair]:
    """Expand one ranking (1 = best, equal = tie) into preferred-first pairs.

    Example: completions ``[purple, yellow, green]`` ranked ``[2, 1, 3]`` give
    ``[Pair(yellow, purple), Pair(purple, green), Pair(yellow, green)]``.
    """
    if len(ranks) != len(completions):
        raise ValueError(f"got {len(ranks)} ranks for {len(completions)} completions")
    index_pairs = ranked_index_pairs(ranks, flagged, flagged_policy)
    return [Pair(completions[i], completions[j], prompt) for i, j in index_pairs]


def pair_support(labels: Sequence[Label], preferred: int, other: int) -> float:
    """Share of labelers whose effective ranking puts ``preferred`` strictly above ``other``."""
    effective = [effective_ranks(label.ranks, label.flagged) for label in labels]
    return sum(ranks[preferred] < ranks[other] for ranks in effective) / len(effective)


def records_to_pairs(
    records: Sequence[RankingRecord],
    flagged_policy: FlaggedPolicy = "last",
    min_agreement: float | None = None,
    min_pair_agreement: float | None = None,
) -> list[Pair]:
    """Pairs from each record's consensus ranking (a lone label is its own consensus).

    Args:
        records: ranking records; records with several labels are combined with
            :func:`rlenv.feedback.consensus.consensus`.
        flagged_policy: ``"last"`` or ``"exclude"`` (module docstring).
        min_agreement: if set, records whose labelers agree less than this (in
            [0, 1]) are left out; single-labeler records are always kept.
        min_pair_agreement: if set, a consensus pair is kept only when at least this
            share of the record's labelers (:func:`pair_support`) prefer the same
            completion; ``1.0`` keeps the unanimous pairs. With noisy labelers this
            drops the near-ties whose consensus is a coin flip.
    """
    pairs: list[Pair] = []
    for record in records:
        label, agreement = consensus(record.labels)
        if min_agreement is not None and not math.isnan(agreement) and agreement < min_agreement:
            continue
        for i, j in ranked_index_pairs(label.ranks, label.flagged, flagged_policy):
            if min_pair_agreement is not None and pair_support(record.labels, i, j) < min_pair_agreement:
                continue
            pairs.append(Pair(record.completions[i], record.completions[j], record.prompt))
    return pairs


class _HasPrompt(Protocol):
    @property
    def prompt(self) -> str: ...


ItemT = TypeVar("ItemT", bound=_HasPrompt)


def split_by_prompt(
    items: Sequence[ItemT], val_fraction: float, seed: int = 0
) -> tuple[list[ItemT], list[ItemT]]:
    """Split records (or pairs) into train and validation sets with no prompt in both.

    The distinct prompts are shuffled with ``seed`` and ``round(val_fraction *
    n_prompts)`` of them (at least one when ``val_fraction > 0`` and there are two or
    more prompts) go to validation. Item order is kept within each split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    prompts = list(dict.fromkeys(item.prompt for item in items))
    n_val = round(val_fraction * len(prompts))
    if val_fraction > 0 and len(prompts) >= 2:
        n_val = min(max(n_val, 1), len(prompts) - 1)
    order = np.random.default_rng(seed).permutation(len(prompts))
    val_prompts = {prompts[k] for k in order[:n_val]}
    train = [item for item in items if item.prompt not in val_prompts]
    val = [item for item in items if item.prompt in val_prompts]
    return train, val
