"""The optimizer step and the epoch loop shared by the offline trainers (DPO, SFT, distillation).

:func:`guarded_step` refuses a non-finite loss or gradient (no step is taken, the step is
reported as skipped); :func:`run_epochs` makes shuffled passes over row indices with an
optional wall-time budget, a progress bar and logging.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def guarded_step(
    loss: Tensor, parameters: Sequence[Tensor], optimizer: torch.optim.Optimizer, max_grad_norm: float | None
) -> dict[str, float]:
    """Backpropagate ``loss``, clip and step; a non-finite loss or gradient norm takes no step.

    Returns ``skipped`` (1.0 or 0.0) and, when the loss was finite, ``grad_norm``.
    """
    optimizer.zero_grad()
    if not bool(torch.isfinite(loss)):
        return {"skipped": 1.0}
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm or math.inf)
    if not bool(torch.isfinite(norm)):
        optimizer.zero_grad()
        return {"skipped": 1.0, "grad_norm": float(norm)}
    optimizer.step()
    return {"skipped": 0.0, "grad_norm": float(norm)}


def run_epochs(
    count: int,
    batch_size: int,
    epochs: int,
    seed: int,
    step: Callable[[Tensor], dict[str, float]],
    *,
    name: str,
    logger: Any = None,
    progress: bool = False,
    max_seconds: float | None = None,
    started: float | None = None,
) -> tuple[dict[str, float], int]:
    """``epochs`` shuffled passes over ``count`` rows in batches, calling ``step(rows)``.

    Stops early once ``max_seconds`` have passed since ``started`` (default: now). Metrics are
    logged as ``<name>/<metric>`` at the number of steps taken. Returns the last step's metrics
    and the number of steps.
    """
    if epochs < 1:
        raise ValueError(f"{name}.epochs must be >= 1, got {epochs}")
    started = time.perf_counter() if started is None else started
    order = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = epochs * math.ceil(count / batch_size)
        bar = tqdm(total=total, desc=name, unit="step", file=sys.stderr, dynamic_ncols=True)
    metrics: dict[str, float] = {}
    steps = 0
    try:
        for _ in range(epochs):
            for rows in torch.randperm(count, generator=order).split(batch_size):
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    log.info("%s: max_seconds=%g reached after %d steps", name, max_seconds, steps)
                    return metrics, steps
                metrics = step(rows)
                steps += 1
                if logger is not None:
                    logger.log({f"{name}/{k}": v for k, v in metrics.items()}, steps)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({"loss": f"{metrics.get('loss', math.nan):.3f}"})
    finally:
        if bar is not None:
            bar.close()
    return metrics, steps
