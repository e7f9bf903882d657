"""Cached hidden states of a reward model's frozen lower layers, so training pays for the top only.

When only the head and the top ``k`` encoder layers train
(:meth:`rlenv.reward.model.RewardModel.set_trainable_layers`), the output of the frozen
layers below never changes. :class:`FrozenFeatureCache` computes it once per (prompt,
completion) and runs only the top layers, the pooling and the head on it: an epoch over
a MiniLM (6 layers) with ``k = 2`` costs about a third of a full fine-tuning epoch. The
result equals :meth:`RewardModel.forward` (dropout aside, which the cached layers never
apply).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlenv.reward.model import RewardModel, encoder_layers, pool

Key = tuple[str, str]


def additive_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The attention mask as a bias broadcast over heads and queries. Shapes: (B, L) -> (B, 1, 1, L)."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class FrozenFeatureCache:
    """Rewards of (prompt, completion) pairs from cached features below the top ``trainable_layers``.

    Args:
        model: the reward model; its embeddings and lower layers must stay frozen while
            the cache is in use.
        trainable_layers: how many encoder layers on top are run (0: only pooling and head).
        batch_size: pairs per forward pass when filling the cache.
    """

    def __init__(self, model: RewardModel, trainable_layers: int, batch_size: int = 32) -> None:
        layers = encoder_layers(model.encoder)
        if not 0 <= trainable_layers <= len(layers):
            raise ValueError(f"trainable_layers must be in 0..{len(layers)}, got {trainable_layers}")
        self.model = model
        self.first_top = len(layers) - trainable_layers
        self.top = list(layers[self.first_top :])
        self.batch_size = batch_size
        self._cache: dict[Key, tuple[Tensor, Tensor, Tensor | None]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def fill(self, prompts: Sequence[str], completions: Sequence[str]) -> None:
        """Compute and keep the frozen features of every pair not cached yet."""
        missing = list(
            dict.fromkeys(k for k in zip(prompts, completions, strict=True) if k not in self._cache)
        )
        missing.sort(key=lambda k: len(k[0]) + len(k[1]))
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                batch = self.model.tokenize([p for p, _ in chunk], [c for _, c in chunk])
                output = self.model.encoder(**batch, output_hidden_states=True)
                hidden = output.hidden_states[self.first_top]
                types = batch.get("token_type_ids")
                for row, key in enumerate(chunk):
                    kept = batch["attention_mask"][row].bool()
                    row_types = None if types is None else types[row, kept].clone()
                    self._cache[key] = (
                        hidden[row, kept].clone(),
                        batch["attention_mask"][row, kept].clone(),
                        row_types,
                    )
        finally:
            self.model.train(was_training)

    def _padded(self, keys: Sequence[Key]) -> tuple[Tensor, Tensor, Tensor | None]:
        entries = [self._cache[k] for k in keys]
        length = max(hidden.shape[0] for hidden, _, _ in entries)
        size = entries[0][0].shape[1]
        device = entries[0][0].device
        hidden = torch.zeros(len(entries), length, size, dtype=entries[0][0].dtype, device=device)
        mask = torch.zeros(len(entries), length, dtype=torch.long, device=device)
        types = None if entries[0][2] is None else torch.zeros_like(mask)
        for row, (states, row_mask, row_types) in enumerate(entries):
            hidden[row, : states.shape[0]] = states
            mask[row, : states.shape[0]] = row_mask
            if types is not None and row_types is not None:
                types[row, : states.shape[0]] = row_types
        return hidden, mask, types

    def rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Raw rewards (B,), differentiable through the top layers and the head.

        Shapes: returns (B,) float32.
        """
        keys = list(zip(prompts, completions, strict=True))
        self.fill(prompts, completions)
        hidden, mask, types = self._padded(keys)
        bias = additive_mask(mask, hidden.dtype)
        for layer in self.top:
            output = layer(hidden, attention_mask=bias)
            hidden = output[0] if isinstance(output, tuple) else output
        pooled = pool(hidden, mask, types, self.model.pooling)
        return self.model.head(pooled).squeeze(-1)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Raw rewards (B,) in eval mode without gradients, in batches of ``batch_size``."""
        was_training = self.model.training
        self.model.eval()
        try:
            chunks = [
                self.rewards(prompts[s : s + self.batch_size], completions[s : s + self.batch_size])
                for s in range(0, len(prompts), self.batch_size)
            ]
        finally:
            self.model.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0)
