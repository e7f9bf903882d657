"""Resume reproduces the uninterrupted run bit for bit; SIGTERM/SIGINT checkpoint and exit cleanly.

The subprocess test kills real training runs (``python -m agents.train``) with each signal at a
random point after their first checkpoint; ``benchmarks/kill_resume.py`` runs more points.
"""

from __future__ import annotations

import random

import pytest
import torch

from agents import train
from agents.run.checkpoint import load_checkpoint
from benchmarks import kill_resume
from tests.test_config import compose_config

SMALL = [
    "num_envs=4",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=null",
    "train.progress=false",
    "env.evaluation.episodes=8",
    "env.evaluation.num_envs=4",
]
SELF_PLAY = ["env.vector.opponent={random: 0.5, self_play: 0.5}", "train.self_play_every=3"]
PAIRS = {
    "tictactoe-self-play-ppo": [
        *SELF_PLAY,
        "agent=ppo",
        "agent.rollout_steps=16",
        "train.total_env_steps=768",
    ],
    "tictactoe-self-play-qlearning": [
        *SELF_PLAY,
        "agent=qlearning",
        "agent.rollout_steps=4",
        "agent.learning_starts=16",
        "agent.batch_size=8",
        "train.total_env_steps=256",
    ],
    "tictactoe-ppo": ["agent=ppo", "agent.rollout_steps=16", "train.total_env_steps=512"],
    "tictactoe-qlearning": [
        "agent=qlearning",
        "agent.rollout_steps=4",
        "agent.learning_starts=16",
        "agent.batch_size=8",
        "train.total_env_steps=256",
    ],
    "tictactoe-tabular": ["agent=qlearning_tabular", "agent.rollout_steps=4", "train.total_env_steps=256"],
    "cartpole-ppo": [
        "env=gym",
        "env.id=CartPole-v1",
        "agent=ppo",
        "agent.rollout_steps=16",
        "train.total_env_steps=512",
    ],
    "acrobot-ppo": [
        "env=gym",
        "env.id=Acrobot-v1",
        "agent=ppo",
        "agent.rollout_steps=16",
        "train.total_env_steps=512",
    ],
    "blackjack-qlearning": [
        "env=gym",
        "env.id=Blackjack-v1",
        "agent=qlearning",
        "agent.rollout_steps=4",
        "agent.learning_starts=16",
        "agent.batch_size=8",
        "train.total_env_steps=256",
    ],
    "taxi-tabular": [
        "env=gym",
        "env.id=Taxi-v4",
        "agent=qlearning_tabular",
        "agent.rollout_steps=4",
        "train.total_env_steps=256",
    ],
}


def _differences(a: dict, b: dict) -> list[str]:
    flat_a, flat_b = kill_resume._flat(a), kill_resume._flat(b)
    return [
        key
        for key in sorted(set(flat_a) | set(flat_b))
        if "train_seconds" not in key and not kill_resume._same(flat_a.get(key), flat_b.get(key))
    ]


def assert_resume_is_identical(
    tmp_path, args: list[str], min_checkpoints: int, rng: random.Random | None = None
) -> None:
    """Train, resume from a middle checkpoint (random with ``rng``), compare with the whole run."""
    full = train.run(compose_config(args), tmp_path / "full")
    checkpoints = sorted((tmp_path / "full" / "checkpoints").glob("update_*"))
    assert len(checkpoints) >= min_checkpoints
    index = rng.randrange(1, len(checkpoints) - 1) if rng is not None else len(checkpoints) // 2
    overrides = [f"resume={checkpoints[index]}"]
    resumed = train.run(compose_config([*args, *overrides]), tmp_path / "resumed", overrides=overrides)
    state_full, _ = load_checkpoint(tmp_path / "full")
    state_resumed, _ = load_checkpoint(tmp_path / "resumed")
    assert _differences(state_full, state_resumed) == []
    timing = ("perf/train_seconds",)
    assert {k: v for k, v in full.items() if k not in timing} == {
        k: v for k, v in resumed.items() if k not in timing
    }


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_resume_from_any_checkpoint_is_bitwise_identical(tmp_path, pair):
    assert_resume_is_identical(tmp_path, [*SMALL, *PAIRS[pair]], min_checkpoints=4, rng=random.Random(pair))


def test_the_comparison_detects_a_resume_that_loses_the_env_state(tmp_path, monkeypatch):
    args = [*SMALL, *PAIRS["tictactoe-ppo"]]
    train.run(compose_config(args), tmp_path / "full")
    middle = sorted((tmp_path / "full" / "checkpoints").glob("update_*"))[3]
    monkeypatch.setattr(train.RolloutCollector, "load_state_dict", lambda self, state: None)
    overrides = [f"resume={middle}"]
    train.run(compose_config([*args, *overrides]), tmp_path / "resumed", overrides=overrides)
    state_full, _ = load_checkpoint(tmp_path / "full")
    state_resumed, _ = load_checkpoint(tmp_path / "resumed")
    assert _differences(state_full, state_resumed)


def test_train_seconds_count_across_the_resume(tmp_path):
    args = [*SMALL, *PAIRS["tictactoe-ppo"]]
    train.run(compose_config(args), tmp_path / "full")
    middle = sorted((tmp_path / "full" / "checkpoints").glob("update_*"))[3]
    saved, _ = load_checkpoint(middle)
    assert saved["trainer"]["train_seconds"] > 0
    overrides = [f"resume={middle}"]
    resumed = train.run(compose_config([*args, *overrides]), tmp_path / "resumed", overrides=overrides)
    assert resumed["perf/train_seconds"] > saved["trainer"]["train_seconds"]


@pytest.mark.parametrize("agent", ["ppo", "qlearning"])
def test_killed_training_subprocess_resumes_identically(tmp_path, agent):
    outcomes = kill_resume.run([agent], points=1, extra=[], seed=hash(agent) % 1000, window=1.5)
    assert [o.signal for o in outcomes] == ["SIGTERM", "SIGINT", "SIGKILL"]
    for outcome in outcomes:
        assert outcome.identical, (outcome.signal, outcome.problems)
    assert [o.exit_code for o in outcomes] == [143, 130, -9]


def test_resume_keeps_the_saved_total_and_refuses_another_pair(tmp_path):
    args = [*SMALL, *PAIRS["tictactoe-ppo"]]
    train.run(compose_config(args), tmp_path / "a")
    saved, _ = load_checkpoint(tmp_path / "a")
    # composed with the preset's total (1e6 by default), but resume keeps the saved 512
    default = compose_config(["agent=ppo", f"resume={tmp_path / 'a'}", "train.progress=false"])
    metrics = train.run(default, tmp_path / "b", overrides=[f"resume={tmp_path / 'a'}"])
    assert metrics["perf/env_steps"] == saved["trainer"]["env_steps"]
    with pytest.raises(train.ResumeError, match="agent"):
        train.run(
            compose_config(["agent=qlearning", f"resume={tmp_path / 'a'}"]),
            tmp_path / "c",
            overrides=["agent=qlearning", f"resume={tmp_path / 'a'}"],
        )


def test_run_directory_of_another_run_is_refused(tmp_path):
    args = [*SMALL, *PAIRS["tictactoe-tabular"]]
    train.run(compose_config(args), tmp_path / "a")
    before = (tmp_path / "a" / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        train.run(compose_config(args), tmp_path / "a")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == before


def test_env_state_round_trip_restores_generators(tmp_path):
    from rlenv.env_state import get_env_state, set_env_state
    from rlenv.gym_vector import make_vector_env

    env = make_vector_env("CartPole-v1", num_envs=2)
    env.reset(seed=3)
    state = get_env_state(env)
    first = [env.step(torch.tensor([0, 1]))[0].clone() for _ in range(5)]
    set_env_state(env, state)
    again = [env.step(torch.tensor([0, 1]))[0].clone() for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert state["unsupported"] == []


TEXT_AGENTS = {
    "ppo": ["agent=ppo", "agent.num_minibatches=2", "train.total_env_steps=200"],
    "qlearning": [
        "agent=qlearning",
        "agent.rollout_steps=4",
        "agent.learning_starts=16",
        "agent.batch_size=8",
        "train.total_env_steps=160",
    ],
}


@pytest.mark.parametrize("agent", sorted(TEXT_AGENTS))
def test_text_env_resume_is_bitwise_identical(tmp_path, agent):
    from tests.agents.test_text_ppo import TINY_TEXT

    args = [*TINY_TEXT, *TEXT_AGENTS[agent], "train.checkpoint_every=1", "train.keep_checkpoints=null"]
    assert_resume_is_identical(tmp_path, args, min_checkpoints=3)


def test_resume_with_another_number_of_envs_is_refused(tmp_path):
    args = [*SMALL, *PAIRS["tictactoe-tabular"]]
    train.run(compose_config(args), tmp_path / "a")
    overrides = [f"resume={tmp_path / 'a'}", "num_envs=6"]
    with pytest.raises(train.ResumeError, match="num_envs=4"):
        train.run(compose_config([*args, *overrides]), tmp_path / "b", overrides=overrides)


def test_resume_with_a_longer_run_extends_the_learning_rate_schedule(tmp_path):
    args = [*SMALL, *PAIRS["cartpole-ppo"]]  # the gym preset decays the learning rate linearly to 0
    train.run(compose_config(args), tmp_path / "a")
    saved, _ = load_checkpoint(tmp_path / "a")
    assert saved["agent"]["optimizer"]["param_groups"][0]["lr"] == 0.0
    overrides = [f"resume={tmp_path / 'a'}", "train.total_env_steps=1024"]
    cfg, _ = train.resume_config(compose_config([*args, *overrides]), overrides)
    _, agent = train.build(cfg, torch.device("cpu"))
    agent.load_state_dict(saved["agent"])
    learning_rate = agent.optimizer.param_groups[0]["lr"]
    assert 0 < learning_rate < cfg.agent.optimizer.lr  # halfway through the longer schedule
    assert agent.lr_schedule.total_iters == 2 * saved["agent"]["lr_schedule"]["total_iters"]
    resumed = train.run(compose_config([*args, *overrides]), tmp_path / "b", overrides=overrides)
    final, _ = load_checkpoint(tmp_path / "b")
    assert resumed["perf/env_steps"] >= 1024
    before, after = saved["agent"]["network"], final["agent"]["network"]
    assert any(not torch.equal(before[key], after[key]) for key in before)  # it kept learning
