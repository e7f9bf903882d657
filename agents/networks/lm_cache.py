"""Incremental acting for causal LMs: a KV cache that follows the text env's context window.

The text env's observation is a window of the newest ``W`` tokens, LEFT-padded, the newest
token last. After each step the window shifts left by one and the chosen token is appended.
:class:`ContextCache` keeps the keys/values of the current window so that the next step costs
one token per row instead of ``W``:

* a row whose new window is its previous window shifted by exactly one token (ids and mask)
  is served from the cache;
* a row whose window did not change (a finished row of a batch of whole episodes) costs
  nothing: its output is the previous one, and an unattended column keeps its cache aligned;
* any other row (a reset episode, a new batch, a real token dropping off the left edge of a
  full window) is re-encoded alone and merged into the cache;
* a batch of a different shape starts a new cache.

So the cache is a pure function of the observed windows: whatever the caller feeds, the
result equals a full forward pass over the same windows.

Cache layout: ``length`` columns that hold the last ``length`` columns of the window; every
window column to their left is padding in every row. Every layer keeps all its columns
(a plain ``DynamicCache``; sliding-window caches are not used).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from rlenv.text.tokens import first_attended_column, position_ids

# run(input_ids, attention_mask, position_ids, cache) -> last hidden states (B, L, H)
EncodeFn = Callable[[Tensor, Tensor, Tensor, Any], Tensor]


def split_observation(
    obs: Mapping[str, Tensor] | Tensor, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` as int64 (on ``device``) from a text-env observation.

    A bare tensor is taken as ``input_ids`` with every position attended. A row with no
    attended position gets its newest position attended, so that no row is empty.

    Shapes: each (B, W).
    """
    if isinstance(obs, Tensor):
        input_ids, attention_mask = obs, torch.ones_like(obs)
    else:
        missing = {"input_ids", "attention_mask"} - set(obs)
        if missing:
            raise KeyError(f"observation lacks {sorted(missing)} (has {sorted(obs)})")
        input_ids, attention_mask = obs["input_ids"], obs["attention_mask"]
    input_ids = torch.as_tensor(input_ids, device=device).long()
    attention_mask = torch.as_tensor(attention_mask, device=device).long()
    if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"expected input_ids and attention_mask of shape (B, W), got {tuple(input_ids.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    empty = attention_mask.sum(-1) == 0
    if empty.any():
        attention_mask = attention_mask.clone()
        attention_mask[empty, -1] = 1
    return input_ids, attention_mask


def extends_by_one(old_ids: Tensor, old_mask: Tensor, new_ids: Tensor, new_mask: Tensor) -> Tensor:
    """Rows whose new window is the old one shifted left by one token, losing no real token.

    Shapes: all inputs (B, W) -> (B,) bool.
    """
    same_ids = (new_ids[:, :-1] == old_ids[:, 1:]).all(-1)
    same_mask = (new_mask[:, :-1] == old_mask[:, 1:]).all(-1)
    return same_ids & same_mask & (old_mask[:, 0] == 0)


class ContextCache:
    """KV cache of the latest windows of a batch of episodes (see the module docstring).

    ``step`` returns the last hidden state of the newest token of every row, computed from
    the cache where possible. ``reset`` drops the cache. A deep copy starts empty.
    """

    def __init__(self) -> None:
        self.cache: Any = None
        self.input_ids: Tensor | None = None  # the windows the cache columns hold
        self.attention_mask: Tensor | None = None
        self.observed: tuple[Tensor, Tensor] | None = None  # the windows of the last call
        self.hidden: Tensor | None = None  # its output
        self.length = 0

    def reset(self) -> None:
        self.cache, self.input_ids, self.attention_mask, self.length = None, None, None, 0
        self.observed, self.hidden = None, None

    def __deepcopy__(self, memo: dict[int, Any]) -> ContextCache:
        return ContextCache()

    def step(self, encode: EncodeFn, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Hidden state of the newest token of each row for these windows.

        Shapes: input_ids, attention_mask (B, W) -> (B, H).
        """
        if self.input_ids is None or self.attention_mask is None or self.input_ids.shape != input_ids.shape:
            return self._encode_all(encode, input_ids, attention_mask)
        assert self.observed is not None and self.hidden is not None
        extends = extends_by_one(self.input_ids, self.attention_mask, input_ids, attention_mask)
        unchanged = (
            ~extends
            & (input_ids == self.observed[0]).all(-1)
            & (attention_mask == self.observed[1]).all(-1)
            & (self.attention_mask[:, 0] == 0)
        )
        served = extends | unchanged
        if not bool(served.any()):
            return self._encode_all(encode, input_ids, attention_mask)
        held_ids, held_mask = input_ids, attention_mask
        if bool(unchanged.any()):
            column = unchanged[:, None]
            idle_ids = torch.cat([self.input_ids[:, 1:], self.input_ids[:, -1:]], dim=1)
            idle_mask = torch.cat(
                [self.attention_mask[:, 1:], torch.zeros_like(attention_mask[:, :1])], dim=1
            )
            held_ids = torch.where(column, idle_ids, input_ids)
            held_mask = torch.where(column, idle_mask, attention_mask)
        window = input_ids.shape[1]
        if self.length == window:
            self._drop_first_column()
        if not bool(served.all()):
            self._reencode_rows(encode, (~served).nonzero().squeeze(-1), held_ids, held_mask)
        start = window - 1 - self.length
        mask = held_mask[:, start:]
        positions = position_ids(mask)[:, -1:]
        hidden = encode(held_ids[:, -1:], mask, positions, self.cache)[:, -1]
        hidden = torch.where(unchanged[:, None], self.hidden, hidden)
        self.length += 1
        self.input_ids, self.attention_mask = held_ids, held_mask
        self.observed, self.hidden = (input_ids, attention_mask), hidden
        return hidden

    def _encode_all(self, encode: EncodeFn, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        from transformers import DynamicCache

        start = min(first_attended_column(attention_mask), input_ids.shape[1] - 1)
        mask = attention_mask[:, start:]
        self.cache = DynamicCache()
        hidden = encode(input_ids[:, start:], mask, position_ids(mask), self.cache)[:, -1]
        self.length = input_ids.shape[1] - start
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.observed, self.hidden = (input_ids, attention_mask), hidden
        return hidden

    def _drop_first_column(self) -> None:
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[..., 1:, :], layer.values[..., 1:, :]
        self.length -= 1

    def _reencode_rows(
        self, encode: EncodeFn, rows: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> None:
        """Replace the cache of ``rows`` by their new windows minus the newest token."""
        from transformers import DynamicCache

        prefix_ids, prefix_mask = input_ids[rows, :-1], attention_mask[rows, :-1]
        start = first_attended_column(prefix_mask)
        prefix_ids, prefix_mask = prefix_ids[:, start:], prefix_mask[:, start:]
        length = max(self.length, prefix_ids.shape[1])
        self._left_pad(length)
        if prefix_ids.shape[1] == 0:
            return
        fresh = DynamicCache()
        encode(prefix_ids, prefix_mask, position_ids(prefix_mask), fresh)
        pad = length - prefix_ids.shape[1]
        for layer, new in zip(self.cache.layers, fresh.layers, strict=True):
            layer.keys[rows] = torch.nn.functional.pad(new.keys, (0, 0, pad, 0))
            layer.values[rows] = torch.nn.functional.pad(new.values, (0, 0, pad, 0))

    def _left_pad(self, length: int) -> None:
        pad = length - self.length
        if pad == 0:
            return
        for layer in self.cache.layers:
            layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, pad, 0))
            layer.values = torch.nn.functional.pad(layer.values, (0, 0, pad, 0))
        self.length = length
