"""Parallel jobs of a sweep split the cores: torch threads per job."""

from __future__ import annotations

import pytest

from agents.run.jobs import available_cores, in_multirun, show_progress, threads_for_job


@pytest.mark.parametrize(
    ("requested", "launcher", "cores", "expected"),
    [
        (3, {"n_jobs": 2}, 8, 3),  # an explicit train.torch_threads wins
        (None, None, 8, None),  # a single run keeps torch's default
        (None, {"n_jobs": 2}, 2, 1),  # two jobs on two cores: one thread each
        (None, {"n_jobs": 3}, 8, 2),
        (None, {"n_jobs": 16}, 4, 1),  # more jobs than cores: never 0
        (None, {"n_jobs": -1}, 4, 1),  # joblib's -1: one job per core
        (None, {"n_jobs": 1}, 4, None),
        (None, {"cpus_per_task": 4, "tasks_per_node": 1}, 16, 4),  # Submitit
        (None, {"ray": {"remote": {"num_cpus": 2}}}, 16, 2),  # the Ray launcher
        (None, {"cpus_per_task": 32}, 8, 8),
        (None, {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, None),
    ],
)
def test_threads_for_job(requested, launcher, cores, expected):
    assert threads_for_job(requested, launcher, cores) == expected


def test_available_cores_is_positive():
    assert available_cores() >= 1


def test_progress_bars_outside_a_multirun_follow_the_setting():
    assert not in_multirun()
    assert show_progress(True) and not show_progress(False)
