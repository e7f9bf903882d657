"""Learning-rate schedules of the agents: the factory type and resuming one's progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

ScheduleFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
"""``optimizer -> LRScheduler``, e.g. ``functools.partial(torch.optim.lr_scheduler.LinearLR, ...)``."""

_SCHEDULE_PROGRESS = {
    "last_epoch",
    "_last_lr",
    "_step_count",
    "base_lrs",
    "_get_lr_called_within_step",
    "_is_initial",
}


def load_schedule(schedule: torch.optim.lr_scheduler.LRScheduler, saved: dict[str, Any]) -> None:
    """Restore a schedule's progress; keep this run's settings where they differ from the saved ones.

    A run resumed with a longer ``train.total_env_steps`` builds its schedule with the new
    length (``total_iters``); loading the saved state as is would bring back the old length
    and, at its end, a learning rate of 0. The saved progress (``last_epoch``) is kept, this
    run's settings are put back, and the learning rate is recomputed from the schedule's
    closed form where it has one.
    """
    fresh = schedule.state_dict()
    changed = {
        key: value
        for key, value in fresh.items()
        if key not in _SCHEDULE_PROGRESS and saved.get(key) != value
    }
    schedule.load_state_dict(saved)
    if not changed:
        return
    for key, value in changed.items():
        setattr(schedule, key, value)
    closed_form = getattr(schedule, "_get_closed_form_lr", None)
    if closed_form is not None:
        rates = closed_form()
        for group, rate in zip(schedule.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        schedule._last_lr = list(rates)
