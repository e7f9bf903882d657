"""Simulated labelers: score functions that stand in for people when working offline.

Each labeler is a callable ``f(prompts, completions) -> scores`` (higher is
better), so it also serves as the "labeler reward" of the text environment.
``noise`` is the standard deviation of Gaussian noise added to each score
before ranking, which models disagreeing, imperfect labelers; ``noise=0`` gives
the exact, deterministic score.

- :class:`SentimentLabeler` (criterion ``"positivity"``) and :class:`ToxicityLabeler`
  (criterion ``"non-toxicity"``): the scores ``sentiment`` and ``toxicity`` of
  :mod:`rlenv.text.scores`, the same functions the text env rewards with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rlenv.feedback.consensus import dense_ranks
from rlenv.feedback.rankings import Label
from rlenv.text.scores import SCORES


class Labeler(Protocol):
    """What :func:`label_with_panel` needs from a labeler."""

    name: str
    criterion: str

    def rank(self, prompt: str, completions: Sequence[str]) -> tuple[int, ...]: ...


class ScoreLabeler:
    """A labeler that ranks completions by a noisy score; subclasses define :meth:`clean_score`."""

    criterion = ""
    kind = ""

    def __init__(self, noise: float = 0.1, seed: int | None = None, name: str | None = None) -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.noise = noise
        self.seed = seed
        self.name = name or f"{self.kind}(noise={noise}, seed={seed})"
        self._rng = np.random.default_rng(seed)

    def clean_score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """Scores (B,) of each (prompt, completion), higher is better, plus Gaussian noise."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        scores = self.clean_score(prompts, completions)
        if self.noise > 0:
            scores = scores + self._rng.normal(0.0, self.noise, size=scores.shape)
        return scores

    __call__ = score

    def rank(self, prompt: str, completions: Sequence[str]) -> tuple[int, ...]:
        """Dense ranks (1 = best, equal scores tie) of ``completions`` for ``prompt``."""
        scores = self.score([prompt] * len(completions), completions)
        return dense_ranks([float(s) for s in scores])


class SentimentLabeler(ScoreLabeler):
    """Prefers positive completions (VADER compound score of the completion)."""

    criterion = "positivity"
    kind = "sentiment"

    def clean_score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return SCORES["sentiment"](prompts, completions)


class ToxicityLabeler(ScoreLabeler):
    """Prefers clean completions (``1 - P(offensive)`` of the completion)."""

    criterion = "non-toxicity"
    kind = "toxicity"

    def clean_score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return SCORES["toxicity"](prompts, completions)


def label_with_panel(labelers: Sequence[Labeler], prompt: str, completions: Sequence[str]) -> list[Label]:
    """One :class:`Label` per labeler for a prompt's completions."""
    names = [labeler.name for labeler in labelers]
    if len(set(names)) != len(names):
        raise ValueError(f"labeler names must be unique within a panel, got {names}")
    return [Label(lab.name, tuple(int(r) for r in lab.rank(prompt, completions))) for lab in labelers]
