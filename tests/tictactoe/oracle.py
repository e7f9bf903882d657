"""Plain-Python Tic-Tac-Toe, written apart from ``rlenv.tictactoe.rules``, used as the test oracle.

Boards are 9-tuples of ints (+1, -1, 0), row-major.
"""

from __future__ import annotations

from functools import cache
from itertools import product

Board = tuple[int, ...]

ORACLE_LINES = (
    [tuple(3 * row + col for col in range(3)) for row in range(3)]
    + [tuple(3 * row + col for row in range(3)) for col in range(3)]
    + [(0, 4, 8), (2, 4, 6)]
)
EMPTY_BOARD: Board = (0,) * 9


def winner(board: Board) -> int:
    for a, b, c in ORACLE_LINES:
        if board[a] != 0 and board[a] == board[b] == board[c]:
            return board[a]
    return 0


def legal(board: Board) -> list[int]:
    return [cell for cell, mark in enumerate(board) if mark == 0]


def is_over(board: Board) -> bool:
    return winner(board) != 0 or not legal(board)


def to_move(board: Board) -> int:
    """Mark of the player to move on an absolute board (X = +1 moves first)."""
    return 1 if sum(1 for mark in board if mark != 0) % 2 == 0 else -1


def play(board: Board, cell: int, mark: int) -> Board:
    assert board[cell] == 0, (board, cell)
    return board[:cell] + (mark,) + board[cell + 1 :]


def flip(board: Board) -> Board:
    return tuple(-mark for mark in board)


def index(board: Board) -> int:
    return sum((0, 1, 2)[mark] * 3**cell for cell, mark in enumerate(board))


@cache
def negamax(board: Board) -> int:
    """Value for the player to move on a perspective board (own marks +1)."""
    if winner(board) != 0:
        return winner(board)
    if not legal(board):
        return 0
    return max(-negamax(flip(play(board, cell, 1))) for cell in legal(board))


def reachable_positions() -> set[Board]:
    """Every absolute board reachable from the empty board by legal play (5478 of them)."""
    seen: set[Board] = set()
    stack = [EMPTY_BOARD]
    while stack:
        board = stack.pop()
        if board in seen:
            continue
        seen.add(board)
        if not is_over(board):
            stack.extend(play(board, cell, to_move(board)) for cell in legal(board))
    return seen


@cache
def random_vs_random(board: Board) -> tuple[float, float, float]:
    """Exact (P(X wins), P(O wins), P(draw)) when both players move uniformly at random."""
    if winner(board) == 1:
        return (1.0, 0.0, 0.0)
    if winner(board) == -1:
        return (0.0, 1.0, 0.0)
    cells = legal(board)
    if not cells:
        return (0.0, 0.0, 1.0)
    children = [random_vs_random(play(board, cell, to_move(board))) for cell in cells]
    return tuple(sum(child[k] for child in children) / len(cells) for k in range(3))  # type: ignore[return-value]


@cache
def safe_best_vs_random(board: Board, agent: int) -> tuple[float, float]:
    """Exact (P(win), P(loss)) for the agent with mark ``agent`` that never risks a loss
    (keeps the minimax value >= 0) and maximises its winning chance against uniform random play.
    """
    w = winner(board)
    if w != 0:
        return (1.0, 0.0) if w == agent else (0.0, 1.0)
    cells = legal(board)
    if not cells:
        return (0.0, 0.0)
    mover = to_move(board)
    if mover != agent:
        outcomes = [safe_best_vs_random(play(board, cell, mover), agent) for cell in cells]
        return tuple(sum(o[k] for o in outcomes) / len(cells) for k in range(2))  # type: ignore[return-value]
    own_view = tuple(mark * agent for mark in board)
    safe = [cell for cell in cells if -negamax(flip(play(own_view, cell, 1))) >= 0] or cells
    return max((safe_best_vs_random(play(board, cell, mover), agent) for cell in safe), key=lambda o: o[0])


def all_absolute_boards() -> list[Board]:
    return [tuple(board) for board in product((0, 1, -1), repeat=9)]
