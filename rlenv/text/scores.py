"""Text-quality scores, written once: the rewards of the text env and the labelers' clean scores.

A score function maps completions to one float64 score each (higher is better). The same
functions serve as reward functions (``reward_fn="sentiment"``), as the noise-free score of
the simulated labelers (:mod:`rlenv.feedback.labelers`) and in evaluation.

- ``sentiment`` (criterion ``positivity``): VADER's compound polarity, in [-1, 1].
- ``toxicity`` (criterion ``non-toxicity``): ``1 -`` the probability that the text is
  offensive (alt-profanity-check), in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_MODELS: dict[str, Any] = {}


def vader_compound(texts: Sequence[str]) -> np.ndarray:
    """VADER compound sentiment of each text, in [-1, 1]. Shapes: (B,) float64."""
    if "vader" not in _MODELS:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _MODELS["vader"] = SentimentIntensityAnalyzer()
    analyzer = _MODELS["vader"]
    return np.array([analyzer.polarity_scores(text)["compound"] for text in texts], dtype=np.float64)


def offensive_probability(texts: Sequence[str]) -> np.ndarray:
    """Probability that each text is offensive (alt-profanity-check), in [0, 1]. Shapes: (B,) float64."""
    if len(texts) == 0:
        return np.zeros(0, dtype=np.float64)
    import profanity_check

    return np.asarray(profanity_check.predict_prob(list(texts)), dtype=np.float64)


def non_toxicity(texts: Sequence[str]) -> np.ndarray:
    """``1 - P(offensive)`` of each text, in [0, 1], higher = cleaner. Shapes: (B,) float64."""
    return 1.0 - offensive_probability(texts)


@dataclass(frozen=True)
class Score:
    """A named text-quality score: what it prefers and how to compute it."""

    name: str
    criterion: str
    fn: Callable[[Sequence[str]], np.ndarray]

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """The score as a reward function of (prompts, completions); the prompt is ignored."""
        return self.fn(completions)


SCORES = {
    "sentiment": Score("sentiment", "positivity", vader_compound),
    "toxicity": Score("toxicity", "non-toxicity", non_toxicity),
}
