"""Any Gymnasium env through agents.train: built-in envs, an env and an agent defined only here,
and the one collector in next-step, same-step and disabled autoreset modes."""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from omegaconf import OmegaConf

from agents import train
from agents.collect.collector import RolloutCollector
from agents.core.base import PolicyStep, Rollout
from rlenv.gym_vector import make_vector_env
from tests.test_config import compose_config

torch.set_num_threads(1)
FAST = ["train.progress=false", "logger=none", "env.evaluation.episodes=4", "env.evaluation.num_envs=2"]


class LockedDoor(gym.Env):
    """Three rounds; the observation is a Dict of the round and a noisy cue of which of the 3
    doors opens. Opening it pays 1. ``info["action_mask"]`` forbids door 0 in round 0."""

    metadata = {"render_modes": []}

    def __init__(self, rounds: int = 3) -> None:
        self.rounds = rounds
        self.observation_space = spaces.Dict(
            {"round": spaces.Discrete(rounds), "cue": spaces.Box(-2.0, 2.0, shape=(3,), dtype=np.float32)}
        )
        self.action_space = spaces.Discrete(3)

    def _obs(self) -> dict[str, Any]:
        cue = np.full(3, -1.0, dtype=np.float32)
        cue[self.door] = 1.0
        return {"round": self.round, "cue": cue}

    def _info(self) -> dict[str, Any]:
        mask = np.ones(3, dtype=np.int8)
        mask[0] = 0 if self.round == 0 else 1
        return {"action_mask": mask}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.round = 0
        self.door = int(self.np_random.integers(1, 3))
        return self._obs(), self._info()

    def step(self, action: int):
        if self.round == 0 and int(action) == 0:
            raise AssertionError("the masked door was opened")
        reward = float(int(action) == self.door)
        self.round += 1
        self.door = int(self.np_random.integers(0, 3)) if self.round > 0 else self.door
        terminated = self.round >= self.rounds
        if terminated:
            self.round = self.rounds - 1
        return self._obs(), reward, terminated, False, self._info()


gym.register("test/LockedDoor-v0", entry_point=LockedDoor)


class FirstLegalAgent:
    """An agent defined only here: plays the first legal action and counts what it learns from."""

    def __init__(self, observation_space, action_space, *, device: str = "cpu", rollout_steps: int = 4):
        self.device = torch.device(device)
        self.rollout_steps = rollout_steps
        self.num_actions = int(action_space.n)
        self.seen_steps = 0

    @staticmethod
    def check_spaces(observation_space, action_space) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError("FirstLegalAgent needs a Discrete action space")

    def act(self, obs, action_mask=None, deterministic=False):
        batch = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
        if action_mask is None:
            return torch.zeros(batch, dtype=torch.long)
        return torch.as_tensor(action_mask).bool().int().argmax(dim=-1)

    def explore(self, obs, action_mask=None):
        return PolicyStep(actions=self.act(obs, action_mask))

    def learn(self, rollout: Rollout) -> dict[str, float]:
        self.seen_steps += rollout.num_valid
        return {"diag/seen_steps": float(self.seen_steps)}

    def state_dict(self) -> dict[str, Any]:
        return {"seen_steps": self.seen_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen_steps = int(state["seen_steps"])


@pytest.mark.parametrize("agent", ["ppo", "qlearning"])
def test_an_env_defined_in_a_test_trains_through_agents_train(tmp_path, agent):
    steps = ["train.total_env_steps=96", "num_envs=4", "agent.rollout_steps=12"]
    if agent == "qlearning":
        steps += ["agent.learning_starts=16", "agent.batch_size=8"]
    cfg = compose_config(
        ["env=gym", "env.id=test/LockedDoor-v0", "env.kwargs={rounds: 4}", f"agent={agent}", *steps, *FAST]
    )
    metrics = train.run(cfg, tmp_path)
    assert metrics["perf/env_steps"] == 96
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["eval/default/episodes"] == 4
    assert 0.0 <= saved["eval/default/return_mean"] <= 4.0 and saved["eval/default/return_std"] >= 0.0


def test_an_agent_defined_in_a_test_trains_through_agents_train(tmp_path):
    cfg = compose_config(
        ["env=gym", "env.id=test/LockedDoor-v0", "train.total_env_steps=64", "num_envs=4", *FAST]
    )
    cfg.agent = OmegaConf.create(
        {"_target_": f"{__name__}.FirstLegalAgent", "device": "${device}", "rollout_steps": 8}
    )
    metrics = train.run(cfg, tmp_path)
    assert metrics["perf/env_steps"] == 64
    assert metrics["eval/default/return_mean"] >= 0.0


@pytest.mark.parametrize(
    ("env_id", "agent", "extra"),
    [
        ("CartPole-v1", "ppo", []),
        ("CartPole-v1", "qlearning", ["agent.learning_starts=32", "agent.batch_size=16"]),
        ("Taxi-v4", "ppo", []),
        ("Taxi-v4", "qlearning", ["agent.learning_starts=32", "agent.batch_size=16"]),
        ("Taxi-v4", "qlearning_tabular", []),
    ],
)
def test_builtin_gymnasium_envs_run_two_updates_of_each_agent(tmp_path, env_id, agent, extra):
    cfg = compose_config(
        [
            "env=gym",
            f"env.id={env_id}",
            f"agent={agent}",
            "num_envs=4",
            "agent.rollout_steps=16",
            *extra,
            *FAST,
        ]
    )
    cfg.train.total_env_steps = 2 * 4 * 16
    metrics = train.run(cfg, tmp_path)
    assert 128 <= metrics["perf/env_steps"] < 128 + 64  # valid steps: next-step resets are not counted
    assert math.isfinite(metrics["eval/default/return_mean"])
    assert (tmp_path / "checkpoints" / "latest").is_file()


class ScriptedActions:
    device = torch.device("cpu")

    def __init__(self, action: int = 0) -> None:
        self.action = action

    def explore(self, obs, action_mask=None):
        batch = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
        return PolicyStep(actions=torch.full((batch,), self.action), values=torch.ones(batch))


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_the_collector_marks_next_step_resets_as_padding(mode):
    vectorization = "vector_entry_point" if mode == "next_step" else "sync"
    env = make_vector_env("CartPole-v1", num_envs=3, vectorization_mode=vectorization, autoreset_mode=mode)
    assert env.metadata["autoreset_mode"] == AutoresetMode(
        {"next_step": "NextStep", "same_step": "SameStep"}[mode]
    )
    collector = RolloutCollector(env, ScriptedActions(0), seed=0)
    rollout, stats = collector.collect(40)  # always pushing left ends episodes after ~10 steps
    done = rollout.done
    assert bool(done.any()) and len(stats.returns) == int(done.sum())
    if mode == "next_step":
        after_done = torch.zeros_like(done)
        after_done[1:] = done[:-1]
        assert torch.equal(~rollout.valid, after_done)  # the reset step after each end is padding
        assert rollout.num_valid == 120 - int(after_done.sum())
        assert torch.equal(rollout.values, rollout.valid.float())
    else:
        assert rollout.valid is None and rollout.num_valid == 120
    # CartPole pays 1 per step: each return equals its length only if padding is neither paid nor counted
    assert all(r == length for r, length in zip(stats.returns, stats.lengths, strict=True))
    env.close()


def test_the_collector_plays_whole_episodes_in_disabled_mode():
    env = make_vector_env("CartPole-v1", num_envs=3, vectorization_mode="sync", autoreset_mode="disabled")
    rollout, stats = RolloutCollector(env, ScriptedActions(1), seed=0).collect(500)
    assert rollout.whole_episodes and len(stats.returns) == 3
    lengths = rollout.valid.sum(0)
    assert sorted(lengths.tolist()) == sorted(int(x) for x in stats.lengths)
    assert rollout.num_steps == int(lengths.max())  # it stops once every row has ended
    assert torch.equal(rollout.done.sum(0), torch.ones(3, dtype=torch.long))
    env.close()


class Corridor(gym.Env):
    """A corridor without a time limit: only action 1 moves toward the exit at cell 3."""

    metadata = {"render_modes": []}
    observation_space = spaces.Discrete(4)
    action_space = spaces.Discrete(2)

    def __init__(self, action_start: int = 0) -> None:
        self.action_space = spaces.Discrete(2, start=action_start)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cell = 0
        return self.cell, {}

    def step(self, action: int):
        assert self.action_space.contains(action), action
        self.cell = min(self.cell + int(action) - int(self.action_space.start), 3)
        return self.cell, float(self.cell == 3), self.cell == 3, False, {}


gym.register("test/Corridor-v0", entry_point=Corridor)


def test_episodes_without_a_time_limit_are_cut_by_max_episode_steps_or_the_evaluation_budget():
    from agents.evaluate import play_episodes

    stay = FirstLegalAgent(Corridor.observation_space, Corridor.action_space)  # always action 0
    env = make_vector_env("test/Corridor-v0", num_envs=2, vectorization_mode="sync")
    result = play_episodes(stay, env, episodes=4, seed=0, max_steps=50)
    assert result["episodes"] == 0  # stopped by the budget instead of running forever
    env = make_vector_env("test/Corridor-v0", num_envs=2, vectorization_mode="sync", max_episode_steps=5)
    result = play_episodes(stay, env, episodes=4, seed=0, max_steps=50)
    assert result["episodes"] == 4 and result["return_mean"] == 0.0
    with pytest.raises(ValueError, match="max_episode_steps must be at least 1"):
        make_vector_env("test/Corridor-v0", num_envs=1, max_episode_steps=0)


def test_unknown_ids_and_unsupported_spaces_are_named():
    with pytest.raises(ValueError, match="env.id='NoSuchEnv-v0' is not a registered Gymnasium env"):
        make_vector_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="vectorization_mode='threads'"):
        make_vector_env("CartPole-v1", vectorization_mode="threads")


def test_an_action_space_that_does_not_start_at_zero_is_shifted_for_the_agents(tmp_path):
    env = make_vector_env(
        "test/Corridor-v0", num_envs=2, kwargs={"action_start": -1}, vectorization_mode="sync"
    )
    assert env.single_action_space == spaces.Discrete(2)
    env.reset(seed=0)
    obs, rewards, terminated, *_ = env.step(torch.tensor([1, 1]))
    assert obs.tolist() == [1, 1]
    cfg = compose_config(
        [
            "env=gym",
            "env.id=test/Corridor-v0",
            "env.kwargs={action_start: 5}",
            "agent=qlearning_tabular",
            *FAST,
        ]
    )
    cfg.train.total_env_steps = 400
    metrics = train.run(cfg, tmp_path)
    assert metrics["eval/default/return_mean"] == 1.0  # learned to walk to the exit
