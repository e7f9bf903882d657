"""Tic-Tac-Toe as lookup tables over the ``3**9`` board codes, for the vector env's fast path.

A board's code is its :func:`~rlenv.tictactoe.rules.board_index` (cell ``i`` is base-3 digit
``i``: 0 empty, 1 X, 2 O), so a move is an addition, ``code + digit * 3**cell``, and
everything else one step needs is a gather from a table built once per device from the
rules and the minimax solution: the board seen by either player, the legal cells, the
winner, whether the game is over, and the perfect player's moves. A set of cells is a 9-bit
mask; a uniform choice among its cells is one more gather (:meth:`Tables.pick`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from rlenv.tictactoe.opponents import optimal_moves
from rlenv.tictactoe.rules import (
    NUM_BOARDS,
    NUM_CELLS,
    all_boards,
    is_full,
    legal_moves,
    player_to_move,
    winners,
)

NUM_MASKS = 2**NUM_CELLS
FULL_CODE = (NUM_BOARDS - 1) // 2
"""The code of a board of nine X marks: a full board, whose legal row is all False."""


@dataclass(frozen=True)
class Tables:
    """Per-code tables; N = ``3**9`` codes. Shapes below; all on one device.

    Attributes:
        views: (2N, 9) int8, row ``code`` the absolute board (as X sees it), row ``N + code``
            the board as O sees it (its own marks +1).
        legal: (N, 9) bool, the empty cells.
        legal_bits: (N,) int64, the same as a 9-bit mask (bit ``i``: cell ``i``).
        perfect_bits: (N,) int64, the minimax-optimal moves of the player to move (the legal
            cells where the game is over).
        winner: (N,) int8, +1 X, -1 O, 0 nobody.
        outcomes: (2N,) int8, the winner seen by X (row ``code``) and by O (``N + code``).
        over: (N,) bool, a line is complete or the board is full.
        powers: (9,) int64, ``3**cell``.
    """

    views: Tensor
    legal: Tensor
    legal_bits: Tensor
    perfect_bits: Tensor
    winner: Tensor
    outcomes: Tensor
    over: Tensor
    powers: Tensor
    nth: Tensor  # (512 * 10,) int64: [mask * 10 + r] is the r-th set cell of mask (see _nth)
    nth_power: Tensor  # (512 * 10,) int64: 3 ** that cell
    popcount: Tensor  # (512,) float32

    def _slot(self, bits: Tensor, uniform: Tensor, first: Tensor | bool) -> Tensor:
        rank = (uniform * self.popcount.index_select(0, bits)).long()
        if first is not False:
            rank = torch.where(torch.as_tensor(first, device=rank.device), 0, rank)
        return bits * _WIDTH + rank

    def pick(self, bits: Tensor, uniform: Tensor, first: Tensor | bool = False) -> Tensor:
        """A cell of each mask, uniform given ``uniform`` in [0, 1) (the lowest one where ``first``).

        Shapes: bits (B,) int64, uniform (B,) float -> (B,) int64 (0 for an empty mask).
        """
        return self.nth.index_select(0, self._slot(bits, uniform, first))

    def pick_power(self, bits: Tensor, uniform: Tensor, first: Tensor | bool = False) -> Tensor:
        """``3 ** cell`` of :meth:`pick`'s cell: what a mark adds to a code, over its digit."""
        return self.nth_power.index_select(0, self._slot(bits, uniform, first))


def _bits(cells: Tensor) -> Tensor:
    return (cells.long() << torch.arange(NUM_CELLS, device=cells.device)).sum(dim=1)


@cache
def tables(device: torch.device) -> Tables:
    """The tables on ``device`` (built on the CPU once, then copied)."""
    if device.type != "cpu":
        host = tables(torch.device("cpu"))
        return Tables(**{name: getattr(host, name).to(device) for name in host.__dataclass_fields__})
    boards = all_boards()
    legal = legal_moves(boards)
    winner = winners(boards)
    over = (winner != 0) | is_full(boards)
    mover = player_to_move(boards)
    best = optimal_moves(boards * mover.unsqueeze(1)) & legal
    best = torch.where(best.any(dim=1, keepdim=True), best, legal)
    members = (torch.arange(NUM_MASKS).unsqueeze(1) >> torch.arange(NUM_CELLS)) & 1  # (512, 9)
    nth = _nth(members)
    assert boards.shape[0] == NUM_BOARDS
    powers = 3 ** torch.arange(NUM_CELLS)
    return Tables(
        views=torch.cat([boards, -boards]),
        legal=legal,
        legal_bits=_bits(legal),
        perfect_bits=_bits(best),
        winner=winner,
        outcomes=torch.cat([winner, -winner]),
        over=over,
        powers=powers,
        nth=nth.flatten(),
        nth_power=powers[nth.flatten()],
        popcount=members.sum(dim=1).float(),
    )


_WIDTH = NUM_CELLS + 1


def _nth(members: Tensor) -> Tensor:
    """(512 * 10,): row ``mask``, column ``r``: the r-th set cell of ``mask`` for ``r`` below its
    count, its last set cell beyond (so a rank rounded up to the count still lands on a set
    cell, without a clamp), 0 for the empty mask."""
    nth = torch.zeros(NUM_MASKS, _WIDTH, dtype=torch.int64)
    for mask in range(1, NUM_MASKS):
        cells = torch.nonzero(members[mask]).flatten()
        nth[mask] = cells[-1]
        nth[mask, : cells.numel()] = cells
    return nth.flatten()


def random_cells(mask: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random True cell of each row of ``mask`` (0 on rows without one).

    The same distribution as :func:`rlenv.tictactoe.rules.random_legal_moves`, by lookup: one
    random number per row instead of nine. Shapes: mask (B, 9) bool -> (B,) int64.
    """
    table = tables(mask.device)
    bits = (mask.float() @ _powers_of_two(mask.device)).long()
    return table.pick(bits, torch.rand(mask.shape[0], generator=generator, device=mask.device))


@cache
def _powers_of_two(device: torch.device) -> Tensor:
    return (2.0 ** torch.arange(NUM_CELLS)).to(device)
