"""A run as one job of a sweep: torch threads per job, progress bars only where one reads them.

Parallel jobs of a sweep split the cores instead of oversubscribing them.

``train.torch_threads`` set: that many threads. Unset: in a Hydra multirun whose launcher runs
several jobs at once on this machine (``hydra/launcher=joblib`` with ``n_jobs``, the Ray
launcher's ``num_cpus`` per task, Submitit's ``cpus_per_task``), each job takes its share of
the cores this process may use; otherwise torch's default (every core) is kept. Two jobs on
2 cores get 1 thread each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_for_job(requested: int | None, launcher: Mapping[str, Any] | None, cores: int) -> int | None:
    """Threads for one job: ``requested`` if given, else the launcher's share of ``cores``.

    Args:
        requested: ``train.torch_threads`` (None: not set).
        launcher: the Hydra launcher config of a multirun (None: a single run).
        cores: cores available to this process.

    Returns:
        the thread count to set, or None to keep torch's default.
    """
    if requested:
        return int(requested)
    if not launcher:
        return None
    ray_remote = (launcher.get("ray") or {}).get("remote") or {}
    for value in (launcher.get("cpus_per_task"), ray_remote.get("num_cpus")):  # Submitit, Ray
        if isinstance(value, int) and value > 0:
            return min(value, cores)
    jobs = launcher.get("n_jobs")
    if isinstance(jobs, int) and jobs != 1:
        parallel = cores if jobs < 0 else min(jobs, cores)  # joblib: -1 means one job per core
        return max(1, cores // parallel)
    return None


def in_multirun() -> bool:
    """Whether this process is a job of a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def show_progress(requested: bool) -> bool:
    """Progress bars as ``train.progress`` says, except in the jobs of a multirun, whose bars
    would interleave on one terminal (their logs and result tables stay)."""
    return bool(requested) and not in_multirun()


def hydra_launcher() -> Mapping[str, Any] | None:
    """The launcher config of the current Hydra multirun job (None outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not in_multirun():
        return None
    launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)
    return launcher if isinstance(launcher, dict) else None


def set_job_threads(requested: int | None) -> int:
    """Set torch's threads for this job (see the module docstring); returns the count in use."""
    threads = threads_for_job(requested, hydra_launcher(), available_cores())
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
