from __future__ import annotations

import math
import time
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlenv  # noqa: F401
from rlenv.text.env import TextGenerationEnv
from rlenv.text.rewards import make_reward_fn, validate_scores
from rlenv.text.tokenizers import load_tokenizer, tiny_tokenizer

PAD, EOS, THE, MOVIE, GOOD, BAD = 0, 1, 3, 5, 10, 11


def test_spaces_follow_the_window_and_the_vocabulary(make_env, tokenizer):
    env = make_env(window=6)
    assert env.action_space == gymnasium.spaces.Discrete(len(tokenizer))
    ids_space = env.observation_space["input_ids"]
    assert ids_space.shape == (6,) and ids_space.dtype == np.int64
    assert ids_space.low.min() == 0 and ids_space.high.max() == len(tokenizer) - 1
    assert env.observation_space["attention_mask"].high.max() == 1
    assert make_env(vocab_size=50).action_space.n == 50


def test_passes_gymnasium_check_env(make_env):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(make_env(render_mode="ansi"))


def test_reset_left_pads_the_prompt_and_samples_with_the_seed(make_env, prompts):
    env = make_env()
    obs, info = env.reset(options={"prompt": "the movie"})
    assert obs["input_ids"].tolist() == [PAD] * 6 + [THE, MOVIE]
    assert obs["attention_mask"].tolist() == [0] * 6 + [1, 1]
    assert info == {"prompt": "the movie"}
    sampled = [env.reset(seed=seed)[1]["prompt"] for seed in range(20)]
    assert set(sampled) == set(prompts)
    assert sampled == [env.reset(seed=seed)[1]["prompt"] for seed in range(20)]


def test_eos_terminates_and_the_score_arrives_only_at_the_end(make_env):
    calls = []

    def reward(prompts, completions):
        calls.append((prompts, completions))
        return [10.0 + len(completions[0].split())]

    env = make_env(reward_fn=reward)
    env.reset(options={"prompt": "the movie"})
    for token in (GOOD, BAD):
        _, reward_value, terminated, truncated, info = env.step(token)
        assert (reward_value, terminated, truncated, info) == (0.0, False, False, {})
    obs, reward_value, terminated, truncated, info = env.step(EOS)
    assert (reward_value, terminated, truncated) == (12.0, True, False)
    assert info == {"prompt": "the movie", "completion": "good bad", "score": 12.0, "length": 3}
    assert calls == [(["the movie"], ["good bad"])]
    assert obs["input_ids"].tolist()[-3:] == [GOOD, BAD, EOS]


def test_max_new_tokens_truncates(make_env):
    env = make_env(max_new_tokens=3, reward_fn="token_count:10")
    env.reset(options={"prompt": "the"})
    results = [env.step(GOOD) for _ in range(3)]
    assert [(r[2], r[3]) for r in results] == [(False, False), (False, False), (False, True)]
    assert [r[1] for r in results] == [0.0, 0.0, 3.0]
    assert results[-1][4]["completion"] == "good good good"


def test_eos_on_the_last_allowed_token_terminates_rather_than_truncates(make_env):
    env = make_env(max_new_tokens=2)
    env.reset(options={"prompt": "the"})
    env.step(GOOD)
    assert env.step(EOS)[2:4] == (True, False)


def test_custom_eos_token_id_and_no_eos(make_env, tokenizer):
    env = make_env(eos_token_id=BAD)
    env.reset(options={"prompt": "the"})
    assert env.step(EOS)[2] is False and env.step(BAD)[2] is True
    no_eos = tiny_tokenizer(vocab_size=40)
    no_eos.eos_token = None
    env = make_env(tokenizer=no_eos, max_new_tokens=2)
    env.reset(options={"prompt": "the"})
    assert env.step(EOS)[2:4] == (False, False) and env.step(EOS)[2:4] == (False, True)


def test_context_is_left_truncated_to_the_window(make_env):
    env = make_env(window=4, max_new_tokens=6, prompts=["the movie was"])
    env.reset(seed=0)
    obs = None
    for token in (GOOD, BAD, GOOD):
        obs = env.step(token)[0]
    assert obs["input_ids"].tolist() == [9, GOOD, BAD, GOOD]
    assert obs["attention_mask"].tolist() == [1, 1, 1, 1]


def test_prompt_longer_than_the_window_is_rejected_or_truncated(make_env):
    with pytest.raises(
        ValueError, match=r"'a film is bad and dull' is 6 tokens long but the context window holds 4"
    ):
        make_env(window=4)
    env = make_env(window=4, prompt_overflow="truncate")
    obs, _ = env.reset(options={"prompt": "the movie was really very good"})
    assert obs["input_ids"].tolist() == [9, 20, 19, GOOD]
    env = make_env(window=4, prompts=["the movie"])
    with pytest.raises(ValueError, match="6 tokens long but the context window holds 4"):
        env.reset(options={"prompt": "the movie was really very good"})
    with pytest.raises(ValueError, match="prompt_overflow 'cut'"):
        make_env(prompt_overflow="cut")


def test_empty_prompts_are_rejected_with_their_position(make_env):
    with pytest.raises(ValueError, match=r"prompts\[1\] is an empty prompt '  '"):
        make_env(prompts=["the movie", "  "])
    with pytest.raises(ValueError, match="holds no prompts"):
        make_env(prompts=[])
    env = make_env()
    with pytest.raises(ValueError, match="empty prompt ''"):
        env.reset(options={"prompt": ""})
    with pytest.raises(TypeError, match="prompt 3 is a int"):
        env.reset(options={"prompt": 3})


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (40, ValueError, r"action 40 is not a token id of the vocabulary \[0, 40\)"),
        (-1, ValueError, r"action -1 is not a token id"),
        (2.0, TypeError, r"integer token id in \[0, 40\), got 2.0 \(float\)"),
        (True, TypeError, r"got True \(bool\)"),
        ("good", TypeError, r"got 'good' \(str\)"),
        (np.array([1, 2]), TypeError, r"got array"),
    ],
)
def test_bad_actions_are_rejected(make_env, action, error, message):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(action)


def test_integer_like_actions_are_accepted(make_env):
    env = make_env()
    env.reset(seed=0)
    for action in (np.int64(GOOD), np.array(GOOD), torch.tensor(GOOD), GOOD):
        obs, *_ = env.step(action)
        assert int(obs["input_ids"][-1]) == GOOD


def test_stepping_before_reset_or_after_the_end_raises(make_env):
    env = make_env(max_new_tokens=1)
    with pytest.raises(RuntimeError, match=r"before reset\(\)"):
        env.step(GOOD)
    with pytest.raises(ValueError, match=r"unknown reset options \['prompts'\]"):
        env.reset(options={"prompts": ["the movie"]})
    env.reset(seed=0)
    env.step(GOOD)
    with pytest.raises(RuntimeError, match=r"after the episode ended \(max_new_tokens=1 after 1 tokens\)"):
        env.step(GOOD)
    env.reset(seed=0)
    env.step(GOOD)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ([math.nan], r"non-finite scores \[nan\] \(rows \[0\]\)"),
        ([math.inf], r"non-finite scores \[inf\]"),
        ([1.0, 2.0], r"returned 2 scores .* for 1 completions: \[1.0, 2.0\]"),
        ([], r"returned 0 scores"),
        (0.5, r"one score per completion \(1\), got 0.5 \(float\)"),
        (["x"], r"non-numeric scores \['x'\]"),
    ],
)
def test_bad_reward_function_outputs_are_named(make_env, scores, message):
    env = make_env(reward_fn=lambda prompts, completions: scores, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match=message):
        env.step(GOOD)


def test_validate_scores_accepts_tensors_and_arrays():
    assert validate_scores(torch.tensor([1.0, 2.0]), 2).dtype == np.float32
    assert validate_scores(np.array([3, 4]), 2).tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match=r"non-finite .*rows \[1\]"):
        validate_scores(torch.tensor([0.0, float("nan")]), 2)


def test_reward_names_resolve(tokenizer):
    completions = ["good good movie", "bad"]
    assert make_reward_fn("token_count:10", tokenizer)(["p", "p"], completions) == [2.0, 0.0]
    assert make_reward_fn("token_count:bad")(["p", "p"], completions) == [0.0, 1.0]
    assert make_reward_fn("length")(["p", "p"], completions) == [3.0, 1.0]
    positive, negative = make_reward_fn("sentiment")(["p", "p"], ["what a great film", "awful and dull"])
    assert positive > 0 > negative
    with pytest.raises(ValueError, match="unknown reward_fn 'joy'"):
        make_reward_fn("joy")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        make_reward_fn("token_count:10")


def test_render_ansi_shows_prompt_and_completion(make_env):
    env = make_env(render_mode="ansi")
    env.reset(options={"prompt": "the movie"})
    env.step(GOOD)
    assert env.render() == "'the movie' -> 'good' [1/5 tokens]"
    assert make_env().render() is None


def test_tiny_tokenizer_and_load_tokenizer_errors(tmp_path):
    tokenizer = load_tokenizer("tiny:32")
    assert len(tokenizer) == 32 and (tokenizer.pad_token_id, tokenizer.eos_token_id) == (PAD, EOS)
    assert tokenizer.decode(tokenizer("the movie")["input_ids"]) == "the movie"
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    assert len(load_tokenizer(str(tmp_path / "tok"))) == 32
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_tokenizer(str(tmp_path / "does-not-exist"))
    with pytest.raises(FileNotFoundError, match="'no-such-org/no-such-model'"):
        load_tokenizer("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="vocab_size 5 is too small"):
        tiny_tokenizer(vocab_size=5)


def test_gymnasium_make_with_a_tiny_tokenizer(tokenizer, prompts):
    env = gymnasium.make(
        "rlenv/TextGeneration-v0", tokenizer=tokenizer, prompts=prompts, reward_fn="length", window=8
    )
    assert isinstance(env.unwrapped, TextGenerationEnv)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert env.step(GOOD)[1] == 0.0


@pytest.mark.slow
def test_registered_defaults_use_smollm2_and_sentiment_prompts(tmp_path, monkeypatch):
    monkeypatch.setenv("RLENV_CACHE", str(tmp_path))
    env = gymnasium.make("rlenv/TextGeneration-v0")
    assert env.action_space.n == 49152
    start = time.perf_counter()
    cached = load_tokenizer("smollm2")
    assert time.perf_counter() - start < 1.0
    assert cached("a good movie")["input_ids"] == env.unwrapped.tokenizer("a good movie")["input_ids"]
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and 0 < len(info["prompt"].split()) <= 8
    terminated = truncated = False
    rng = np.random.default_rng(0)
    steps = 0
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(3, 49152)))
        steps += 1
    assert steps == 32 and truncated and -1.0 <= reward <= 1.0 and reward == info["score"]
    assert isinstance(info["completion"], str) and info["completion"]
