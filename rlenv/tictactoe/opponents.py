"""Opponents for the Tic-Tac-Toe envs and the exact minimax solution of the game.

An opponent answers ``act(boards, legal, generator) -> moves`` for a batch of boards seen
from its own side (``+1`` its marks, ``-1`` the agent's). The minimax solution covers all
``3**9`` perspective boards and is computed once per device, so perfect play is a lookup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor

from rlenv.tictactoe.rules import (
    NUM_CELLS,
    all_boards,
    apply_moves,
    board_index,
    is_full,
    legal_moves,
    random_legal_moves,
    winners,
)

ILLEGAL_VALUE = -2
"""Entry of :func:`move_values` for an occupied cell (below every game value)."""

Policy = Callable[[Tensor, Tensor], Any]
"""``policy(obs, mask) -> actions``. Shapes: obs (B, 9) int8, mask (B, 9) bool -> (B,)."""


class Opponent(Protocol):
    def act(self, boards: Tensor, legal: Tensor, generator: torch.Generator) -> Tensor:
        """Shapes: boards (B, 9) int8 own perspective, legal (B, 9) bool -> (B,) int64."""
        ...


@cache
def _solution(device: torch.device) -> tuple[Tensor, Tensor]:
    """(values (3**9,) int8, move values (3**9, 9) int8) for the player to move (+1)."""
    if device.type != "cpu":
        values, moves = _solution(torch.device("cpu"))
        return values.to(device), moves.to(device)
    boards = all_boards()
    empties = legal_moves(boards).sum(dim=1)
    terminal = (winners(boards) != 0) | is_full(boards)
    values = torch.where(terminal, winners(boards), 0).to(torch.int8)
    move_values = torch.full((boards.shape[0], NUM_CELLS), ILLEGAL_VALUE, dtype=torch.int8)
    cells = torch.arange(NUM_CELLS)
    for empty_count in range(1, NUM_CELLS + 1):
        rows = torch.nonzero(~terminal & (empties == empty_count)).squeeze(1)
        parents = boards[rows]
        children = apply_moves(parents.repeat_interleave(NUM_CELLS, dim=0), cells.repeat(rows.numel()), 1)
        child_values = values[board_index(-children)].view(-1, NUM_CELLS)
        row_moves = torch.where(legal_moves(parents), -child_values, ILLEGAL_VALUE).to(torch.int8)
        move_values[rows] = row_moves
        values[rows] = row_moves.max(dim=1).values
    return values, move_values


def minimax_values(boards: Tensor) -> Tensor:
    """Game value under perfect play for the player to move (+1 win, 0 draw, -1 loss).

    On a finished board: the result for the player who would move next.

    Shapes: boards (B, 9) int8 perspective -> (B,) int8.
    """
    return _solution(boards.device)[0][board_index(boards)]


def move_values(boards: Tensor) -> Tensor:
    """Game value of each move for the player to move; ``ILLEGAL_VALUE`` on taken cells.

    Shapes: boards (B, 9) int8 perspective -> (B, 9) int8.
    """
    return _solution(boards.device)[1][board_index(boards)]


def optimal_moves(boards: Tensor) -> Tensor:
    """Moves that keep the minimax value; all False on finished boards.

    Shapes: boards (B, 9) int8 perspective -> (B, 9) bool.
    """
    values, moves = _solution(boards.device)
    index = board_index(boards)
    return (moves[index] == values[index].unsqueeze(1)) & (moves[index] != ILLEGAL_VALUE)


def minimax_value(board: Any) -> int:
    """:func:`minimax_values` for one perspective board given as any 9-number sequence."""
    cells = torch.as_tensor(np.asarray(board, dtype=np.int8).reshape(1, NUM_CELLS))
    return int(minimax_values(cells)[0])


class RandomOpponent:
    """Plays a uniformly random legal move."""

    batch_safe = True

    def act(self, boards: Tensor, legal: Tensor, generator: torch.Generator) -> Tensor:
        return random_legal_moves(legal, generator)


class PerfectOpponent:
    """Plays a minimax-optimal move; never loses.

    Args:
        tie_break: ``"random"`` picks uniformly among optimal moves, ``"first"`` the
            lowest cell index (fully deterministic).
    """

    batch_safe = True

    def __init__(self, tie_break: str = "random") -> None:
        if tie_break not in ("random", "first"):
            raise ValueError(f"unknown tie_break {tie_break!r} (valid: 'random', 'first')")
        self.tie_break = tie_break

    def act(self, boards: Tensor, legal: Tensor, generator: torch.Generator) -> Tensor:
        best = optimal_moves(boards) & legal
        best = torch.where(best.any(dim=1, keepdim=True), best, legal)
        if self.tie_break == "first":
            return best.to(torch.uint8).argmax(dim=1)
        return random_legal_moves(best, generator)

    def __repr__(self) -> str:
        return f"PerfectOpponent(tie_break={self.tie_break!r})"


class SelfPlayOpponent:
    """Plays with a policy (usually a snapshot of the agent); uniformly random until one is set.

    The policy gets the boards from the opponent's side, exactly like an agent's
    observations, and runs under ``torch.no_grad()``.
    """

    batch_safe = False

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy

    def set_policy(self, policy: Policy | None) -> None:
        self.policy = policy

    def act(self, boards: Tensor, legal: Tensor, generator: torch.Generator) -> Tensor:
        if self.policy is None:
            return random_legal_moves(legal, generator)
        with torch.no_grad():
            raw = self.policy(boards, legal)
        moves = torch.as_tensor(raw, device=legal.device).long().reshape(-1)
        if moves.shape[0] != legal.shape[0]:
            raise ValueError(
                f"self-play policy returned {moves.shape[0]} actions for {legal.shape[0]} boards"
            )
        in_range = (moves >= 0) & (moves < NUM_CELLS)
        ok = in_range & legal.gather(1, moves.clamp(0, NUM_CELLS - 1).unsqueeze(1)).squeeze(1)
        if not bool(ok.all()):
            bad = torch.nonzero(~ok).squeeze(1).tolist()
            raise ValueError(f"self-play policy chose illegal moves {moves[bad].tolist()} on rows {bad}")
        return moves


OPPONENT_NAMES = ("random", "perfect", "self_play")
OpponentSpec = str | Mapping[str, float] | Opponent


def _check_name(name: Any) -> str:
    if name not in OPPONENT_NAMES:
        valid = ", ".join(map(repr, OPPONENT_NAMES))
        raise ValueError(f"unknown opponent {name!r} (valid: {valid})")
    return name


def make_opponent(name: str) -> Opponent:
    """Build a named opponent: one of :data:`OPPONENT_NAMES`."""
    builders: dict[str, Callable[[], Opponent]] = {
        "random": RandomOpponent,
        "perfect": PerfectOpponent,
        "self_play": SelfPlayOpponent,
    }
    return builders[_check_name(name)]()


def _check_weight(name: str, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
        raise ValueError(f"opponent weight for {name!r} must be a number, got {weight!r}")
    if not math.isfinite(float(weight)) or float(weight) < 0:
        raise ValueError(f"opponent weight for {name!r} must be finite and >= 0, got {weight!r}")
    return float(weight)


_CUSTOM = "custom"


def _parse_spec(spec: OpponentSpec) -> dict[str, float]:
    if isinstance(spec, str):
        return {_check_name(spec): 1.0}
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError("opponent mixture is empty; give at least one name with a weight")
        weights = {_check_name(name): _check_weight(name, w) for name, w in spec.items()}
        if sum(weights.values()) <= 0:
            raise ValueError(f"opponent weights must not all be zero, got {dict(spec)}")
        return weights
    if callable(getattr(spec, "act", None)):
        return {_CUSTOM: 1.0}
    raise TypeError(
        f"opponent must be a name, a mapping of names to weights or an object with act(), got {spec!r}"
    )


ROLES = ("x", "o")


def _is_per_role(spec: Any) -> bool:
    return isinstance(spec, Mapping) and any(key in ROLES for key in spec)


class OpponentMixture:
    """One or more opponents; each episode plays against one, drawn with the given weights.

    Args:
        spec: an opponent name (``"random"``, ``"perfect"``, ``"self_play"``), a mapping of
            names to non-negative weights (``{"perfect": 0.5, "random": 0.5}``), an object
            with an ``act`` method, or one of these per role of the agent:
            ``{"x": "random", "o": {"random": 0.5, "perfect": 0.5}}``. Names with weights
            beside role keys are the mixture of a role not given:
            ``{"random": 0.5, "perfect": 0.5, "x": "random"}`` (so a config can give one role
            its own opponents on top of a shared mixture).
    """

    def __init__(self, spec: OpponentSpec) -> None:
        if _is_per_role(spec):
            per_role = cast(Mapping[str, Any], spec)
            shared = {name: weight for name, weight in per_role.items() if name not in ROLES}
            missing = [role for role in ROLES if role not in per_role]
            if missing and not shared:
                raise ValueError(
                    f"a per-role opponent needs both roles {list(ROLES)} or shared weights, missing {missing}"
                )
            if shared:
                _parse_spec(shared)  # checked even where both roles have their own
            roles = {role: _parse_spec(per_role[role] if role in per_role else shared) for role in ROLES}
            if _CUSTOM in roles["x"] or _CUSTOM in roles["o"]:
                raise TypeError("per-role opponents take names and weights, not opponent objects")
        else:
            weights = _parse_spec(spec)
            roles = {role: weights for role in ROLES}
        self.names = list(dict.fromkeys([*roles["x"], *roles["o"]]))
        self.opponents = [
            cast(Opponent, spec) if name == _CUSTOM else make_opponent(name) for name in self.names
        ]
        self._role_weights = {
            role: torch.tensor([weights.get(name, 0.0) for name in self.names], dtype=torch.float64)
            for role, weights in roles.items()
        }
        self.per_role = roles["x"] != roles["o"]
        self._weights = self._role_weights["x"]
        self.weights = (self._weights / self._weights.sum()).tolist()

    def sample(
        self, num_episodes: int, generator: torch.Generator, agent_marks: Tensor | None = None
    ) -> Tensor:
        """Opponent id (index into ``names``) for each new episode.

        ``agent_marks`` (+1 X, -1 O per episode) picks the role's weights for per-role mixtures.
        Shapes: agent_marks (num_episodes,); returns (num_episodes,) int64 on the generator's device.
        """
        if len(self.opponents) == 1:
            return torch.zeros(num_episodes, dtype=torch.int64, device=generator.device)
        as_x = self._draw("x", num_episodes, generator)
        if not self.per_role:
            return as_x
        if agent_marks is None:
            raise ValueError("a per-role opponent mixture needs the agent's mark of each episode")
        as_o = self._draw("o", num_episodes, generator)
        return torch.where(agent_marks.to(as_x.device) > 0, as_x, as_o)

    def _draw(self, role: str, num_episodes: int, generator: torch.Generator) -> Tensor:
        weights = self._role_weights[role].to(generator.device)
        if not bool(weights.sum() > 0):
            return torch.zeros(num_episodes, dtype=torch.int64, device=generator.device)
        return torch.multinomial(weights, num_episodes, replacement=True, generator=generator)

    def act(
        self, boards: Tensor, legal: Tensor, generator: torch.Generator, ids: Tensor, rows: Tensor
    ) -> Tensor:
        """Moves of each board's opponent on the rows asked (0 elsewhere).

        Shapes: boards (B, 9) int8, legal (B, 9) bool, ids (B,) int64, rows (B,) bool -> (B,).
        """
        moves = torch.zeros(boards.shape[0], dtype=torch.int64, device=boards.device)
        for opponent_id, opponent in enumerate(self.opponents):
            if getattr(opponent, "batch_safe", False):
                chosen = opponent.act(boards, legal, generator)
                moves = torch.where(ids == opponent_id, chosen, moves)
                continue
            selected = torch.nonzero(rows & (ids == opponent_id)).squeeze(1)
            if selected.numel() > 0:
                moves[selected] = opponent.act(boards[selected], legal[selected], generator)
        return moves

    def set_self_play_policy(self, policy: Policy | None) -> bool:
        """Give the self-play opponent a policy; False when the mixture never plays one
        (none in it, or its weight is 0 in every role)."""
        plays = False
        for index, opponent in enumerate(self.opponents):
            if isinstance(opponent, SelfPlayOpponent):
                opponent.set_policy(policy)
                plays = plays or any(float(w[index]) > 0 for w in self._role_weights.values())
        return plays

    def __repr__(self) -> str:
        def parts(weights: Tensor) -> str:
            total = float(weights.sum())
            return ", ".join(
                f"{n}={float(w) / total:.3g}" for n, w in zip(self.names, weights, strict=True) if w > 0
            )

        if self.per_role:
            return (
                f"OpponentMixture(x: {parts(self._role_weights['x'])}; o: {parts(self._role_weights['o'])})"
            )
        return f"OpponentMixture({parts(self._role_weights['x'])})"
