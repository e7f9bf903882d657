"""The PAL and chain-of-thought math tasks: problems, rewards, the envs and their details."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import rlenv  # noqa: F401  (registers the env ids)
from rlenv.tools import pal
from rlenv.tools.problems import word_problems


def test_problems_are_reproducible_distinct_and_exact():
    first, again = word_problems(300, seed=5), word_problems(300, seed=5)
    assert first == again and len({p.question for p in first}) == 300
    assert first != word_problems(300, seed=6)
    assert all(p.answer >= 0 and isinstance(p.answer, int) for p in first)
    change = next(p for p in first if "change" in p.question)
    price, count, bill = (int(n) for n in re.findall(r"\d+", change.question))
    assert change.answer == bill - price * count


def test_prompts_split_without_overlap_and_follow_the_yaml_layout():
    problems = pal.task_problems("pal")
    prompts = pal.math_prompts(problems)
    assert len(prompts.heldout) == 200 and not set(prompts.train) & set(prompts.heldout)
    assert all(
        p.startswith(problems["prefix"]) and p.endswith("# solution in Python:\n\n") for p in prompts.heldout
    )
    with pytest.raises(ValueError, match=r"unknown math task field\(s\) \['steps'\]"):
        pal.math_prompts({**problems, "steps": 3})
    with pytest.raises(ValueError, match="mode='sql' is not one of"):
        pal.MathReward({**problems, "mode": "sql"})


def test_pal_reward_runs_programs_and_says_why_they_failed():
    problems = {**pal.task_problems("pal"), "count": 50}
    reward = pal.MathReward(problems, partial_credit=0.25)
    prompt = pal.math_prompts(problems).heldout[0]
    truth = reward.answers[prompt]
    completions = [
        f"def solution():\n    return {truth}\n\nQ: another question",
        "def solution():\n    return -1\n",
        "import os\nos.system('true')\n",
        "while True:\n    pass\n",
        "def solution(:\n",
    ]
    scores = reward([prompt] * len(completions), completions)
    assert scores == [1.0, 0.25, 0.0, 0.0, 0.0]
    details = reward.last_details
    assert details[0] == "correct" and details[1] == f"wrong: -1 (expected {truth})"
    assert details[2].startswith("sandbox forbidden: import of 'os'")
    assert details[3].startswith("sandbox cpu_limit") and details[4].startswith("sandbox syntax_error")
    with pytest.raises(ValueError, match="is not one of this math task's problems"):
        reward(["a prompt from elsewhere"], ["answer = 1"])


def test_cot_reward_reads_the_stated_answer():
    problems = {**pal.task_problems("math_cot"), "count": 50}
    reward = pal.MathReward(problems)
    prompt = pal.math_prompts(problems).heldout[0]
    truth = reward.answers[prompt]
    scores = reward(
        [prompt] * 4,
        [
            f" 3 + 4 = 7. The answer is {truth}.\nQ: The answer is 0",
            f" so it is {truth:,}",
            " The answer is 1000001.",
            " I do not know.",
        ],
    )
    assert scores == [1.0, 1.0, 0.0, 0.0]
    assert reward.last_details[3] == "no number"


def test_pal_env_reports_the_reward_detail_in_info():
    env = gym.make("rlenv/PAL-v0", tokenizer="tiny", window=512, max_new_tokens=3, problems={"count": 20})
    env.reset(seed=0)
    info = {}
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(3)
        if terminated or truncated:
            break
    assert truncated and reward == 0.0 and "reward_detail" in info and info["reward_detail"]
    envs = gym.make_vec("rlenv/PAL-v0", num_envs=2, tokenizer="tiny", window=512, max_new_tokens=2,
                        problems={"count": 20})  # fmt: skip
    envs.reset(seed=0)
    for _ in range(2):
        _, rewards, _, truncated, info = envs.step(np.array([3, 4]))
    assert truncated.all() and all(info["reward_detail"]) and rewards.tolist() == [0.0, 0.0]


def test_ppo_trains_on_pal_and_its_saved_config_is_trusted(tmp_path):
    from omegaconf import OmegaConf

    from agents import train
    from agents.run.registry import untrusted_entries
    from tests.test_config import compose_config

    cfg = compose_config(
        [
            "env=text",
            "task=pal",
            "agent=ppo",
            "env.model=tiny",
            "env.vector.window=512",
            "env.vector.max_new_tokens=4",
            "task.problems.count=40",
            "num_envs=4",
            "train.total_env_steps=32",
            "train.progress=false",
            "train.torch_threads=1",
            "env.evaluation.episodes=4",
            "env.evaluation.num_envs=4",
        ]
    )
    metrics = train.run(cfg, tmp_path)
    assert metrics["eval/heldout/episodes"] == 4 and "eval/heldout/return_mean" in metrics
    saved = OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml"))
    assert untrusted_entries(saved) == []
