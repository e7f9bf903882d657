"""Statistics over seeds for sweep summaries: pure numpy functions.

A configuration run with a handful of seeds gives one final value per seed; these functions
reduce such samples of shape ``(n,)`` (or ``(n, T)`` for learning curves, one row per seed)
along the seed axis.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


class Stats(NamedTuple):
    """What :func:`describe` reports for one sample (``nan`` where undefined)."""

    n: int
    mean: float
    std: float
    iqm: float
    ci_low: float
    ci_high: float


def _sample(values: ArrayLike) -> np.ndarray:
    sample = np.asarray(values, dtype=np.float64)
    if sample.ndim == 0 or sample.shape[0] == 0:
        raise ValueError(f"expected a non-empty sample of shape (n,) or (n, T), got shape {sample.shape}")
    return sample


def sample_std(values: ArrayLike) -> float:
    """Sample standard deviation (``ddof=1``) of ``values`` (n,); ``nan`` for a single value."""
    sample = _sample(values)
    return float(sample.std(ddof=1)) if sample.size > 1 else float("nan")


def interquartile_mean(values: ArrayLike) -> float:
    """Mean of the middle 50% of ``values`` (n,), with fractional weights at the quartiles.

    The sorted values ``x_0 <= ... <= x_{n-1}`` cover ``[0, n]``, ``x_i`` the unit interval
    ``[i, i + 1]``; the IQM is the mean over ``[n/4, 3n/4]``, each value weighted by the part of
    its interval inside. For n = 8 that is the mean of ``x_2 .. x_5``; for n = 3 it is
    ``(x_0 / 4 + x_1 + x_2 / 4) / 1.5``; for n = 1 the value itself. When n is a multiple of 4
    this equals the 25% trimmed mean that rliable's ``aggregate_iqm`` reports
    (``scipy.stats.trim_mean(x, 0.25)``); otherwise that one drops whole values only (for n = 3
    it drops none and gives the plain mean), while this one still damps the extremes.
    """
    sorted_values = np.sort(_sample(values).ravel())
    n = sorted_values.size
    start = np.arange(n, dtype=np.float64)
    weights = np.clip(np.minimum(start + 1.0, 0.75 * n) - np.maximum(start, 0.25 * n), 0.0, 1.0)
    return float(weights @ sorted_values / (0.5 * n))


def bootstrap_ci(
    values: ArrayLike,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of the mean over axis 0.

    Draws ``resamples`` samples of n rows with replacement (a fixed-seed generator, so the
    interval is the same on every call) and returns the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of their means. Where every value is the same the
    interval is exactly that value.

    Args:
        values: shape (n,) for one interval, or (n, T) for one interval per column (curves).

    Returns:
        ``(low, high)``, each of shape ``()`` for (n,) input or (T,) for (n, T) input.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    sample = _sample(values)
    n = sample.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    means = counts @ sample.reshape(n, -1) / n  # (resamples, T)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    first = sample.reshape(n, -1)[0]
    constant = (sample.reshape(n, -1) == first).all(axis=0)
    low, high = np.where(constant, first, low), np.where(constant, first, high)
    shape = sample.shape[1:]
    return low.reshape(shape), high.reshape(shape)


def describe(values: ArrayLike) -> Stats:
    """Count, mean, sample std, IQM and bootstrap 95% CI of the mean of ``values`` (n,)."""
    sample = _sample(values).ravel()
    low, high = bootstrap_ci(sample)
    return Stats(
        n=int(sample.size),
        mean=float(sample.mean()),
        std=sample_std(sample),
        iqm=interquartile_mean(sample),
        ci_low=float(low),
        ci_high=float(high),
    )
