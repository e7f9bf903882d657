"""Replay augmentation by symmetries of the state: each sampled transition seen under a random one.

A board game whose observation holds one value per cell and whose action is a cell (Tic-Tac-Toe,
Gomoku, Hex-like grids) looks the same after a rotation or a reflection of the board: the
transformed transition is as real as the one played. :class:`CellSymmetries` applies, to each
transition of a replay minibatch, one permutation of the cells drawn uniformly from a given
group (for Tic-Tac-Toe the 8 of :func:`rlenv.tictactoe.rules.board_symmetries`), to the
observation, the next observation, both legal-action masks and the action together. DQN takes
it as ``agent.augment``: each position's value is then learnt from the games of all its
symmetric positions, and the symmetric moves of a position get the same value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from agents.core.replay import ReplayBatch


class CellSymmetries:
    """A random cell permutation from ``permutations`` per transition (see the module docstring).

    ``permutations[g][i]`` is the cell whose value the transformed board holds at cell ``i``.
    Needs a flat ``Box`` observation of C cells and ``Discrete(C)`` actions (one per cell).
    """

    def __init__(self, permutations: Sequence[Sequence[int]]) -> None:
        perms = torch.as_tensor([list(p) for p in permutations], dtype=torch.int64)
        if perms.dim() != 2 or not len(perms):
            raise ValueError(
                f"permutations must be a non-empty list of cell permutations, got {permutations!r}"
            )
        cells = perms.shape[1]
        for perm in perms.tolist():
            if sorted(perm) != list(range(cells)):
                raise ValueError(f"{perm} is not a permutation of the {cells} cells 0..{cells - 1}")
        self.permutations = perms
        self.inverse = torch.argsort(perms, dim=1)

    @property
    def num_cells(self) -> int:
        return int(self.permutations.shape[1])

    def check_spaces(self, observation_space: Any, action_space: Any) -> None:
        """Refuse spaces these permutations do not act on, before training starts."""
        shape = getattr(observation_space, "shape", None)
        if shape != (self.num_cells,) or getattr(action_space, "n", None) != self.num_cells:
            raise TypeError(
                f"CellSymmetries over {self.num_cells} cells needs a ({self.num_cells},) observation and "
                f"Discrete({self.num_cells}) actions, got {observation_space} and {action_space}"
            )

    def __call__(self, batch: ReplayBatch, generator: torch.Generator | None = None) -> ReplayBatch:
        device = batch.actions.device
        draw_device = generator.device if generator is not None else device
        choice = torch.randint(len(self.permutations), (len(batch),), generator=generator, device=draw_device)
        perm = self.permutations.to(device)[choice.to(device)]  # (N, C)
        inverse = self.inverse.to(device)[choice.to(device)]

        def cells(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.gather(1, perm)

        return replace(
            batch,
            obs=cells(batch.obs),
            next_obs=cells(batch.next_obs),
            action_masks=cells(batch.action_masks),
            next_action_masks=cells(batch.next_action_masks),
            actions=inverse.gather(1, batch.actions.unsqueeze(1)).squeeze(1),
        )
