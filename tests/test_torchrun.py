"""``torchrun --nproc_per_node=2 -m agents.train``: one run directory written by rank 0, every
rank's state in the checkpoint, resume, and the errors for what cannot run data-parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.run.checkpoint import load_checkpoint, resolve_checkpoint

TTT = [
    "env=tictactoe",
    "num_envs=16",
    "train.total_env_steps=1024",
    "train.progress=false",
    "env.evaluation.episodes=50",
    "env.evaluation.num_envs=25",
]


def leaves(obj: Any) -> list[Any]:
    """The leaves of a nested state, tensors as lists."""
    if isinstance(obj, dict):
        return [leaf for key in sorted(obj, key=str) for leaf in leaves(obj[key])]
    if isinstance(obj, (list, tuple)):
        return [leaf for item in obj for leaf in leaves(item)]
    return [obj.tolist() if isinstance(obj, torch.Tensor) else obj]


def torchrun(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, "-m", "agents.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("agent", ["ppo", "qlearning"])
def test_two_processes_train_checkpoint_and_resume(agent: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    extra = ["agent.rollout_steps=16"] if agent == "ppo" else ["agent.learning_starts=64"]
    done = torchrun(tmp_path, *TTT, f"agent={agent}", *extra, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 wrote no directory of its own
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["perf/env_steps"] >= 1024 and "eval/random_as_x/win_rate" in metrics
    state, _ = load_checkpoint(resolve_checkpoint(str(run)))
    assert len(state["ranks"]) == 2
    first, second = (leaves(state["ranks"][r]["rng"]) for r in (0, 1))
    assert len(first) == len(second) and first != second  # each rank draws its own random numbers
    if agent == "qlearning":
        assert set(state["ranks"][1]["agent"]) == {"replay", "counters"}

    resumed = tmp_path / "resumed"
    more = torchrun(
        tmp_path,
        *TTT,
        f"agent={agent}",
        "train.total_env_steps=2048",
        f"resume={run}",
        f"hydra.run.dir={resumed}",
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads((resumed / "metrics.json").read_text())["perf/env_steps"] >= 2048


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_envs=15"], "num_envs=15 does not split evenly over 2 processes"),
        (["agent=qlearning_tabular"], "TabularQAgent does not support data-parallel training"),
    ],
)
def test_what_cannot_run_data_parallel_is_refused(overrides: list[str], message: str, tmp_path: Path) -> None:
    done = torchrun(tmp_path, *TTT, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode != 0
    assert message in done.stderr + done.stdout
