"""The batched rules agree with the plain-Python oracle on every board and on random games."""

from __future__ import annotations

import numpy as np
import torch

from rlenv.tictactoe import rules

from . import oracle

torch.set_num_threads(1)


def _tensor(boards: list[oracle.Board]) -> torch.Tensor:
    return torch.tensor(boards, dtype=torch.int8)


def test_winners_legal_and_index_match_oracle_on_every_board() -> None:
    """Boards where both players own a line cannot occur in play and are left out of the winner check."""
    boards = oracle.all_absolute_boards()
    batch = _tensor(boards)
    clean = [b for b in boards if not _both_win(b)]
    assert torch.equal(
        rules.winners(_tensor(clean)), torch.tensor([oracle.winner(b) for b in clean], dtype=torch.int8)
    )
    expected_legal = torch.tensor([[c in oracle.legal(b) for c in range(9)] for b in boards])
    assert torch.equal(rules.legal_moves(batch), expected_legal)
    assert torch.equal(rules.board_index(batch), torch.tensor([oracle.index(b) for b in boards]))
    assert torch.equal(rules.all_boards()[rules.board_index(batch)], batch)


def _both_win(board: oracle.Board) -> bool:
    owners = {
        board[a] for a, b, c in oracle.ORACLE_LINES if board[a] != 0 and board[a] == board[b] == board[c]
    }
    return len(owners) == 2


def test_game_over_and_player_to_move_on_reachable_positions() -> None:
    positions = sorted(oracle.reachable_positions())
    batch = _tensor(positions)
    assert len(positions) == 5478
    assert torch.equal(rules.game_over(batch), torch.tensor([oracle.is_over(b) for b in positions]))
    assert torch.equal(
        rules.player_to_move(batch), torch.tensor([oracle.to_move(b) for b in positions], dtype=torch.int8)
    )
    assert torch.equal(rules.is_full(batch), torch.tensor([not oracle.legal(b) for b in positions]))


def test_random_games_step_by_step_match_oracle() -> None:
    rng = np.random.default_rng(0)
    num_games = 400
    boards = rules.empty_boards(num_games)
    oracle_boards = [oracle.EMPTY_BOARD] * num_games
    over = [False] * num_games
    for _ in range(9):
        marks = rules.player_to_move(boards)
        moves = []
        for game, board in enumerate(oracle_boards):
            cells = oracle.legal(board)
            moves.append(int(rng.choice(cells)) if cells and not over[game] else 0)
        before = boards.clone()
        stepped = rules.apply_moves(boards, torch.tensor(moves), marks)
        assert torch.equal(boards, before), "apply_moves must not modify its input"
        live = torch.tensor([not o for o in over])
        boards = torch.where(live.unsqueeze(1), stepped, boards)
        for game in range(num_games):
            if not over[game]:
                board = oracle_boards[game]
                oracle_boards[game] = oracle.play(board, moves[game], oracle.to_move(board))
                over[game] = oracle.is_over(oracle_boards[game])
        assert torch.equal(boards, _tensor(oracle_boards))
        assert torch.equal(rules.game_over(boards), torch.tensor(over))
        assert torch.equal(
            rules.winners(boards), torch.tensor([oracle.winner(b) for b in oracle_boards], dtype=torch.int8)
        )
    assert all(over)


def test_perspective_flips_marks_and_is_an_involution() -> None:
    boards = _tensor([(1, -1, 0, 0, 1, 0, -1, 0, 0), (0,) * 9])
    marks = torch.tensor([-1, 1], dtype=torch.int8)
    seen = rules.perspective(boards, marks)
    assert seen[0].tolist() == [-1, 1, 0, 0, -1, 0, 1, 0, 0]
    assert torch.equal(rules.perspective(seen, marks), boards)
    assert torch.equal(rules.perspective(boards, -1), -boards)


def test_play_turn_reply_and_illegal_move() -> None:
    def first_free(boards: torch.Tensor, legal: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return legal.to(torch.uint8).argmax(dim=1)

    boards = _tensor(
        [(1, -1, 0, 0, 0, 0, 0, 0, 0), (1, -1, 0, 0, 0, 0, 0, 0, 0), (1, 1, 0, -1, -1, 0, 0, 0, 0)]
    )
    marks = torch.tensor([1, 1, 1], dtype=torch.int8)
    result = rules.play_turn(boards, marks, torch.tensor([4, 1, 2]), first_free)
    assert result.boards[0].tolist() == [1, -1, -1, 0, 1, 0, 0, 0, 0]
    assert torch.equal(result.boards[1], boards[1])
    assert result.illegal.tolist() == [False, True, False]
    assert result.terminated.tolist() == [False, True, True]
    assert result.outcome.tolist() == [0, -1, 1]
    assert result.boards[2].tolist() == [1, 1, 1, -1, -1, 0, 0, 0, 0]


def test_start_boards_opponent_moves_first_only_for_o() -> None:
    def centre(boards: torch.Tensor, legal: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return torch.full((boards.shape[0],), 4)

    boards = rules.start_boards(torch.tensor([1, -1], dtype=torch.int8), centre)
    assert boards[0].tolist() == [0] * 9
    assert boards[1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_render_board_shows_marks_and_free_cells() -> None:
    text = rules.render_board(torch.tensor([1, -1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.int8))
    assert text.splitlines()[0] == " X | O | 2"
