"""Review QA: questions quote one review, search cites ids, answers are scored on label and citation."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from rlenv.tools.react import ToolUseVectorEnv
from rlenv.tools.review_qa import ReviewQATask
from tests.tools.test_shopbot import play

ROWS = [
    ("A dazzling and heartfelt comedy with a superb cast", "fresh"),
    ("Tedious, overlong and painfully unfunny from start to finish", "rotten"),
    ("The director builds suspense with patience and real craft", "fresh"),
    ("A muddled plot sinks what little charm the leads bring", "rotten"),
    ("Gorgeous photography cannot rescue a script this thin and lazy", "rotten"),
    ("Warm, witty and wise, the best family film of the year", "fresh"),
]


class HashedWords:
    """A toy encoder: unit-length counts of hashed lower-case words."""

    def __call__(self, texts):
        rows = torch.zeros(len(texts), 64)
        for row, text in enumerate(texts):
            for word in text.lower().replace(",", " ").split():
                rows[row, zlib.crc32(word.encode()) % 64] += 1.0
        return torch.nn.functional.normalize(rows + 1e-6, dim=-1)


@pytest.fixture()
def task():
    return ReviewQATask(rows=ROWS, corpus_size=6, quote_words=3, encoder=HashedWords(), heldout_fraction=0.34)


def test_questions_quote_their_review_and_the_splits_are_disjoint(task):
    assert not set(task.splits["train"]) & set(task.splits["heldout"]) and len(task.splits["heldout"]) == 2
    rng = np.random.default_rng(0)
    for split in ("train", "heldout"):
        for _ in range(10):
            episode = task.episode(rng, split)
            quote = episode.prompt.split('"')[1]
            assert episode.review_id in task.splits[split] and quote in task.reviews[episode.review_id][0]
            assert episode.label == task.reviews[episode.review_id][1]


def test_answers_score_half_for_the_label_and_half_for_the_citation(task):
    episode = task.episode(np.random.default_rng(1), "train")
    other = "rotten" if episode.label == "fresh" else "fresh"
    assert episode.outcome(f"{episode.label}, {episode.review_id}").score == 1.0
    assert episode.outcome(f"{episode.label}, {episode.review_id}").success
    assert episode.outcome(f"{episode.label}, rt-999").score == 0.5
    assert episode.outcome(f"{other}, {episode.review_id}").score == 0.5
    assert episode.outcome(f"fresh or rotten, {episode.review_id}").score == 0.5  # both labels: no credit
    assert episode.outcome(None).score == 0.0 and "expected" in episode.outcome(None).detail


def test_search_cites_the_quoted_review_first(task):
    observation = task.search("superb cast")
    assert observation.splitlines()[0].startswith("[rt-0] A dazzling")
    assert len(observation.splitlines()) == 3


def test_a_scripted_episode_through_the_env_searches_then_answers(task):
    env = ToolUseVectorEnv(task, num_envs=1, autoreset_mode="disabled", window=256, max_turn_tokens=48)
    env.reset(seed=2)
    episode = env._episodes[0]
    quote = episode.prompt.split('"')[1]
    play(env, 0, f" I search.\nAction: search[{quote}]")
    assert f"[{episode.review_id}]" in env.transcript(0).split("Observation:")[1].splitlines()[0]
    _, reward, terminated, _, info = play(
        env, 0, f" Found.\nAction: finish[{episode.label}, {episode.review_id}]"
    )
    assert terminated.tolist() == [True] and info["episode_metrics"]["success"].tolist() == [1.0]
    assert reward.item() == pytest.approx(1.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="heldout_fraction must be in"):
        ReviewQATask(rows=ROWS, heldout_fraction=1.5)
    with pytest.raises(ValueError, match="reviews longer than"):
        ReviewQATask(rows=ROWS, quote_words=30)
