"""The single Tic-Tac-Toe env: API checks, turns, rewards, illegal and malformed actions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlenv  # noqa: F401
from rlenv.tictactoe import TicTacToeEnv, optimal_moves

torch.set_num_threads(1)


class FirstFreeCell:
    """Deterministic scripted opponent: the lowest empty cell."""

    def act(self, boards: torch.Tensor, legal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return legal.to(torch.uint8).argmax(dim=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"agent_plays": "o", "opponent": "perfect"},
        {"agent_plays": "both", "opponent": {"random": 1, "perfect": 1, "self_play": 1}},
        {"illegal_move": "raise", "render_mode": "ansi", "opponent": "self_play"},
    ],
)
def test_check_env(kwargs: dict[str, Any]) -> None:
    check_env(gym.make("rlenv/TicTacToe-v0", **kwargs).unwrapped)


def test_agent_as_x_wins_loses_with_rewards_and_outcome() -> None:
    env = TicTacToeEnv(opponent=FirstFreeCell())
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.int8 and obs.tolist() == [0] * 9
    assert info["action_mask"].dtype == np.int8 and info["action_mask"].tolist() == [1] * 9
    env.step(0)  # opponent 1
    obs, reward, terminated, truncated, info = env.step(3)  # opponent 2
    assert obs.tolist() == [1, -1, -1, 1, 0, 0, 0, 0, 0] and reward == 0 and not terminated
    assert "outcome" not in info and info["action_mask"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    obs, reward, terminated, truncated, info = env.step(6)
    assert (reward, terminated, truncated, info["outcome"]) == (1.0, True, False, 1)
    assert info["action_mask"].tolist() == [0] * 9
    env.reset()
    for move in (8, 7):
        env.step(move)
    obs, reward, terminated, _, info = env.step(5)
    assert obs.tolist() == [-1, -1, -1, 0, 0, 1, 0, 1, 1]
    assert (reward, terminated, info["outcome"], info["illegal_move"]) == (-1.0, True, -1, False)


def test_agent_as_o_sees_opponents_first_move() -> None:
    env = TicTacToeEnv(agent_plays="o", opponent=FirstFreeCell(), render_mode="ansi")
    obs, info = env.reset(seed=3)
    assert obs.tolist() == [-1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert info["action_mask"].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert env.board.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0] and env.agent_mark == -1
    obs, *_ = env.step(4)
    assert obs.tolist() == [-1, -1, 0, 0, 1, 0, 0, 0, 0]
    assert env.render().startswith(" X | X | 2")


def test_agent_plays_both_alternates_and_seed_restarts_as_x() -> None:
    env = TicTacToeEnv(agent_plays="both")
    marks = []
    for seed in (5, None, None, 5, None):
        env.reset(seed=seed)
        marks.append(env.agent_mark)
    assert marks == [1, -1, 1, 1, -1]


def test_perfect_play_draws_against_perfect_opponent() -> None:
    for agent_plays in ("x", "o"):
        env = TicTacToeEnv(agent_plays=agent_plays, opponent="perfect")
        obs, _ = env.reset(seed=1)
        terminated = False
        while not terminated:
            mask = optimal_moves(torch.as_tensor(obs).unsqueeze(0))[0]
            obs, reward, terminated, _, info = env.step(int(torch.nonzero(mask)[0]))
        assert reward == 0.0 and info["outcome"] == 0


def test_same_seed_same_episode() -> None:
    def play(seed: int) -> list[list[int]]:
        env = TicTacToeEnv(opponent={"random": 1, "perfect": 1})
        obs, info = env.reset(seed=seed)
        trace, done = [obs.tolist()], False
        while not done:
            obs, _, done, _, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
            trace.append(obs.tolist())
        return trace

    assert play(7) == play(7)
    assert any(play(7) != play(seed) for seed in range(8, 14))


def test_illegal_move_penalized_ends_episode_and_keeps_board() -> None:
    env = TicTacToeEnv(opponent=FirstFreeCell())
    env.reset(seed=0)
    obs_before, *_ = env.step(4)
    obs, reward, terminated, _, info = env.step(4)
    assert (reward, terminated, info["illegal_move"], info["outcome"]) == (-1.0, True, True, -1)
    assert obs.tolist() == obs_before.tolist()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(5)


def test_illegal_move_raise_names_move_and_legal_cells_and_keeps_state() -> None:
    env = TicTacToeEnv(opponent=FirstFreeCell(), illegal_move="raise")
    env.reset(seed=0)
    env.step(4)  # opponent takes 0
    board = env.board.copy()
    with pytest.raises(
        ValueError, match=r"illegal move 0: cell already taken \(legal: \[1, 2, 3, 5, 6, 7, 8\]\)"
    ):
        env.step(0)
    assert env.board.tolist() == board.tolist()
    obs, reward, terminated, _, info = env.step(8)
    assert not terminated and obs.tolist() == [-1, -1, 0, 0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize("illegal_move", ["penalize", "raise"])
@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (9, ValueError, "action 9 is out of range"),
        (-1, ValueError, "action -1 is out of range"),
        (2.0, TypeError, r"got 2\.0 \(float\)"),
        ("3", TypeError, r"got '3' \(str\)"),
        (True, TypeError, r"got True \(bool\)"),
        (np.bool_(False), TypeError, r"got False \(bool\)"),
        (np.float32(1.0), TypeError, "float"),
        (np.array([1, 2]), ValueError, r"array of shape \(2,\)"),
        (np.array([3]), ValueError, r"array of shape \(1,\)"),
        (torch.tensor(1.5), TypeError, "1.5"),
        (None, TypeError, "None"),
    ],
)
def test_malformed_actions_raise_and_leave_state_intact(
    illegal_move: str, action: Any, error: type, message: str
) -> None:
    env = TicTacToeEnv(opponent=FirstFreeCell(), illegal_move=illegal_move)
    env.reset(seed=0)
    env.step(4)
    board = env.board.copy()
    with pytest.raises(error, match=message):
        env.step(action)
    assert env.board.tolist() == board.tolist()
    obs, _, terminated, _, _ = env.step(8)
    assert not terminated and obs.tolist() == [-1, -1, 0, 0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize("action", [4, np.int64(4), np.array(4), torch.tensor(4), np.uint8(4)])
def test_integer_like_actions_are_accepted(action: Any) -> None:
    env = TicTacToeEnv(opponent=FirstFreeCell())
    env.reset(seed=0)
    obs, *_ = env.step(action)
    assert obs.tolist() == [-1, 0, 0, 0, 1, 0, 0, 0, 0]


def test_step_before_reset_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        TicTacToeEnv().step(0)
    with pytest.raises(ValueError, match=r"unknown agent_plays 'X' \(valid: 'x', 'o', 'both'\)"):
        TicTacToeEnv(agent_plays="X")
    with pytest.raises(ValueError, match="unknown illegal_move 'ignore'"):
        TicTacToeEnv(illegal_move="ignore")
    with pytest.raises(ValueError, match="unknown render_mode 'human'"):
        TicTacToeEnv(render_mode="human")
    with pytest.raises(ValueError, match="unsupported reset options"):
        TicTacToeEnv().reset(options={"board": [0] * 9})


def test_self_play_policy_moves_for_the_opponent() -> None:
    env = TicTacToeEnv(opponent="self_play")
    seen: list[torch.Tensor] = []

    def last_free(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.append(obs.clone())
        return 8 - mask.flip(1).to(torch.uint8).argmax(dim=1)

    assert env.set_self_play_policy(last_free)
    env.reset(seed=0)
    obs, *_ = env.step(0)
    assert obs.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, -1]
    assert seen[0].tolist() == [[-1, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert not TicTacToeEnv(opponent="random").set_self_play_policy(last_free)
