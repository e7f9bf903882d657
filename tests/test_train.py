"""End to end: a tiny training run logs, checkpoints, evaluates, reloads and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agents
import agents.run.checkpoint
from agents import train
from tests.test_config import compose_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "num_envs=8",
    "train.total_env_steps=256",
    "train.checkpoint_every=1",
    "train.progress=false",
    "env.evaluation.episodes=40",
    "env.evaluation.num_envs=20",
]
AGENT_OVERRIDES = {
    "ppo": ["agent.rollout_steps=16"],
    "qlearning": ["agent.rollout_steps=4", "agent.learning_starts=32", "agent.batch_size=16"],
    "qlearning_tabular": ["agent.rollout_steps=4"],
}


def tiny_config(agent: str, *extra: str):
    return compose_config([f"agent={agent}", *TINY, *AGENT_OVERRIDES[agent], *extra])


@pytest.mark.parametrize("agent_name", sorted(AGENT_OVERRIDES))
def test_tiny_run_writes_events_checkpoint_and_metrics(tmp_path, agent_name):
    metrics = train.run(tiny_config(agent_name), tmp_path)
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "latest").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["perf/env_steps"] >= 256
    for setting in ("random_as_x", "random_as_o", "perfect_as_x", "perfect_as_o"):
        rates = [metrics[f"eval/{setting}/{k}"] for k in ("win_rate", "draw_rate", "loss_rate")]
        assert sum(rates) == pytest.approx(1.0)
        assert metrics[f"eval/{setting}/episodes"] == 40

    loaded = agents.load_agent(tmp_path)
    fresh_obs = torch.randint(-1, 2, (64, 9), dtype=torch.int8)
    mask = fresh_obs == 0
    mask[:, 0] = True
    original = train.build(tiny_config(agent_name), torch.device("cpu"))[1]
    original.load_state_dict(loaded.state_dict())
    assert torch.equal(
        loaded.act(fresh_obs, mask, deterministic=True), original.act(fresh_obs, mask, deterministic=True)
    )
    actions = loaded.act(fresh_obs, mask, deterministic=True)
    assert bool(mask.gather(1, actions[:, None]).all())


def test_same_seed_same_result(tmp_path):
    first = train.run(tiny_config("ppo"), tmp_path / "a")
    second = train.run(tiny_config("ppo"), tmp_path / "b")
    assert first == {**second, "perf/train_seconds": first["perf/train_seconds"]}
    different = train.run(tiny_config("ppo", "seed=1"), tmp_path / "c")
    assert any(first[k] != different[k] for k in first if k.startswith("eval/"))


def test_resume_continues_from_checkpoint(tmp_path):
    train.run(tiny_config("ppo"), tmp_path / "a")
    overrides = [f"resume={tmp_path / 'a'}", "train.total_env_steps=512"]
    metrics = train.run(tiny_config("ppo", *overrides), tmp_path / "b", overrides=overrides)
    assert metrics["perf/env_steps"] == 512
    state_a, _ = agents.run.checkpoint.load_checkpoint(tmp_path / "a")
    state_b, _ = agents.run.checkpoint.load_checkpoint(tmp_path / "b")
    assert state_b["trainer"]["updates"] == 2 * state_a["trainer"]["updates"]


def test_ctrl_c_writes_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config("ppo", "train.checkpoint_every=1000")
    calls = {"n": 0}
    original = train.RolloutCollector.collect

    def interrupted(self, num_steps):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, num_steps)

    monkeypatch.setattr(train.RolloutCollector, "collect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, tmp_path)
    state, _ = agents.run.checkpoint.load_checkpoint(tmp_path)
    assert state["trainer"]["updates"] == 1


def test_bad_device_is_a_clear_error():
    with pytest.raises(ValueError, match="device='tpu'"):
        train.resolve_device("tpu")


def _python_module(module: str, *args: str, cwd) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_multirun_gives_each_run_its_own_directory_and_events(tmp_path):
    sweep_dir = tmp_path / "multirun"
    _python_module(
        "agents.train",
        "-m",
        "agent=ppo,qlearning_tabular",
        "seed=0,1",
        *TINY,
        "agent.rollout_steps=4",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    # named by what the sweep varies, not by the fixed overrides of the command line
    assert [p.name for p in runs] == [
        "0_agent=ppo,seed=0",
        "1_agent=ppo,seed=1",
        "2_agent=qlearning_tabular,seed=0",
        "3_agent=qlearning_tabular,seed=1",
    ]
    for run in runs:
        assert list(run.glob("events.out.tfevents.*")), run
        assert (run / "metrics.json").is_file() and (run / ".hydra" / "config.yaml").is_file()


def test_evaluate_entry_point_reevaluates_a_saved_run(tmp_path):
    train.run(tiny_config("ppo"), tmp_path / "run")
    out = _python_module("agents.evaluate", f"run={tmp_path / 'run'}", "episodes=30", cwd=tmp_path)
    assert "random_as_x" in out and "perfect_as_o" in out
    written = list((tmp_path / "run" / "evaluate").glob("*/eval_metrics.json"))
    assert len(written) == 1
    assert json.loads(written[0].read_text())["eval/random_as_x/episodes"] == 30


def test_runs_started_together_get_distinct_directories(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "agents.train", *TINY, "agent=qlearning_tabular", "agent.rollout_steps=4"]
    seeds = (0, 1, 2)
    processes = [
        subprocess.Popen(
            [*args, f"seed={seed}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for seed in seeds
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    runs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == len(seeds)
    saved_seeds = sorted(_seed_of(run) for run in runs)
    assert saved_seeds == list(seeds)
    for run in runs:
        assert (run / "metrics.json").is_file() and (run / "checkpoints" / "latest").is_file()


def _seed_of(run: Path) -> int:
    from omegaconf import OmegaConf

    return int(OmegaConf.load(run / "config.yaml").seed)


def test_eval_every_logs_evaluation_curves_and_keeps_the_best_evaluated_checkpoint(tmp_path):
    from agents.run.checkpoint import load_checkpoint
    from agents.run.results import read_scalars

    cfg = tiny_config(
        "ppo",
        "train.total_env_steps=640",
        "train.eval_every=1",
        "train.eval_episodes=20",
        "train.keep_checkpoints=2",
    )
    train.run(cfg, tmp_path)
    scalars = read_scalars(tmp_path)
    steps, scores = scalars["eval/score"]
    assert len(steps) == 5 and list(steps) == sorted(steps)  # one point per update, not one at the end
    assert len(scalars["eval/random_as_x/win_rate"][0]) == 5  # the final evaluation at the last step
    best = (tmp_path / "checkpoints" / "best").read_text().strip()
    _, meta = load_checkpoint(tmp_path / "checkpoints" / best)
    assert meta["score"] == pytest.approx(float(scores.max()), abs=1e-6)
    # kept beside the newest two even when it is older than them
    assert len([p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("update_")]) <= 3
