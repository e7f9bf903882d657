"""A reward function that fails leaves the env as it was: the failed step did not happen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlenv.text.env import RewardFunctionError

EOS = 1


class Flaky:
    """Scores by length, but raises on its first ``failures`` calls."""

    __name__ = "flaky"

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures

    def __call__(self, prompts, completions):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("judge unreachable")
        return np.asarray([float(len(c)) for c in completions], dtype=np.float32)


@pytest.mark.parametrize("last_token", [7, EOS])  # ends by max_new_tokens, or by EOS
def test_single_env_rolls_back_the_failed_last_step(make_env, last_token):
    env = make_env(reward_fn=Flaky(), max_new_tokens=3)
    obs, _ = env.reset(seed=0)
    for token in (4, 5):
        obs, *_ = env.step(token)
    with pytest.raises(RewardFunctionError, match="flaky.*judge unreachable.*unchanged"):
        env.step(last_token)
    again, reward, terminated, truncated, info = env.step(last_token)  # the retry is the same step
    assert terminated or truncated
    assert info["length"] == 3 and reward == float(len(info["completion"]))
    with pytest.raises(RuntimeError, match="ended"):
        env.step(4)


@pytest.mark.parametrize("mode", ["same_step", "disabled"])
def test_vector_env_rolls_back_the_failed_step(make_vec, mode):
    env = make_vec(num_envs=3, reward_fn=Flaky(), max_new_tokens=2, autoreset_mode=mode)
    obs, _ = env.reset(seed=1)
    env.step(torch.tensor([4, 4, 4]))
    before = {k: v.clone() for k, v in env._observation().items()}
    tokens_before, lengths_before = env.generated_tokens()
    with pytest.raises(RewardFunctionError):
        env.step(torch.tensor([5, 5, 5]))
    assert all(torch.equal(before[k], env._observation()[k]) for k in before)
    tokens, lengths = env.generated_tokens()
    assert torch.equal(tokens, tokens_before) and torch.equal(lengths, lengths_before)
    _, rewards, terminated, truncated, info = env.step(torch.tensor([5, 5, 5]))
    assert bool((terminated | truncated).all())
    assert info["length"].tolist() == [2, 2, 2]
    assert rewards.tolist() == [float(len(c)) for c in info["completion"]]
