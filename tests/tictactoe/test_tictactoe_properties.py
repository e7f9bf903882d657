"""Property-based tests of the Tic-Tac-Toe envs against the plain-Python oracle (hypothesis).

Examples per run: 600 in all (single env 250, vector env 200, play_turn on reachable boards 150).

Random and adversarial action sequences (taken cells, out-of-range cells, malformed
actions, steps after the game ended, resets in between) drive the single env and the
vector env in every mode. Each transition is replayed on the oracle
(``tests/tictactoe/oracle.py``): the board after the agent's move, the opponent's reply
(any empty cell with the opponent's mark; a minimax-optimal one for ``"perfect"``),
reward, termination, outcome, illegal-move flag and legal-action mask must all match,
and no board is ever impossible (X moves first, counts differ by at most one, never
two winners, no move after a win). Illegal and malformed actions behave as the envs
document: ``illegal_move="penalize"`` ends the episode with -1 and keeps the board,
``"raise"`` raises ``ValueError`` and keeps the state; malformed or out-of-range actions
raise in both modes and keep the state; stepping a finished single env raises
``RuntimeError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlenv.tictactoe import TicTacToeEnv, TicTacToeVectorEnv
from rlenv.tictactoe.rules import game_over, play_turn, winners

from . import oracle

torch.set_num_threads(1)

AGENT_PLAYS = ["x", "o", "both"]
OPPONENTS = ["random", "perfect", {"random": 1.0, "perfect": 1.0}]
MODES = ["penalize", "raise"]


def fast(max_examples: int) -> Any:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- oracle helpers ---------------------------------------------------------------------


def count(board: oracle.Board, mark: int) -> int:
    return sum(1 for cell in board if cell == mark)


def line_owners(board: oracle.Board) -> set[int]:
    return {board[a] for a, b, c in oracle.ORACLE_LINES if board[a] != 0 and board[a] == board[b] == board[c]}


def assert_possible(board: oracle.Board) -> None:
    """A board that legal play from the empty board can reach."""
    assert set(board) <= {-1, 0, 1}, board
    xs, os_ = count(board, 1), count(board, -1)
    assert xs - os_ in (0, 1), f"X moves first and players alternate: {board}"
    owners = line_owners(board)
    assert len(owners) <= 1, f"two winners: {board}"
    if owners == {1}:
        assert xs == os_ + 1, f"X won, then O moved: {board}"
    if owners == {-1}:
        assert xs == os_, f"O won, then X moved: {board}"
    assert board in REACHABLE, board


REACHABLE = oracle.reachable_positions()


def reply_value(board: oracle.Board, cell: int, mark: int) -> int:
    """Minimax value for the player ``mark`` of playing ``cell`` on an absolute board."""
    own = tuple(m * mark for m in board)
    return -oracle.negamax(oracle.flip(oracle.play(own, cell, 1)))


def check_reply(before: oracle.Board, after: oracle.Board, mark: int, perfect: bool) -> int:
    """``after`` is ``before`` plus one ``mark`` on an empty cell (optimal if ``perfect``); the cell."""
    changed = [cell for cell in range(9) if before[cell] != after[cell]]
    assert len(changed) == 1, (before, after)
    cell = changed[0]
    assert before[cell] == 0 and after[cell] == mark, (before, after)
    if perfect:
        best = max(reply_value(before, c, mark) for c in oracle.legal(before))
        assert reply_value(before, cell, mark) == best, f"not an optimal reply: {before} -> {after}"
    return cell


def expected_turn(board: oracle.Board, action: int, mark: int) -> tuple[oracle.Board, bool, bool]:
    """(board after the agent's move, the move was illegal, the game ended before any reply)."""
    if board[action] != 0:
        return board, True, True
    after = oracle.play(board, action, mark)
    return after, False, oracle.is_over(after)


def agent_mark(agent_plays: str, episode: int) -> int:
    return {"x": 1, "o": -1}.get(agent_plays, 1 if episode % 2 == 0 else -1)


def check_opening(board: oracle.Board, mark: int, perfect: bool) -> None:
    if mark == 1:
        assert board == oracle.EMPTY_BOARD
    else:
        check_reply(oracle.EMPTY_BOARD, board, 1, perfect)


# --- strategies -------------------------------------------------------------------------

MALFORMED = [1.0, 4.5, True, False, "3", None, np.float64(2.0), np.array([1, 2]), np.bool_(True), [4]]


def action_strategy(board: oracle.Board) -> st.SearchStrategy[Any]:
    legal = oracle.legal(board) or [0]
    return st.one_of(
        st.sampled_from(legal),  # mostly legal moves, so games reach their end
        st.sampled_from(legal),
        st.sampled_from(legal),
        st.integers(0, 8),  # often a taken cell
        st.integers(-3, 12),  # sometimes out of range
        st.sampled_from(legal).map(np.int64),
        st.sampled_from(legal).map(lambda a: torch.tensor(a)),
        st.sampled_from(MALFORMED),
    )


def as_cell(action: Any) -> int | None:
    """The integer an action stands for, or None when the env must refuse it as malformed."""
    if isinstance(action, torch.Tensor):
        return int(action) if action.dim() == 0 and not action.is_floating_point() else None
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        return None
    return int(action)


# --- the single env -----------------------------------------------------------------------


@fast(250)
@given(
    agent_plays=st.sampled_from(AGENT_PLAYS),
    opponent=st.sampled_from(OPPONENTS),
    illegal_move=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_single_env_transitions_match_the_oracle(
    agent_plays: str, opponent: Any, illegal_move: str, seed: int, data: st.DataObject
) -> None:
    env = TicTacToeEnv(agent_plays=agent_plays, opponent=opponent, illegal_move=illegal_move)
    perfect = opponent == "perfect"
    with pytest.raises(RuntimeError):
        env.step(0)  # before the first reset
    episode, over = 0, False
    obs, info = env.reset(seed=seed)
    mark = agent_mark(agent_plays, episode)
    board = tuple(env.board.tolist())
    check_opening(board, mark, perfect)

    for _ in range(data.draw(st.integers(1, 24), label="steps")):
        assert env.agent_mark == mark
        assert obs.tolist() == [m * mark for m in board]
        expected_mask = [0] * 9 if over else [int(m == 0) for m in board]
        assert info["action_mask"].tolist() == expected_mask
        assert_possible(board)

        if over and data.draw(st.booleans(), label="reset"):
            reseed = data.draw(st.none() | st.integers(0, 2**32 - 1), label="seed")
            episode = 0 if reseed is not None else episode + 1
            obs, info = env.reset(seed=reseed)
            mark, over = agent_mark(agent_plays, episode), False
            board = tuple(env.board.tolist())
            check_opening(board, mark, perfect)
            continue

        action = data.draw(action_strategy(board), label="action")
        cell = as_cell(action)
        if over:
            with pytest.raises(RuntimeError):
                env.step(action)
        elif cell is None or not 0 <= cell < 9:
            with pytest.raises((TypeError, ValueError)):
                env.step(action)
        elif board[cell] != 0 and illegal_move == "raise":
            with pytest.raises(ValueError, match=f"illegal move {cell}"):
                env.step(action)
        else:
            after_agent, illegal, ended = expected_turn(board, cell, mark)
            obs, reward, terminated, truncated, info = env.step(action)
            new_board = tuple(env.board.tolist())
            if ended:
                assert new_board == after_agent
            else:
                check_reply(after_agent, new_board, -mark, perfect)
            over = illegal or oracle.is_over(new_board)
            outcome = -1 if illegal else oracle.winner(new_board) * mark
            assert (terminated, truncated, info["illegal_move"]) == (over, False, illegal)
            assert reward == (float(outcome) if over else 0.0)
            assert info.get("outcome") == (outcome if over else None)
            board = new_board
            continue
        assert tuple(env.board.tolist()) == board  # a refused step changes nothing
        assert env.agent_mark == mark


# --- the vector env -----------------------------------------------------------------------


def vector_actions(boards: list[oracle.Board]) -> st.SearchStrategy[tuple[Any, list[int] | None]]:
    """(actions, their cells) or (malformed actions, None)."""
    cell = [st.one_of(st.sampled_from(oracle.legal(b) or [0]), st.integers(-2, 11)) for b in boards]
    per_row = st.tuples(*cell).map(list)
    n = len(boards)
    return st.one_of(
        per_row.map(lambda row: (torch.tensor(row, dtype=torch.int64), row)),
        per_row.map(lambda row: (torch.tensor(row, dtype=torch.int64), row)),
        per_row.map(lambda row: (np.array(row, dtype=np.int32), row)),
        per_row.map(lambda row: (torch.tensor(row, dtype=torch.float32), None)),
        st.just((torch.zeros(n + 1, dtype=torch.int64), None)),
        st.just((torch.ones(n, dtype=torch.bool), None)),
    )


@fast(200)
@given(
    num_envs=st.integers(1, 3),
    agent_plays=st.sampled_from(AGENT_PLAYS),
    opponent=st.sampled_from(OPPONENTS),
    illegal_move=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_vector_env_transitions_match_the_oracle(
    num_envs: int, agent_plays: str, opponent: Any, illegal_move: str, seed: int, data: st.DataObject
) -> None:
    envs = TicTacToeVectorEnv(num_envs, agent_plays=agent_plays, opponent=opponent, illegal_move=illegal_move)
    perfect = opponent == "perfect"
    obs, info = envs.reset(seed=seed)
    episodes = [0] * num_envs
    marks = [agent_mark(agent_plays, 0)] * num_envs
    boards = [tuple(row) for row in envs.boards.tolist()]
    for board, mark in zip(boards, marks, strict=True):
        check_opening(board, mark, perfect)

    for _ in range(data.draw(st.integers(1, 20), label="steps")):
        assert envs.agent_marks.tolist() == marks
        assert obs.tolist() == [[m * mark for m in b] for b, mark in zip(boards, marks, strict=True)]
        assert info["action_mask"].tolist() == [[m == 0 for m in b] for b in boards]
        for board in boards:
            assert_possible(board)

        actions, values = data.draw(vector_actions(boards), label="actions")
        in_range = values is not None and all(0 <= a < 9 for a in values)
        taken = in_range and any(b[a] != 0 for b, a in zip(boards, values, strict=True))
        if not in_range or (taken and illegal_move == "raise"):
            with pytest.raises((TypeError, ValueError)):
                envs.step(actions)
            assert [tuple(row) for row in envs.boards.tolist()] == boards  # nothing changed
            assert envs.agent_marks.tolist() == marks
            continue

        obs, rewards, terminated, truncated, info = envs.step(actions)
        final_boards = [
            tuple(int(m * mark) for m in row)
            for row, mark in zip(info["final_obs"].tolist(), marks, strict=True)
        ]
        new_boards = [tuple(row) for row in envs.boards.tolist()]
        for k in range(num_envs):
            assert values is not None
            after_agent, illegal, ended = expected_turn(boards[k], values[k], marks[k])
            if ended:
                assert final_boards[k] == after_agent
            else:
                check_reply(after_agent, final_boards[k], -marks[k], perfect)
            assert_possible(final_boards[k])
            over = illegal or oracle.is_over(final_boards[k])
            outcome = -1 if illegal else oracle.winner(final_boards[k]) * marks[k]
            assert bool(terminated[k]) == over and not bool(truncated[k])
            assert bool(info["illegal_move"][k]) == illegal
            assert int(info["outcome"][k]) == (outcome if over else 0)
            assert float(rewards[k]) == (float(outcome) if over else 0.0)
            if over:  # reset in the same step: the next episode's opening
                assert info["final_action_mask"][k].tolist() == [False] * 9
                episodes[k] += 1
                marks[k] = agent_mark(agent_plays, episodes[k])
                check_opening(new_boards[k], marks[k], perfect)
            else:
                assert info["final_action_mask"][k].tolist() == [m == 0 for m in final_boards[k]]
                assert new_boards[k] == final_boards[k]
        boards = new_boards


# --- the rules on reachable boards ---------------------------------------------------------------


def first_free(boards: torch.Tensor, legal: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return legal.to(torch.uint8).argmax(dim=1)


@fast(150)
@given(
    st.lists(st.sampled_from(sorted(b for b in REACHABLE if not oracle.is_over(b))), min_size=1, max_size=8),
    st.data(),
)
def test_play_turn_matches_the_oracle_on_reachable_boards(
    boards: list[oracle.Board], data: st.DataObject
) -> None:
    actions = [data.draw(st.integers(0, 8), label="action") for _ in boards]
    marks = [oracle.to_move(b) for b in boards]
    tensor = torch.tensor(boards, dtype=torch.int8)
    result = play_turn(tensor, torch.tensor(marks, dtype=torch.int8), torch.tensor(actions), first_free)
    assert winners(tensor).tolist() == [oracle.winner(b) for b in boards]
    assert game_over(tensor).tolist() == [False] * len(boards)
    for k, (board, action, mark) in enumerate(zip(boards, actions, marks, strict=True)):
        after, illegal, ended = expected_turn(board, action, mark)
        if not ended:
            after = oracle.play(after, oracle.legal(after)[0], -mark)
        assert tuple(result.boards[k].tolist()) == after
        assert bool(result.illegal[k]) == illegal
        assert bool(result.terminated[k]) == (illegal or oracle.is_over(after))
        assert int(result.outcome[k]) == (-1 if illegal else oracle.winner(after) * mark)
        assert_possible(after)
