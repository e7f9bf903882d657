from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import rlenv  # noqa: F401

PAD, EOS, THE, MOVIE, GOOD, BAD = 0, 1, 3, 5, 10, 11
ROW_PROMPTS = ["the movie was good", "this story", "a film is bad and dull"]


def random_actions(rng: np.random.Generator, steps: int, rows: int) -> np.ndarray:
    """Token ids with EOS often enough that rows end at different steps."""
    actions = rng.integers(3, 40, size=(steps, rows))
    actions[rng.random((steps, rows)) < 0.25] = EOS
    return actions


def test_spaces_and_autoreset_metadata(make_vec, tokenizer):
    env = make_vec(num_envs=3)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert make_vec(autoreset_mode="disabled").metadata["autoreset_mode"] == AutoresetMode.DISABLED
    assert env.single_action_space == gymnasium.spaces.Discrete(len(tokenizer))
    assert env.action_space.shape == (3,)
    assert env.observation_space["input_ids"].shape == (3, 8)
    obs, info = env.reset(seed=0)
    assert obs["input_ids"].shape == (3, 8) and obs["input_ids"].dtype == torch.int64
    assert env.observation_space.contains({key: value.numpy() for key, value in obs.items()})
    assert len(info["prompt"]) == 3


@pytest.mark.parametrize("mode", ["disabled", "same_step"])
def test_rows_match_single_envs_given_the_same_prompts_and_actions(make_vec, make_env, mode):
    vec = make_vec(num_envs=3, window=6, autoreset_mode=mode, reward_fn="token_count:10")
    singles = [make_env(window=6, reward_fn="token_count:10") for _ in ROW_PROMPTS]
    obs, _ = vec.reset(seed=0, options={"prompts": ROW_PROMPTS})
    single_obs = [env.reset(options={"prompt": p})[0] for env, p in zip(singles, ROW_PROMPTS, strict=True)]
    ended = [False] * 3
    for actions in random_actions(np.random.default_rng(1), 5, 3):
        obs, rewards, terminated, truncated, info = vec.step(torch.as_tensor(actions))
        final_obs = info.get("final_obs", obs)
        for row, env in enumerate(singles):
            if ended[row]:
                continue
            expected = env.step(int(actions[row]))
            single_obs[row], ended[row] = expected[0], expected[2] or expected[3]
            assert final_obs["input_ids"][row].tolist() == expected[0]["input_ids"].tolist()
            assert final_obs["attention_mask"][row].tolist() == expected[0]["attention_mask"].tolist()
            assert rewards[row].item() == expected[1]
            assert (terminated[row].item(), truncated[row].item()) == expected[2:4]
            assert info["completion"][row] == expected[4].get("completion", "")
    assert all(ended)


def test_disabled_mode_masks_rows_that_ended(make_vec):
    env = make_vec(num_envs=3, autoreset_mode="disabled", max_new_tokens=3)
    env.reset(options={"prompts": ROW_PROMPTS})
    _, rewards, terminated, _, info = env.step(torch.tensor([GOOD, EOS, GOOD]))
    assert terminated.tolist() == [False, True, False] and rewards.tolist() == [0.0, 0.0, 0.0]
    frozen = env._observation()["input_ids"][1].clone()
    obs, rewards, terminated, truncated, info = env.step(torch.tensor([EOS, 99, GOOD]))
    assert info["active"].tolist() == [True, False, True]
    assert terminated.tolist() == [True, False, False] and rewards.tolist() == [1.0, 0.0, 0.0]
    assert obs["input_ids"][1].tolist() == frozen.tolist() and info["all_done"] is False
    obs, rewards, terminated, truncated, info = env.step(torch.tensor([GOOD, GOOD, BAD]))
    assert info["active"].tolist() == [False, False, True]
    assert truncated.tolist() == [False, False, True] and terminated.tolist() == [False, False, False]
    assert rewards.tolist() == [0.0, 0.0, 3.0] and info["all_done"] is True
    tokens, lengths = env.generated_tokens()
    assert lengths.tolist() == [2, 1, 3]
    assert tokens.tolist() == [[GOOD, EOS, PAD], [EOS, PAD, PAD], [GOOD, GOOD, BAD]]
    assert env.completions() == ["good", "", "good good bad"]
    assert env.final_scores.tolist() == [1.0, 0.0, 3.0] and env.finished.all()
    assert env.prompt_texts == ROW_PROMPTS
    with pytest.raises(RuntimeError, match="after all 3 rows ended; call reset"):
        env.step(torch.tensor([GOOD] * 3))


def test_disabled_mode_partial_reset_restarts_only_masked_rows(make_vec):
    env = make_vec(num_envs=2, autoreset_mode="disabled")
    env.reset(seed=0, options={"prompts": ["the movie", "this story"]})
    env.step(torch.tensor([EOS, GOOD]))
    obs, info = env.reset(options={"reset_mask": np.array([True, False]), "prompts": ["a film"]})
    assert info["prompt"] == ["a film", "this story"]
    assert obs["input_ids"][0].tolist()[-2:] == [4, 6] and obs["input_ids"][1].tolist()[-1] == GOOD
    assert env.generated_tokens()[1].tolist() == [0, 1] and env.finished.tolist() == [False, False]
    assert env.step(torch.tensor([GOOD, GOOD]))[4]["active"].tolist() == [True, True]
    with pytest.raises(ValueError, match="first reset must restart every row"):
        make_vec(num_envs=2, autoreset_mode="disabled").reset(options={"reset_mask": [True, False]})


def test_same_step_mode_restarts_ended_rows_at_once(make_vec):
    env = make_vec(num_envs=2, max_new_tokens=4)
    env.reset(seed=3, options={"prompts": ["the movie", "this story"]})
    obs, rewards, terminated, truncated, info = env.step(torch.tensor([GOOD, EOS]))
    assert terminated.tolist() == [False, True] and info["active"].all()
    assert info["final_obs"]["input_ids"][1].tolist()[-3:] == [26, 7, EOS]
    assert info["final_obs"]["input_ids"][0].tolist() == obs["input_ids"][0].tolist()
    assert obs["input_ids"][1].tolist()[-1] != EOS and env.generated_tokens()[1].tolist() == [1, 0]
    assert info["length"].tolist() == [1, 1] and info["prompt"] == ["the movie", "this story"]
    assert env.finished.tolist() == [False, True]
    for _ in range(3):
        obs, rewards, terminated, truncated, info = env.step(torch.tensor([GOOD, GOOD]))
    assert truncated.tolist() == [True, False] and rewards.tolist() == [4.0, 0.0]
    assert info["completion"] == ["good good good good", ""]
    assert env.final_scores.tolist() == [4.0, 0.0]


def test_reward_function_is_called_once_per_step_on_the_rows_that_end(make_vec):
    calls = []

    def reward(prompts, completions):
        calls.append(list(completions))
        return torch.arange(len(completions), dtype=torch.float32)

    env = make_vec(num_envs=4, autoreset_mode="disabled", max_new_tokens=2, reward_fn=reward)
    env.reset(seed=0)
    env.step(torch.tensor([EOS, GOOD, GOOD, GOOD]))
    _, rewards, *_ = env.step(torch.tensor([GOOD, GOOD, BAD, EOS]))
    assert calls == [[""], ["good good", "good bad", "good"]]
    assert rewards.tolist() == [0.0, 0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (torch.tensor([GOOD, 40, -3]), ValueError, r"actions \[40, -3\] at rows \[1, 2\] are not token ids"),
        (torch.tensor([1.0, 2.0, 3.0]), TypeError, "dtype torch.float32"),
        (torch.tensor([True, False, True]), TypeError, "dtype torch.bool"),
        (torch.tensor([GOOD, GOOD]), ValueError, r"shape \(3,\), got \(2,\)"),
        (["a", "b", "c"], TypeError, "integer token ids"),
    ],
)
def test_bad_actions_are_rejected(make_vec, actions, error, message):
    env = make_vec(num_envs=3)
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(actions)


def test_numpy_and_list_actions_are_accepted(make_vec):
    env = make_vec(num_envs=2)
    env.reset(seed=0)
    for actions in (np.array([GOOD, BAD]), [GOOD, BAD]):
        obs, *_ = env.step(actions)
        assert obs["input_ids"][:, -1].tolist() == [GOOD, BAD]


def test_bad_reward_outputs_and_bad_calls_are_named(make_vec):
    env = make_vec(num_envs=2, max_new_tokens=1, reward_fn=lambda p, c: [1.0, 2.0, 3.0])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"returned 3 scores .* for 2 completions: \[1.0, 2.0, 3.0\]"):
        env.step(torch.tensor([GOOD, GOOD]))
    fresh = make_vec(num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        fresh.step(torch.tensor([GOOD, GOOD]))
    with pytest.raises(ValueError, match=r"must hold 2 prompts .* got \['the movie'\]"):
        fresh.reset(options={"prompts": ["the movie"]})
    with pytest.raises(ValueError, match="empty prompt ''"):
        fresh.reset(options={"prompts": ["the movie", ""]})
    with pytest.raises(ValueError, match=r"unknown reset options \['prompt'\]"):
        fresh.reset(options={"prompt": "the movie"})
    with pytest.raises(ValueError, match="unknown autoreset_mode 'next_step'"):
        make_vec(autoreset_mode="next_step")
    with pytest.raises(ValueError, match="num_envs must be a positive integer, got 0"):
        make_vec(num_envs=0)


def test_make_vec_uses_the_vector_entry_point(tokenizer, prompts):
    env = gymnasium.make_vec(
        "rlenv/TextGeneration-v0", num_envs=2, tokenizer=tokenizer, prompts=prompts, reward_fn="length"
    )
    assert type(env).__name__ == "TextGenerationVectorEnv" and env.num_envs == 2
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"].shape == (2, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_state_lives_on_cuda(make_vec):
    env = make_vec(num_envs=2, device="cuda", autoreset_mode="disabled")
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"].is_cuda
    _, rewards, terminated, _, info = env.step(torch.tensor([EOS, GOOD], device="cuda"))
    assert rewards.is_cuda and terminated.tolist() == [True, False] and info["active"].is_cuda
