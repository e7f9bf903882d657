"""The AI labeler: multiple-choice log-probabilities, rotations against position bias, collect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rlenv.feedback.ai_labeler import LETTERS, AILabeler
from rlenv.feedback.constitution import load_constitution
from rlenv.text.tokenizers import TINY_WORDS, tiny_tokenizer

OPTION_WORDS = ["A", "B", "C", "D", "(A)", "(B)", "(C)", "(D)", "(", "Text:", "best", "option"]


def letter_tokenizer():
    return tiny_tokenizer(vocab_size=64, words=[*TINY_WORDS, *OPTION_WORDS])


class ToyJudge(nn.Module):
    """Fixed log-probs: the letter of an option whose first word is ``good`` gets +3, ``bad`` -3,
    and the letter A always +2 (a position bias the rotations must cancel)."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(vocab)
        self.markers = {vocab[f"({x})"]: vocab[x] for x in "ABCD"}
        self.good, self.bad, self.a = vocab["good"], vocab["bad"], vocab["A"]

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for row, ids in enumerate(input_ids.tolist()):
            last = logits[row, -1]
            last[self.a] += 2.0
            for position, token in enumerate(ids[:-1]):
                if token in self.markers:
                    follower = ids[position + 1]
                    last[self.markers[token]] += (
                        3.0 if follower == self.good else -3.0 if follower == self.bad else 0.0
                    )
        return type("Output", (), {"logits": logits})()


def test_ranking_follows_the_fixed_log_probs_and_cancels_position_bias():
    tokenizer = letter_tokenizer()
    labeler = AILabeler(ToyJudge(tokenizer), tokenizer, load_constitution("positive"))
    assert labeler.criterion == "positivity" and labeler.name == "ai(positive)"
    assert labeler.rank("the movie", ["bad film", "good film", "the film"]) == (3, 1, 2)
    assert labeler.rank("the movie", ["good film", "the film", "bad film", "it was"]) == (1, 2, 3, 2)
    scores = labeler.scores("the movie", ["the film", "it was"])  # only position bias: a tie
    assert np.isclose(scores[0], scores[1])
    by_hand = np.log(np.exp([5.0, 0.0]) / np.exp([5.0, 0.0]).sum())  # good under A, the other under B
    other = np.log(np.exp([2.0, 3.0]) / np.exp([2.0, 3.0]).sum())  # the other under A, good under B
    good = labeler.scores("x", ["good", "the"])[0]
    assert np.isclose(good, (by_hand[0] + other[1]) / 2, atol=1e-5)


def test_question_shows_every_option_under_its_letter_and_letters_must_be_tokens():
    tokenizer = letter_tokenizer()
    labeler = AILabeler(ToyJudge(tokenizer), tokenizer, load_constitution("harmless"), max_chars=5)
    text = labeler.question("a long prompt here", ["first option", ""])
    assert "(A) first" in text and "(B) (empty)" in text and text.endswith("The best option is (")
    assert "Text: a lon" in text and "a long" not in text  # cut to max_chars
    with pytest.raises(ValueError, match="ranks 2 to 26 completions"):
        labeler.letter_ids(len(LETTERS) + 1)
    plain = tiny_tokenizer()  # every letter is <unk>
    with pytest.raises(ValueError, match="one distinct token per letter"):
        AILabeler(ToyJudge(tokenizer), plain, load_constitution()).rank("p", ["a", "b"])


def test_collect_with_labeler_ai_writes_rankings_of_the_ai_labeler(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module

    from rlenv.feedback.collect import run
    from rlenv.feedback.rankings import load_rankings
    from rlenv.text.models import tiny_causal_lm

    judge = tmp_path / "judge"
    tiny_causal_lm().save_pretrained(judge)
    letter_tokenizer().save_pretrained(judge)
    (tmp_path / "prompts.txt").write_text("the movie was\na film is\n")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            config_name="collect",
            overrides=[
                f"out={tmp_path / 'rankings.jsonl'}",
                "model=tiny",
                f"prompts={tmp_path / 'prompts.txt'}",
                "labeler=ai",
                f"ai_labeler.model={judge}",
                "n_completions=3",
                "generation.max_new_tokens=4",
                "num_threads=1",
                "progress=false",
            ],
        )
    summary = run(cfg)
    assert summary.labeled == 2
    records = load_rankings(tmp_path / "rankings.jsonl")
    assert all(r.criterion == "positivity" and r.labels[0].labeler == "ai(positive)" for r in records)
    assert all(sorted(set(r.labels[0].ranks)) == list(range(1, max(r.labels[0].ranks) + 1)) for r in records)
