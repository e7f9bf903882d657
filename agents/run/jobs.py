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
import sys
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


PLUGINS = {
    # group option -> (module the option needs, extra that installs it)
    ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "sweep"),
    ("sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("launcher", "local_submitit"): ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    ("launcher", "ray"): ("hydra_plugins.hydra_ray_launcher", "cluster"),
    ("launcher", "ray_local"): ("hydra_plugins.hydra_ray_launcher", "cluster"),
}


def requested_plugins(argv: list[str]) -> list[tuple[str, str]]:
    """The ``(group, option)`` launcher and sweeper choices of a command line, the ones an
    ``experiment=`` it names selects included."""
    import importlib.resources

    from omegaconf import OmegaConf

    chosen: list[tuple[str, str]] = []
    for argument in argv:
        key, _, value = argument.lstrip("+~").partition("=")
        if key in ("hydra/launcher", "hydra/sweeper"):
            chosen.append((key.split("/")[1], value))
        elif key == "experiment" and value:
            path = importlib.resources.files("conf") / "experiment" / f"{value}.yaml"
            if not path.is_file():
                continue  # Hydra names the missing option itself
            for entry in OmegaConf.load(str(path)).get("defaults") or []:
                if isinstance(entry, Mapping) or hasattr(entry, "items"):
                    for name, option in entry.items():
                        group = str(name).replace("override ", "").strip().lstrip("/")
                        if group in ("hydra/launcher", "hydra/sweeper"):
                            chosen.append((group.split("/")[1], str(option)))
    return chosen


def check_plugins(argv: list[str]) -> None:
    """Stop with a message naming the extra to install when a chosen launcher or sweeper
    plugin is missing (Hydra's own error only says the config option is not found)."""
    import importlib.util

    for group, option in requested_plugins(argv):
        module, extra = PLUGINS.get((group, option), (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise SystemExit(
                f"hydra/{group}={option} needs the {module.split('.')[-1].replace('_', '-')} plugin, "
                f"which is not installed: pip install 'rlenv[{extra}]' (or, from a checkout, "
                f"pip install -e '.[{extra}]')"
            )


COMMAND_LINE = "RLENV_COMMAND_LINE"
"""Environment variable holding the command line of a sweep, for its jobs' run names."""


def remember_command_line(argv: list[str]) -> None:
    """Keep ``argv`` where the jobs of a sweep find it (jobs inherit the environment, on every launcher)."""
    import json

    os.environ[COMMAND_LINE] = json.dumps(list(argv))


def prepare_command_line() -> None:
    """Before Hydra reads ``sys.argv``: stop if a chosen launcher or sweeper plugin is missing,
    and keep the command line for the run names of a sweep's jobs."""
    check_plugins(sys.argv[1:])
    remember_command_line(sys.argv[1:])


def _fixed_keys() -> set[str] | None:
    """Keys the command line sets to one value (not swept); None when it is not known."""
    import json

    raw = os.environ.get(COMMAND_LINE)
    if raw is None:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [a for a in json.loads(raw) if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # the job's config was composed from it already; nothing to learn here
        return None
    return {o.key_or_group for o in parsed if not o.is_sweep_override()}


def run_name(task_overrides: Any, exclude: Any = ()) -> str:
    """A sweep job's directory name: its overrides that the sweep varies, ``key=value`` joined by ``,``.

    The overrides the command line fixes (one value for every job) and ``exclude`` are left out,
    so TensorBoard lists a sweep's runs by what tells them apart (``agent=ppo,seed=1``), not by
    the whole command line; a sweeper's own search parameters (Optuna's) are kept. Without the
    command line (a job started some other way) every override is kept.
    """
    fixed = _fixed_keys() or set()
    excluded = {str(key) for key in exclude or ()}
    kept = []
    for override in task_overrides:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key not in fixed and key not in excluded:
            kept.append(str(override).lstrip("+~").replace("/", "-"))
    return ",".join(kept) or "run"


def study_seed(seed: int, storage: str | None, study_name: str | None) -> int:
    """The Optuna sampler's seed for this command: ``seed`` plus the trials the stored study holds.

    A seeded sampler restarted on a stored study would otherwise draw the same first points
    again; offset by the trials already there, a continued study explores new ones, and the
    same sequence of commands still gives the same trials.
    """
    if not storage or not study_name:
        return int(seed)
    try:
        import optuna
    except ImportError:
        return int(seed)
    try:
        summaries = optuna.study.get_all_study_summaries(storage=storage)
    except Exception:  # a new database, or one the sweeper will report on itself
        return int(seed)
    return int(seed) + sum(s.n_trials for s in summaries if s.study_name == study_name)
