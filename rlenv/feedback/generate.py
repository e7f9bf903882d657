"""Sampling completions from a causal LM (the policy), batched, for labeling and evaluation.

Prompts are tokenized the way the text env tokenizes them (``add_special_tokens=True``),
left-padded, and continued by plain ancestral sampling (temperature 1, no top-k / top-p
unless asked), which is what the policy does when it acts in the env. A completion ends
at the first EOS token (kept as a generated token, dropped from the text) or after
``max_new_tokens`` tokens; its text is decoded with special tokens removed, as the env does,
and characters a rankings file cannot hold (control characters other than newline, tab and
carriage return; lone surrogates) are replaced by U+FFFD.

:func:`sample_completions` returns the texts and the token ids (a :class:`Generation`);
:func:`response_log_probs` scores the response tokens of a generation under any causal LM,
which gives the KL to a reference model: ``sum_t log π(y_t) - log π_ref(y_t)`` on samples
of π estimates ``KL(π || π_ref)`` per completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlenv.feedback.rankings import storable_text
from rlenv.text.tokens import left_pad, position_ids, token_log_probs


@dataclass(frozen=True)
class Generation:
    """Completions sampled for a batch of prompts, with their token ids.

    Shapes: ``input_ids``, ``attention_mask`` (B, S) int64, left-padded prompts in columns
    ``[0, response_start)`` then the response; ``response_mask`` (B, S - response_start)
    bool, True on generated tokens (EOS included, padding after it excluded).
    """

    prompts: list[str]
    completions: list[str]
    input_ids: Tensor
    attention_mask: Tensor
    response_start: int
    response_mask: Tensor

    @property
    def lengths(self) -> Tensor:
        """Generated tokens per row (B,) int64, EOS included."""
        return self.response_mask.sum(dim=1)


def left_pad_prompts(tokenizer: Any, prompts: Sequence[str], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Token ids of the prompts, left-padded to the longest.

    Shapes: returns input_ids, attention_mask (B, L) int64.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    empty = [p for p, ids in zip(prompts, encoded, strict=True) if not ids]
    if empty:
        raise ValueError(f"prompt {empty[0]!r} encodes to no token")
    return left_pad(encoded, max(len(ids) for ids in encoded), pad_token_id)


def response_mask_until_eos(tokens: Tensor, eos_token_id: int | None) -> Tensor:
    """True up to and including each row's first EOS (every column when there is none).

    Shapes: tokens (B, T) -> (B, T) bool.
    """
    if eos_token_id is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    is_eos = (tokens == eos_token_id).long()
    before = torch.cumsum(is_eos, dim=1) - is_eos
    return before == 0


def special_ids(tokenizer: Any, model: Any) -> tuple[int | None, int]:
    """EOS and pad token ids: the tokenizer's, else the model config's; pad falls back to EOS, then 0."""
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
        eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = next((t for t in (tokenizer.pad_token_id, eos) if t is not None), 0)
    return eos, int(pad)


@torch.no_grad()
def _sample_batch(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, sampling: dict[str, Any]
) -> Generation:
    eos, pad = special_ids(tokenizer, model)
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad_prompts(tokenizer, prompts, pad)
    vocab = model.get_output_embeddings().weight.shape[0]
    extra = {"suppress_tokens": list(range(len(tokenizer), vocab))} if vocab > len(tokenizer) else {}
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        do_sample=True,
        max_new_tokens=max_new_tokens,
        min_new_tokens=1,
        eos_token_id=eos,
        pad_token_id=pad,
        **sampling,
        **extra,
    ).cpu()
    start = input_ids.shape[1]
    tokens = output[:, start:]
    mask = response_mask_until_eos(tokens, eos)
    tokens = torch.where(mask, tokens, pad)
    texts = [  # control characters a sampled token may decode to are marked, so rankings can store them
        storable_text(tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True))
        for row, n in zip(tokens, mask.sum(dim=1), strict=True)
    ]
    full_mask = torch.cat([attention_mask, mask.long()], dim=1)
    return Generation(list(prompts), texts, torch.cat([input_ids, tokens], dim=1), full_mask, start, mask)


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> list[Generation]:
    """Sample one completion per prompt (repeat a prompt to get several), in batches.

    The global torch RNG is seeded with ``seed`` inside a fork, so the caller's random
    state is untouched and the same seed and batch size give the same completions.
    Tokens beyond the tokenizer's vocabulary (a larger model head) are never sampled.

    Returns:
        One :class:`Generation` per batch of ``batch_size`` prompts, in prompt order.
    """
    from tqdm.auto import tqdm

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    sampling = {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p)}
    batches = []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="sampling", unit="batch", disable=not progress, leave=False):
            chunk = prompts[start : start + batch_size]
            batches.append(_sample_batch(model, tokenizer, chunk, max_new_tokens, sampling))
    model.train(was_training)
    return batches


def generate_items(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    n_completions: int,
    **sampling: Any,
) -> list[list[str]]:
    """``n_completions`` sampled completions for each prompt (list per prompt, prompt order).

    Keyword arguments go to :func:`sample_completions`; ``batch_size`` counts completions.
    """
    if n_completions < 1:
        raise ValueError(f"n_completions must be >= 1, got {n_completions}")
    repeated = [p for p in prompts for _ in range(n_completions)]
    texts = [t for g in sample_completions(model, tokenizer, repeated, **sampling) for t in g.completions]
    return [texts[k * n_completions : (k + 1) * n_completions] for k in range(len(prompts))]


def response_log_probs(model: Any, generation: Generation) -> Tensor:
    """Log-probabilities of the generated tokens under ``model`` (0 on padding after EOS).

    Differentiable (call it under ``torch.no_grad()`` to only measure).

    Shapes: returns (B, T) float32, T = S - response_start.
    """
    device = next(model.parameters()).device
    ids = generation.input_ids.to(device)
    mask = generation.attention_mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    start = generation.response_start
    chosen = token_log_probs(logits[:, start - 1 : -1], ids[:, start:])
    return torch.where(generation.response_mask.to(device), chosen, 0.0).cpu()
