"""Launchers: joblib jobs split the cores; the cluster configs compose and validate; Submitit
(local processes) and Ray run a sweep; an Optuna study in SQLite continues."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

import agents.train  # noqa: F401  (registers the config schemas)
from agents.run.jobs import available_cores

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "env=tictactoe",
    "agent=qlearning_tabular",
    "num_envs=8",
    "agent.rollout_steps=4",
    "train.total_env_steps=64",
    "train.progress=false",
    "env.evaluation.episodes=10",
    "logger=none",
]


def hydra_config(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


def test_slurm_launcher_composes_with_the_project_defaults():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = hydra_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.partition) == (4, 16, "gpu")
    with pytest.raises(ConfigCompositionException, match="cpus_per_task=four") as error:
        hydra_config("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=four")
    assert isinstance(error.value.__cause__, ValidationError)


def test_ray_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    launcher = hydra_config("hydra/launcher=ray_local").launcher
    assert launcher._target_.endswith("ray_launcher.RayLauncher")
    assert launcher.ray.remote.num_cpus == 1 and launcher.ray.init.address is None


def sweep(tmp_path: Path, *launcher: str) -> list[dict]:
    out = tmp_path / "multirun"
    command = [sys.executable, "-m", "agents.train", "-m", *launcher, *TINY, "seed=0,1"]
    command.append(f"hydra.sweep.dir={out}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return [json.loads(path.read_text()) for path in sorted(out.glob("*/metrics.json"))]


def test_joblib_sweep_jobs_split_the_cores(tmp_path):
    metrics = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert len(metrics) == 2
    assert all(m["perf/torch_threads"] == max(1, available_cores() // 2) for m in metrics)


def test_submitit_local_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    metrics = sweep(tmp_path, "hydra/launcher=local_submitit")
    assert len(metrics) == 2
    assert all(m["perf/env_steps"] >= 64 and m["perf/torch_threads"] == 1 for m in metrics)


def test_ray_runs_a_sweep_on_a_local_instance(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    metrics = sweep(tmp_path, "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2")
    assert len(metrics) == 2
    assert all(m["perf/env_steps"] >= 64 and m["perf/torch_threads"] == 1 for m in metrics)


def test_text_sweep_experiment_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=text_ppo_sweep"], return_hydra_config=True)
    assert cfg.env.name == "text" and cfg.objective == "eval/heldout/return_mean"
    assert cfg.hydra.sweeper.storage.startswith("sqlite:///")
    assert set(cfg.hydra.sweeper.params) == {"agent.kl.coef", "agent.optimizer.lr", "agent.clip_coef"}


def test_optuna_study_in_sqlite_continues_when_run_again(tmp_path):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    overrides = [
        "+experiment=tictactoe_ppo_sweep",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "hydra.launcher.n_jobs=1",  # joblib runs the trials in this process, one after the other
        "num_envs=8",
        "agent.rollout_steps=8",
        "train.total_env_steps=64",
        "env.evaluation.episodes=10",
        "logger=none",
    ]
    for run in range(2):  # the second command continues the study the first one stored
        out = tmp_path / f"multirun{run}"
        command = [sys.executable, "-m", "agents.train", "-m", *overrides, f"hydra.sweep.dir={out}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="tictactoe_ppo", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    # the continued study explores new points (its seeded sampler does not replay the first ones)
    first, second = [t.params for t in complete[:2]], [t.params for t in complete[2:]]
    assert not [p for p in second if p in first]


def test_a_missing_launcher_or_sweeper_plugin_names_the_extra(monkeypatch):
    import importlib.util

    from agents.run import jobs

    assert jobs.requested_plugins(["agent=ppo", "+experiment=tictactoe_ppo_sweep"]) == [
        ("sweeper", "optuna"),
        ("launcher", "joblib"),
    ]
    assert jobs.requested_plugins(["-m", "hydra/launcher=ray_local", "seed=0,1"]) == [
        ("launcher", "ray_local")
    ]
    jobs.check_plugins(["hydra/launcher=joblib", "+experiment=tictactoe_ppo_sweep"])  # installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("hydra_plugins") else real(name, *a),
    )
    with pytest.raises(
        SystemExit, match=r"hydra/launcher=slurm needs the hydra-submitit-launcher plugin.*rlenv\[cluster\]"
    ):
        jobs.check_plugins(["-m", "hydra/launcher=slurm"])
    with pytest.raises(
        SystemExit, match=r"hydra/sweeper=optuna needs the hydra-optuna-sweeper plugin.*rlenv\[sweep\]"
    ):
        jobs.check_plugins(["+experiment=tictactoe_ppo_sweep"])
    jobs.check_plugins(["hydra/launcher=basic", "agent=ppo"])  # Hydra's own launcher needs nothing


def test_sweep_job_names_keep_only_what_the_sweep_varies(monkeypatch):
    from agents.run import jobs

    task = ["env=tictactoe", "agent=ppo", "seed=1", "train.total_env_steps=2000", "agent.optimizer.lr=0.001"]
    monkeypatch.setenv(jobs.COMMAND_LINE, "[]")  # restored (unset) after the test
    monkeypatch.delenv(jobs.COMMAND_LINE)
    assert jobs.run_name(task, ["device"]) == ",".join(task)  # without the command line: every override
    jobs.remember_command_line(
        [
            "-m",
            "env=tictactoe",
            "agent=ppo,qlearning",
            "seed=range(3)",
            "train.total_env_steps=2000",
            "device=cpu",
        ]
    )
    # agent and seed are swept; the learning rate was chosen by a sweeper (not on the command line)
    assert jobs.run_name(task, ["device"]) == "agent=ppo,seed=1,agent.optimizer.lr=0.001"
    assert jobs.run_name(["+experiment=x", "device=cpu"], ["device"]) == "experiment=x"
    jobs.remember_command_line(["-m", "seed=0"])
    assert jobs.run_name(["seed=0"]) == "run"
