"""The terminal Tic-Tac-Toe game against a trained agent, and sampling from a run or an export."""

from __future__ import annotations

import pytest
import torch

from agents import export, play, sample, train
from tests.agents.test_text_ppo import TINY_TEXT
from tests.test_config import compose_config


@pytest.fixture(scope="module")
def tictactoe_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tictactoe")
    train.run(
        compose_config(["agent=qlearning_tabular", "train.total_env_steps=2000", "train.progress=false"]),
        run_dir,
    )
    return run_dir


def test_play_reads_moves_refuses_bad_ones_and_reports_the_result(tictactoe_run):
    answers = iter(["9", "x", "0", "0", "1", "2", "3", "4", "5", "6", "7", "8"])
    asked, shown = [], []

    def read(question):
        asked.append(question)
        board = next(answers)
        return board

    results = play.play(tictactoe_run, "x", 1, read=read, write=shown.append)
    assert len(results) == 1 and results[0] in (-1, 0, 1)
    text = "".join(str(s) for s in shown)
    assert "'9' is not an empty cell" in text and "'x' is not an empty cell" in text
    assert any(word in text for word in ("you win", "a draw", "the agent wins"))
    assert asked[0].startswith("your move (X), one of [0, 1, 2, 3, 4, 5, 6, 7, 8]")


def test_play_as_o_and_quit(tictactoe_run):
    shown = []
    assert play.play(tictactoe_run, "o", 3, read=lambda q: "q", write=shown.append) == []
    assert "bye" in "".join(map(str, shown))
    with pytest.raises(ValueError, match="human='z'"):
        play.play(tictactoe_run, "z")


def test_sample_from_a_run_and_from_its_export(tmp_path):
    run_dir = tmp_path / "text"
    train.run(compose_config(["agent=ppo", *TINY_TEXT, "train.total_env_steps=48"]), run_dir)
    torch.manual_seed(0)
    from_run = sample.sample(run_dir, "the movie is", 3, max_new_tokens=4, seed=1)
    out = export.export(run_dir, tmp_path / "merged", "merged")
    from_export = sample.sample(out, "the movie is", 3, max_new_tokens=4, seed=1)
    assert len(from_run) == 3 and from_run == from_export  # the same model, the same seed
    with pytest.raises(ValueError, match="prompt"):
        sample.sample(run_dir, " ", 1)
    with pytest.raises(ValueError, match="does not hold a Tic-Tac-Toe agent"):
        play.play(run_dir, "x")
