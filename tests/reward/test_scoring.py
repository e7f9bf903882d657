from pathlib import Path

import numpy as np
import pytest
import torch

from rlenv.reward.scoring import MonitoredReward, RewardModelReward, standardization
from rlenv.reward.tiny import tiny_reward_model
from rlenv.text.rewards import make_reward_fn
from rlenv.text.tokenizers import tiny_tokenizer
from rlenv.text.vector_env import TextGenerationVectorEnv

PROMPTS = ["the movie was", "a film"]


def test_model_spec_scores_env_completions_with_the_saved_model(tmp_path: Path) -> None:
    model = tiny_reward_model(seed=5)
    model.score_mean, model.score_std = 0.5, 2.0
    model.save(tmp_path / "rm")
    reward_fn = make_reward_fn(f"model:{tmp_path / 'rm'}")
    assert isinstance(reward_fn, RewardModelReward)
    env = TextGenerationVectorEnv(
        2,
        tokenizer=tiny_tokenizer(),
        prompts=PROMPTS,
        reward_fn=f"model:{tmp_path / 'rm'}",
        window=8,
        max_new_tokens=3,
        autoreset_mode="disabled",
    )
    env.reset(seed=0)
    good = env.config.tokenizer.convert_tokens_to_ids("good")
    for _ in range(3):
        _, rewards, *_ = env.step(torch.full((2,), good))
    expected = (model.score(env.prompt_texts, env.completions(), calibrated=False) - 0.5) / 2.0
    torch.testing.assert_close(rewards, expected)


def test_unknown_model_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a saved reward model"):
        make_reward_fn(f"model:{tmp_path}")


def test_monitored_reward_returns_the_reward_and_logs_the_gap() -> None:
    monitored = MonitoredReward(
        lambda p, c: torch.tensor([1.0, 3.0]),
        lambda p, c: [0.0, 0.5],
        reward_mean=1.0,
        reward_std=2.0,
        monitor_std=0.5,
    )
    assert monitored.drain() == {}
    torch.testing.assert_close(monitored(PROMPTS, ["x", "y"]), torch.tensor([1.0, 3.0]))
    stats = monitored.drain()
    assert stats["charts/rm_score"] == 2.0 and stats["charts/labeler_score"] == 0.25
    assert stats["charts/rm_minus_labeler"] == pytest.approx(np.mean([0.0 - 0.0, 1.0 - 1.0]))
    assert monitored.drain() == {}


def test_standardization_needs_two_scores() -> None:
    assert standardization([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    with pytest.raises(ValueError, match="at least 2 scores"):
        standardization([1.0])
