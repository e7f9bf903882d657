"""Reward functions for the text env: ``scores = reward_fn(prompts, completions)``.

A reward function takes the prompts and the completions of a batch (two lists of strings
of the same length) and returns one finite score per completion (a list, a NumPy array or
a torch tensor). Any callable with that signature works, such as a trained reward model;
:func:`make_reward_fn` also resolves these names:

- ``"sentiment"``: VADER compound polarity of the completion, in [-1, 1]; ``"toxicity"``:
  ``1 - P(offensive)`` of the completion, in [0, 1] (the scores of :mod:`rlenv.text.scores`,
  which the simulated labelers share).
- ``"length"``: number of whitespace-separated words of the completion.
- ``"token_count:<token>"``: how often a token occurs as a word of the completion; ``<token>``
  is a token id (decoded with the env's tokenizer) or the word itself. A toy reward for tests.
- ``"model:<dir>"``: the calibrated score of a reward model saved in ``<dir>``
  (:class:`rlenv.reward.scoring.RewardModelReward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rlenv.text.scores import SCORES

RewardFn = Callable[[list[str], list[str]], Any]
REWARD_NAMES = (*SCORES, "length", "token_count:<token>", "model:<dir>")


def validate_scores(scores: Any, num_completions: int) -> np.ndarray:
    """Check what a reward function returned and convert it to float32.

    Shapes: returns (num_completions,) float32.

    Raises:
        TypeError: the scores are not a sequence of numbers.
        ValueError: the count differs from ``num_completions`` or a score is NaN or infinite.
    """
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    if isinstance(scores, (str, bytes)) or not isinstance(scores, (Sequence, np.ndarray)):
        raise TypeError(
            f"reward function must return one score per completion ({num_completions}), "
            f"got {_preview(scores)} ({type(scores).__name__})"
        )
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"reward function returned non-numeric scores {_preview(scores)}") from error
    if values.ndim != 1 or values.shape[0] != num_completions:
        raise ValueError(
            f"reward function returned {values.size} scores with shape {values.shape} for "
            f"{num_completions} completions: {_preview(scores)}; expected shape ({num_completions},)"
        )
    bad_rows = np.flatnonzero(~np.isfinite(values))
    if bad_rows.size:
        raise ValueError(
            f"reward function returned non-finite scores {_preview(scores)} "
            f"(rows {bad_rows.tolist()}); scores must be finite numbers"
        )
    return values.astype(np.float32)


def _preview(value: Any, limit: int = 8) -> str:
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        items = list(value[: limit + 1])
        shown = ", ".join(_format_number(item) for item in items[:limit])
        return f"[{shown}{', ...' if len(items) > limit else ''}]"
    return repr(value)


def _format_number(item: Any) -> str:
    if isinstance(item, (float, np.floating)) and not math.isfinite(float(item)):
        return str(float(item))
    return repr(item.item() if isinstance(item, np.generic) else item)


class LengthReward:
    """Number of whitespace-separated words of each completion."""

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [float(len(text.split())) for text in completions]


class TokenCountReward:
    """How many words of each completion equal ``token`` (a toy reward for tests)."""

    def __init__(self, token: str) -> None:
        if not token or token != token.strip():
            raise ValueError(f"token must be a non-empty word without surrounding spaces, got {token!r}")
        self.token = token

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [float(text.split().count(self.token)) for text in completions]


def make_reward_fn(spec: str | RewardFn, tokenizer: Any = None) -> RewardFn:
    """Resolve a reward function from a callable or a name (see the module docstring).

    Args:
        spec: a callable ``(prompts, completions) -> scores`` (returned unchanged) or a name.
        tokenizer: decodes the token id of ``"token_count:<id>"``.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"reward_fn must be a callable or a name, got {spec!r} ({type(spec).__name__})")
    if spec in SCORES:
        return SCORES[spec]
    if spec == "length":
        return LengthReward()
    name, _, argument = spec.partition(":")
    if name == "token_count" and argument:
        if not argument.isdigit():
            return TokenCountReward(argument)
        if tokenizer is None:
            raise ValueError(f"reward_fn {spec!r} needs a tokenizer to decode token id {argument}")
        return TokenCountReward(tokenizer.decode([int(argument)]).strip())
    if name == "model" and argument:
        from rlenv.reward.scoring import RewardModelReward

        return RewardModelReward(argument)
    raise ValueError(f"unknown reward_fn {spec!r}; valid names: {list(REWARD_NAMES)} or a callable")
