"""Token-level primitives of the context window, written once for the whole project.

Windows are LEFT-padded, the newest token last: ``input_ids`` and ``attention_mask`` (B, W)
int64, mask 1 on real tokens. The text env, generation, the LM networks and their KV cache,
and PPO's whole-episode batches all use these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def left_pad(
    token_lists: Sequence[Sequence[int]], width: int, pad_token_id: int, device: Any = "cpu"
) -> tuple[Tensor, Tensor]:
    """Rows of token ids left-padded to ``width`` (the newest ``width`` tokens of longer rows).

    Shapes: returns input_ids (B, width) and attention_mask (B, width) int64.
    """
    input_ids = torch.full((len(token_lists), width), pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(token_lists), width), dtype=torch.int64)
    for row, ids in enumerate(token_lists):
        kept = list(ids)[-width:] if width > 0 else []
        if kept:
            input_ids[row, width - len(kept) :] = torch.tensor(kept, dtype=torch.int64)
            attention_mask[row, width - len(kept) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def right_pad(token_lists: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Rows of token ids right-padded to the longest (completions after their prompts).

    Shapes: returns tokens (B, longest) int64 and mask (B, longest) bool, True on real tokens.
    """
    width = max((len(ids) for ids in token_lists), default=0)
    tokens = torch.full((len(token_lists), width), pad_token_id, dtype=torch.int64)
    mask = torch.zeros((len(token_lists), width), dtype=torch.bool)
    for row, ids in enumerate(token_lists):
        tokens[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.int64)
        mask[row, : len(ids)] = True
    return tokens, mask


def push_tokens(
    input_ids: Tensor, attention_mask: Tensor, tokens: Tensor, active: Tensor
) -> tuple[Tensor, Tensor]:
    """Append one token to the active rows, dropping the oldest position (left truncation).

    Inactive rows are returned unchanged. Returns new tensors; the inputs are left unchanged.
    Shapes: input_ids, attention_mask (B, W) int64; tokens (B,) int64; active (B,) bool.
    """
    shifted_ids = torch.cat([input_ids[:, 1:], tokens[:, None]], dim=1)
    shifted_mask = torch.cat([attention_mask[:, 1:], torch.ones_like(attention_mask[:, :1])], dim=1)
    keep = active[:, None]
    return torch.where(keep, shifted_ids, input_ids), torch.where(keep, shifted_mask, attention_mask)


def append_tokens(
    input_ids: Tensor, attention_mask: Tensor, tokens: Tensor, attended: Tensor
) -> tuple[Tensor, Tensor]:
    """Whole sequences: the windows followed by ``tokens``, attended where ``attended``.

    Shapes: input_ids, attention_mask (B, W); tokens, attended (B, T) -> (B, W + T) each.
    """
    return (
        torch.cat([input_ids.long(), tokens.long()], dim=1),
        torch.cat([attention_mask.long(), attended.long()], dim=1),
    )


def position_ids(attention_mask: Tensor) -> Tensor:
    """Position of each token counting attended tokens only, so left padding shifts nothing.

    Shapes: attention_mask (B, L) -> (B, L) int64.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def first_attended_column(attention_mask: Tensor) -> int:
    """Index of the first column attended in any row (``L`` when none is). Shapes: (B, L)."""
    attended = attention_mask.bool().any(0).nonzero()
    return int(attended[0]) if len(attended) else attention_mask.shape[-1]


def token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probabilities of ``tokens`` under ``logits``. Shapes: (..., A) and (...) -> (...)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
