"""Single Tic-Tac-Toe environment (Gymnasium API) against a built-in opponent."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlenv.tictactoe.opponents import OpponentMixture, OpponentSpec, Policy
from rlenv.tictactoe.rules import (
    MAX_RANDOM_PLIES,
    NUM_CELLS,
    O,
    Reply,
    X,
    legal_moves,
    perspective,
    play_turn,
    random_openings,
    render_board,
    start_boards,
)

AGENT_PLAYS = ("x", "o", "both")
ILLEGAL_MOVE_MODES = ("penalize", "raise")


def check_choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    """``value`` if it is one of ``valid``, else a ValueError naming both."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r} (valid: {', '.join(map(repr, valid))})")
    return value


def agent_mark_for_episode(agent_plays: str, episode: Tensor | int) -> Tensor | int:
    """Agent's mark (+1 X, -1 O) in the given episode count; ``"both"`` starts as X and alternates."""
    if agent_plays == "x":
        return X
    if agent_plays == "o":
        return O
    if isinstance(episode, int):
        return X if episode % 2 == 0 else O
    return torch.where(episode % 2 == 0, X, O).to(torch.int8)


def seed_generator(np_random: np.random.Generator, device: torch.device | str) -> torch.Generator:
    """A torch generator on ``device`` seeded by one draw from the env's ``np_random``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np_random.integers(2**63 - 1)))
    return generator


def check_random_opening_plies(value: Any) -> int:
    """``value`` if it is an int in ``0 .. MAX_RANDOM_PLIES``, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RANDOM_PLIES:
        raise ValueError(
            f"random_opening_plies must be an integer in 0..{MAX_RANDOM_PLIES} "
            f"(with the reply, no line is complete yet), got {value!r}"
        )
    return value


def opening_boards(agent_marks: Tensor, max_plies: int, generator: torch.Generator, reply: Reply) -> Tensor:
    """New episodes' boards: ``0 .. max_plies`` random plies, then the opponent's move if it is to move.

    With ``max_plies == 0`` no random number is drawn.

    Shapes: agent_marks (B,) int8 -> (B, 9) int8 absolute.
    """
    if max_plies == 0:
        return start_boards(agent_marks, reply)
    plies = torch.randint(0, max_plies + 1, agent_marks.shape, generator=generator, device=agent_marks.device)
    return start_boards(agent_marks, reply, random_openings(plies, generator))


def check_reset_options(options: dict[str, Any] | None) -> None:
    if options:
        raise ValueError(f"unsupported reset options {sorted(options)} (this env takes none)")


def parse_action(action: Any) -> int:
    """The cell index in a single action, or a TypeError/ValueError naming what was wrong."""
    if isinstance(action, Tensor):
        action = action.detach().cpu().numpy()
    if isinstance(action, np.ndarray):
        if action.shape != ():
            raise ValueError(
                f"action must be a single cell index, got an array of shape {action.shape}: {action!r}"
            )
        action = action.item()
    elif isinstance(action, np.generic):
        action = action.item()
    if isinstance(action, bool) or not isinstance(action, int):
        raise TypeError(
            f"action must be an integer cell index 0..8, got {action!r} ({type(action).__name__})"
        )
    if not 0 <= action < NUM_CELLS:
        raise ValueError(f"action {action} is out of range (valid cells: 0..8)")
    return action


class TicTacToeEnv(gym.Env[np.ndarray, np.int64]):
    """Tic-Tac-Toe against a built-in opponent; one step is the agent's move and the reply.

    ## Description

    The 3x3 game: X moves first, players alternate, three marks in a row, column or
    diagonal win, a full board without a line is a draw. The agent plays X, O, or
    alternates per episode; the opponent (random, perfect minimax, self-play, or a
    per-episode mixture of them) replies inside the same ``step``.

    ## Action Space

    ``Discrete(9)``: the cell to mark, row-major (0 top-left, 8 bottom-right). Only
    empty cells are legal; ``info["action_mask"]`` marks them.

    ## Observation Space

    ``Box(-1, 1, (9,), int8)``: the cells from the agent's side: ``+1`` own mark,
    ``-1`` the opponent's, ``0`` empty. The agent is always the player to move.

    ## Rewards

    ``+1`` win, ``0`` draw, ``-1`` loss, all at the final step (0 before). In
    ``illegal_move="penalize"`` mode a move on a taken cell ends the episode with ``-1``.

    ## Starting State

    An empty board, or one opponent mark when the agent plays O. With
    ``random_opening_plies=k`` each episode first plays ``0..k`` uniformly random moves
    (the count drawn uniformly, X first), then the opponent's move if it is to move:
    exploring starts, so that training visits the positions after every opening, not only
    after the ones the policy prefers. Evaluate with ``random_opening_plies=0``.

    ## Episode End

    Terminated when a line is complete, the board is full, or (penalize mode) after an
    illegal move. Never truncated. Stepping an ended episode raises ``RuntimeError``.

    ## Arguments

    - ``agent_plays``: ``"x"`` (default), ``"o"``, or ``"both"`` (X in the first
      episode after a seeded reset, then alternating).
    - ``opponent``: ``"random"`` (default), ``"perfect"``, ``"self_play"``, a mapping of
      these names to weights (one drawn per episode), an object with ``act``, or one name or
      mapping per role of the agent: ``{"x": "random", "o": {"random": 0.5, "perfect": 0.5}}``.
    - ``illegal_move``: ``"penalize"`` (default) or ``"raise"`` (``ValueError`` naming
      the move and the legal cells; the state is unchanged).
    - ``random_opening_plies``: ``0`` (default) to ``3``, see Starting State.
    - ``render_mode``: ``None`` or ``"ansi"`` (``render()`` returns the board as text).

    ``info`` always holds ``"action_mask"`` (int8 (9,), 1 = legal, all 0 once the game is
    over) and ``"illegal_move"`` after a step; at the final step also ``"outcome"``
    (+1/0/-1 from the agent's side). Malformed actions (not an integer in 0..8) raise
    ``TypeError``/``ValueError`` in both modes and leave the state unchanged.

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        *,
        agent_plays: str = "x",
        opponent: OpponentSpec = "random",
        illegal_move: str = "penalize",
        random_opening_plies: int = 0,
        render_mode: str | None = None,
    ) -> None:
        self.agent_plays = check_choice("agent_plays", agent_plays, AGENT_PLAYS)
        self.illegal_move = check_choice("illegal_move", illegal_move, ILLEGAL_MOVE_MODES)
        self.random_opening_plies = check_random_opening_plies(random_opening_plies)
        if render_mode is not None:
            check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        self.render_mode = render_mode
        self.opponents = OpponentMixture(opponent)
        self.observation_space = spaces.Box(low=-1, high=1, shape=(NUM_CELLS,), dtype=np.int8)
        self.action_space = spaces.Discrete(NUM_CELLS)
        self._generator: torch.Generator | None = None
        self._episode = 0
        self._board = torch.zeros(1, NUM_CELLS, dtype=torch.int8)
        self._agent_mark = torch.tensor([X], dtype=torch.int8)
        self._opponent_id = torch.zeros(1, dtype=torch.int64)
        self._over = True
        self._outcome: int | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        check_reset_options(options)
        if seed is not None or self._generator is None:
            self._generator = seed_generator(self.np_random, "cpu")
            self._episode = 0
        else:
            self._episode += 1
        mark = agent_mark_for_episode(self.agent_plays, self._episode)
        self._agent_mark = torch.tensor([mark], dtype=torch.int8)
        self._opponent_id = self.opponents.sample(1, self._generator, self._agent_mark)
        plies = self.random_opening_plies
        self._board = opening_boards(self._agent_mark, plies, self._generator, self._reply)
        self._over = False
        self._outcome = None
        return self._observation(), {"action_mask": self._action_mask()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._over:
            raise RuntimeError("step() called on a finished episode (or before reset()); call reset() first")
        move = parse_action(action)
        legal = legal_moves(self._board)[0]
        if self.illegal_move == "raise" and not bool(legal[move]):
            cells = torch.nonzero(legal).flatten().tolist()
            raise ValueError(f"illegal move {move}: cell already taken (legal: {cells})")
        result = play_turn(self._board, self._agent_mark, torch.tensor([move]), self._reply)
        self._board = result.boards
        self._over = bool(result.terminated[0])
        info: dict[str, Any] = {"illegal_move": bool(result.illegal[0])}
        info["action_mask"] = self._action_mask()
        if self._over:
            self._outcome = int(result.outcome[0])
            info["outcome"] = self._outcome
        return self._observation(), float(result.outcome[0]), self._over, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        side = "X" if int(self._agent_mark[0]) == X else "O"
        status = {None: "", 1: " (agent won)", 0: " (draw)", -1: " (agent lost)"}[self._outcome]
        return render_board(self._board[0]) + f"agent plays {side}{status}\n"

    def set_self_play_policy(self, policy: Policy | None) -> bool:
        """Give the self-play opponent a policy ``(obs, mask) -> actions``; False if there is none."""
        return self.opponents.set_self_play_policy(policy)

    @property
    def board(self) -> np.ndarray:
        """The absolute board (+1 X, -1 O, 0 empty), a copy."""
        return self._board[0].numpy().copy()

    @property
    def agent_mark(self) -> int:
        """+1 when the agent plays X in this episode, -1 when it plays O."""
        return int(self._agent_mark[0])

    def _reply(self, boards: Tensor, legal: Tensor, rows: Tensor) -> Tensor:
        assert self._generator is not None
        return self.opponents.act(boards, legal, self._generator, self._opponent_id, rows)

    def _observation(self) -> np.ndarray:
        return perspective(self._board, self._agent_mark)[0].numpy().copy()

    def _action_mask(self) -> np.ndarray:
        if self._over:
            return np.zeros(NUM_CELLS, dtype=np.int8)
        return legal_moves(self._board)[0].numpy().astype(np.int8)
