"""Tic-Tac-Toe rules as batched tensor functions, shared by the single and the vector env.

Boards are ``(B, 9)`` int8 tensors, cells in row-major order. In *absolute* boards
``+1`` is X (who moves first), ``-1`` is O and ``0`` is empty. A *perspective* board is
an absolute board multiplied by the mark of one player, so that player's marks read
``+1``. Every function works on any device and has no Python loop over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

X = 1
O = -1  # noqa: E741
EMPTY = 0
NUM_CELLS = 9
NUM_BOARDS = 3**NUM_CELLS

LINES = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]])
POWERS_OF_3 = 3 ** torch.arange(NUM_CELLS)

Reply = Callable[[Tensor, Tensor, Tensor], Tensor]
"""Opponent hook ``reply(boards, legal, rows) -> moves``.

Shapes: boards (B, 9) int8 from the replying player's perspective; legal (B, 9) bool;
rows (B,) bool, the boards that need a move; returns (B,) int64 cells in ``0..8``
(any in-range value for rows not asked).
"""


def board_symmetries() -> list[list[int]]:
    """The 8 symmetries of the board (rotations and reflections) as cell permutations.

    ``perm[i]`` is the cell whose mark the transformed board holds at cell ``i`` (row-major).
    """
    grid = torch.arange(NUM_CELLS).view(3, 3)
    rotations = [torch.rot90(grid, k) for k in range(4)]
    return [g.flatten().tolist() for r in rotations for g in (r, r.T)]


@cache
def _lines(device: torch.device) -> Tensor:
    return LINES.to(device)


@cache
def _powers(device: torch.device) -> Tensor:
    return POWERS_OF_3.to(device)


def empty_boards(num_boards: int, device: torch.device | str = "cpu") -> Tensor:
    """Shapes: returns (num_boards, 9) int8 zeros."""
    return torch.zeros(num_boards, NUM_CELLS, dtype=torch.int8, device=device)


def legal_moves(boards: Tensor) -> Tensor:
    """Empty cells. Game-over boards still report their empty cells.

    Shapes: boards (B, 9) -> (B, 9) bool.
    """
    return boards == EMPTY


def player_to_move(boards: Tensor) -> Tensor:
    """Mark of the player whose turn it is on absolute boards (X moves first).

    Shapes: boards (B, 9) -> (B,) int8 in {+1, -1}.
    """
    filled = (boards != EMPTY).sum(dim=1)
    return torch.where(filled % 2 == 0, X, O).to(torch.int8)


def apply_moves(boards: Tensor, moves: Tensor, marks: Tensor | int) -> Tensor:
    """New boards with ``marks`` written at cells ``moves``; the input is left untouched.

    The caller checks legality; this only writes.

    Shapes: boards (B, 9) int8, moves (B,) int64 in 0..8, marks (B,) or scalar -> (B, 9) int8.
    """
    marks_column = torch.as_tensor(marks, dtype=boards.dtype, device=boards.device)
    marks_column = marks_column.expand(boards.shape[0]).unsqueeze(1)
    return boards.scatter(1, moves.unsqueeze(1), marks_column)


def winners(boards: Tensor) -> Tensor:
    """Mark of the player that owns a full line, ``0`` where nobody does.

    Shapes: boards (B, 9) -> (B,) int8.
    """
    line_sums = boards[:, _lines(boards.device)].sum(dim=2)
    plus = (line_sums == 3).any(dim=1)
    minus = (line_sums == -3).any(dim=1)
    return plus.to(torch.int8) - minus.to(torch.int8)


def is_full(boards: Tensor) -> Tensor:
    """Shapes: boards (B, 9) -> (B,) bool, True where no cell is empty."""
    return (boards != EMPTY).all(dim=1)


def game_over(boards: Tensor) -> Tensor:
    """Shapes: boards (B, 9) -> (B,) bool, True where a line is complete or the board is full."""
    return (winners(boards) != 0) | is_full(boards)


def perspective(boards: Tensor, marks: Tensor | int) -> Tensor:
    """Boards seen by the player with ``marks``: own marks ``+1``, the other's ``-1``.

    Applying it twice with the same marks gives back the input.

    Shapes: boards (B, 9) int8, marks (B,) int8 or scalar -> (B, 9) int8.
    """
    if isinstance(marks, int):
        return boards * marks
    return boards * marks.to(boards.dtype).unsqueeze(1)


def board_index(boards: Tensor) -> Tensor:
    """Base-3 index of each board: digit ``i`` is cell ``i`` with 0 empty, 1 for +1, 2 for -1.

    Shapes: boards (B, 9) -> (B,) int64 in ``0 .. 3**9 - 1``.
    """
    digits = boards.long().remainder(3)
    return (digits * _powers(boards.device)).sum(dim=1)


def boards_from_index(indices: Tensor) -> Tensor:
    """Inverse of :func:`board_index`.

    Shapes: indices (B,) int64 -> (B, 9) int8.
    """
    digits = (indices.unsqueeze(1) // _powers(indices.device)).remainder(3)
    return torch.where(digits == 2, -1, digits).to(torch.int8)


def all_boards(device: torch.device | str = "cpu") -> Tensor:
    """Every assignment of {+1, -1, 0} to the nine cells, row ``i`` has index ``i``.

    Shapes: returns (3**9, 9) int8.
    """
    return boards_from_index(torch.arange(NUM_BOARDS, device=device))


@dataclass
class TurnResult:
    """Outcome of one env step on a batch of boards.

    Shapes: boards (B, 9) int8 absolute; outcome (B,) int8 from the agent's side
    (+1 win, 0 draw or not over, -1 loss or illegal move); terminated, illegal (B,) bool.
    """

    boards: Tensor
    outcome: Tensor
    terminated: Tensor
    illegal: Tensor


def start_boards(agent_marks: Tensor, reply: Reply, boards: Tensor | None = None) -> Tensor:
    """Opening boards: ``boards`` (empty by default), plus the opponent's move where it is to move.

    ``boards`` may hold a few plies already played (an unfinished position); the opponent
    replies on the rows where the player to move is not the agent.

    Shapes: agent_marks (B,) int8, boards (B, 9) int8 absolute -> (B, 9) int8 absolute.
    """
    if boards is None:
        boards = empty_boards(agent_marks.shape[0], agent_marks.device)
    opponent_first = player_to_move(boards) != agent_marks
    opponent_marks = -agent_marks
    moves = reply(perspective(boards, opponent_marks), legal_moves(boards), opponent_first)
    return torch.where(opponent_first.unsqueeze(1), apply_moves(boards, moves, opponent_marks), boards)


def random_legal_moves(legal: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random True cell per row (0 on rows without one).

    Shapes: legal (B, 9) bool -> (B,) int64.
    """
    scores = torch.rand(legal.shape, generator=generator, device=legal.device)
    return scores.masked_fill(~legal, -1.0).argmax(dim=1)


MAX_RANDOM_PLIES = 3
"""Most random opening plies: with the opponent's reply, no line can be complete yet."""


def random_openings(num_plies: Tensor, generator: torch.Generator) -> Tensor:
    """Boards after ``num_plies[i]`` uniformly random moves from the empty board (X first).

    Shapes: num_plies (B,) int64 in ``0 .. MAX_RANDOM_PLIES`` -> (B, 9) int8 absolute.
    """
    boards = empty_boards(num_plies.shape[0], num_plies.device)
    for ply in range(int(num_plies.max()) if num_plies.numel() else 0):
        moves = random_legal_moves(legal_moves(boards), generator)
        playing = (num_plies > ply).unsqueeze(1)
        boards = torch.where(playing, apply_moves(boards, moves, X if ply % 2 == 0 else O), boards)
    return boards


def play_turn(boards: Tensor, agent_marks: Tensor, actions: Tensor, reply: Reply) -> TurnResult:
    """The agent's move, then the opponent's reply on the boards where the game goes on.

    An illegal action (occupied cell) leaves its board unchanged and ends that episode
    with outcome -1. ``actions`` must already lie in ``0..8``; boards must not be over.

    Shapes: boards (B, 9) int8 absolute, agent_marks (B,) int8, actions (B,) int64.
    """
    illegal = ~legal_moves(boards).gather(1, actions.unsqueeze(1)).squeeze(1)
    after_agent = apply_moves(boards, actions, agent_marks)
    boards = torch.where(illegal.unsqueeze(1), boards, after_agent)
    replying = ~illegal & ~game_over(boards)
    opponent_marks = -agent_marks
    moves = reply(perspective(boards, opponent_marks), legal_moves(boards), replying)
    after_reply = apply_moves(boards, moves, opponent_marks)
    boards = torch.where(replying.unsqueeze(1), after_reply, boards)
    winner = winners(boards)
    terminated = illegal | (winner != 0) | is_full(boards)
    outcome = torch.where(illegal, -1, winner * agent_marks).to(torch.int8)
    return TurnResult(boards=boards, outcome=outcome, terminated=terminated, illegal=illegal)


def render_board(board: Tensor) -> str:
    """Text picture of one absolute board; empty cells show their action index.

    Shapes: board (9,).
    """
    symbols = {X: "X", O: "O"}
    cells = [symbols.get(int(mark), str(cell)) for cell, mark in enumerate(board.tolist())]
    rows = [" " + " | ".join(cells[row * 3 : row * 3 + 3]) for row in range(3)]
    return "\n---+---+---\n".join(rows) + "\n"
