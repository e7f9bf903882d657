"""Potential-based reward shaping: every token gets the change of the completion's score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlenv.text.env import RewardFunctionError

ROW_PROMPTS = ["the movie was good", "this story", "a film is bad and dull"]
EOS = 1


def good_minus_bad(prompts: list[str], completions: list[str]) -> list[float]:
    """A score that rises and falls along a completion, as a sentiment lexicon does."""
    return [float(text.split().count("good") - 2 * text.split().count("bad")) for text in completions]


def actions(seed: int, steps: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = rng.choice([3, 5, 10, 11, 12, 20], size=(steps, rows))  # 10 = "good", 11 = "bad"
    tokens[rng.random((steps, rows)) < 0.2] = EOS
    return tokens


@pytest.mark.parametrize("mode", ["disabled", "same_step"])
def test_shaped_rewards_are_score_changes_that_sum_to_the_final_score(make_vec, make_env, mode):
    vec = make_vec(num_envs=3, autoreset_mode=mode, reward_fn=good_minus_bad, reward_shaping="potential")
    plain = make_vec(num_envs=3, autoreset_mode=mode, reward_fn=good_minus_bad)
    singles = [make_env(reward_fn=good_minus_bad, reward_shaping="potential") for _ in ROW_PROMPTS]
    vec.reset(options={"prompts": ROW_PROMPTS})
    plain.reset(options={"prompts": ROW_PROMPTS})
    for env, prompt in zip(singles, ROW_PROMPTS, strict=True):
        env.reset(options={"prompt": prompt})
    returns, final_scores, ended = torch.zeros(3), torch.zeros(3), [False] * 3
    moved = False
    for step_actions in actions(3, 5, 3):
        _, rewards, terminated, truncated, info = vec.step(torch.as_tensor(step_actions))
        _, plain_rewards, _, _, plain_info = plain.step(torch.as_tensor(step_actions))
        assert info["score"].tolist() == plain_info["score"].tolist()  # the final score is unchanged
        assert info["completion"] == plain_info["completion"]
        for row, env in enumerate(singles):
            if ended[row]:
                assert rewards[row].item() == 0.0
                continue
            _, reward, term, trunc, single_info = env.step(int(step_actions[row]))
            assert rewards[row].item() == pytest.approx(reward)
            moved |= reward != 0.0 and not (term or trunc)
            returns[row] += rewards[row]
            if term or trunc:
                final_scores[row] = single_info["score"]
                assert plain_rewards[row].item() == single_info["score"]
                ended[row] = mode == "disabled"
                if not ended[row]:
                    env.reset(options={"prompt": vec.prompt_texts[row]})
                    returns[row] -= final_scores[row]
    assert moved, "the test's actions never moved the score before an episode's end"
    if mode == "disabled":
        assert all(ended)
        assert returns.tolist() == pytest.approx(final_scores.tolist())
        assert returns.tolist() == pytest.approx(vec.final_scores.tolist())


def test_unknown_reward_shaping_is_named(make_vec, make_env):
    with pytest.raises(ValueError, match=r"reward_shaping 'dense'.*\['none', 'potential'\]"):
        make_vec(reward_shaping="dense")
    with pytest.raises(ValueError, match="reward_shaping 'dense'"):
        make_env(reward_shaping="dense")


def test_a_failing_reward_function_mid_episode_leaves_the_shaped_env_unchanged(make_vec):
    calls = {"count": 0}

    def flaky(prompts: list[str], completions: list[str]) -> list[float]:
        calls["count"] += 1
        if calls["count"] == 2:
            raise RuntimeError("scorer offline")
        return good_minus_bad(prompts, completions)

    env = make_vec(num_envs=2, autoreset_mode="disabled", reward_fn=flaky, reward_shaping="potential")
    env.reset(options={"prompts": ROW_PROMPTS[:2]})
    good = torch.tensor([10, 10])
    _, rewards, *_ = env.step(good)
    assert rewards.tolist() == [1.0, 1.0]
    state = (env.generated_tokens(), env._potential.clone())
    with pytest.raises(RewardFunctionError, match="scorer offline"):
        env.step(good)
    assert torch.equal(env.generated_tokens()[0], state[0][0]) and torch.equal(env._potential, state[1])
    _, rewards, *_ = env.step(torch.tensor([11, 10]))  # "good bad": 1 - 2 = -1, a change of -2
    assert rewards.tolist() == [-2.0, 1.0]
