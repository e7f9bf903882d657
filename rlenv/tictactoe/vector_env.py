"""Batched Tic-Tac-Toe: B boards as torch tensors on one device, same rules as the single env."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from rlenv.tictactoe.env import (
    AGENT_PLAYS,
    ILLEGAL_MOVE_MODES,
    check_choice,
    check_random_opening_plies,
    check_reset_options,
    seed_generator,
)
from rlenv.tictactoe.opponents import OpponentMixture, OpponentSpec, PerfectOpponent, Policy, RandomOpponent
from rlenv.tictactoe.rules import NUM_BOARDS, NUM_CELLS, render_board
from rlenv.tictactoe.tables import FULL_CODE, tables


def _as_action_tensor(actions: Any, num_envs: int, device: torch.device) -> Tensor:
    """Actions as (B,) int64 on ``device``, or a TypeError/ValueError naming the problem."""
    if not isinstance(actions, Tensor):
        array = np.asarray(actions)
        if array.dtype.kind not in "iu":
            raise TypeError(f"actions must be integer cell indices, got dtype {array.dtype}: {actions!r}")
        actions = torch.from_numpy(array)
    if actions.dtype == torch.bool or actions.is_floating_point() or actions.is_complex():
        raise TypeError(f"actions must be integer cell indices, got dtype {actions.dtype}: {actions!r}")
    if tuple(actions.shape) != (num_envs,):
        raise ValueError(f"actions must have shape ({num_envs},), got {tuple(actions.shape)}")
    return actions.to(device=device, dtype=torch.int64)


class TicTacToeVectorEnv(VectorEnv):
    """``num_envs`` Tic-Tac-Toe games stepped together; see :class:`~rlenv.tictactoe.env.TicTacToeEnv`.

    Takes the same arguments as the single env plus ``num_envs`` and ``device``. Actions
    are a (B,) integer tensor (numpy accepted); ``step`` returns torch tensors on
    ``device``: obs (B, 9) int8, rewards (B,) float32, terminated and truncated (B,) bool.

    The state is one base-3 code per board (:mod:`rlenv.tictactoe.tables`): a move is an
    addition and the rest of a step (legality, the outcome, the random or perfect reply, the
    observations and masks) gathers from tables over the ``3**9`` codes, with no Python loop
    over boards. Other opponents (self-play, objects with ``act``) are asked with the boards.

    Episodes that end are reset in the same step (``AutoresetMode.SAME_STEP``): their obs
    row is already the next episode's first observation. ``info`` holds tensors:
    ``action_mask`` (B, 9) bool; after a step also ``final_obs`` (B, 9) int8 (the ended
    episode's last observation, equal to obs on other rows), ``final_action_mask`` (B, 9)
    bool (all False on ended rows), ``outcome`` (B,) int8 (+1/0/-1 on ended rows, 0
    elsewhere) and ``illegal_move`` (B,) bool. With ``agent_plays="both"`` every board
    starts as X after ``reset`` and alternates per episode, like the single env.

    Out-of-range or malformed actions raise in both modes, naming the env indices; moves
    on taken cells raise in ``illegal_move="raise"`` mode. The state is unchanged then.
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        agent_plays: str = "x",
        opponent: OpponentSpec = "random",
        illegal_move: str = "penalize",
        random_opening_plies: int = 0,
        render_mode: str | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = num_envs
        self.agent_plays = check_choice("agent_plays", agent_plays, AGENT_PLAYS)
        self.illegal_move = check_choice("illegal_move", illegal_move, ILLEGAL_MOVE_MODES)
        self.random_opening_plies = check_random_opening_plies(random_opening_plies)
        if render_mode is not None:
            check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        self.render_mode = render_mode
        self.device = torch.device(device)
        self.opponents = OpponentMixture(opponent)
        self.single_observation_space = spaces.Box(low=-1, high=1, shape=(NUM_CELLS,), dtype=np.int8)
        self.single_action_space = spaces.Discrete(NUM_CELLS)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._generator: torch.Generator | None = None
        self._tables = tables(self.device)
        self._bits, self._first_choice, self._asked = self._opponent_tables()
        self._any_first = bool(self._first_choice.any())
        self._codes = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._set_roles(torch.zeros(num_envs, dtype=torch.int64, device=self.device))
        self._opponent_ids = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._needs_reset = True

    def _opponent_tables(self) -> tuple[Tensor, Tensor, list[int]]:
        """Each opponent's move masks by code, stacked (K * N,); whether it takes the first
        cell of its mask (K,); the ids of the opponents that are asked instead of looked up."""
        masks, first, asked = [], [], []
        for opponent_id, opponent in enumerate(self.opponents.opponents):
            if type(opponent) is PerfectOpponent:
                masks.append(self._tables.perfect_bits)
                first.append(opponent.tie_break == "first")
                continue
            masks.append(self._tables.legal_bits)  # RandomOpponent's, and a placeholder
            first.append(False)
            if type(opponent) is not RandomOpponent:
                asked.append(opponent_id)
        return torch.cat(masks), torch.tensor(first, device=self.device), asked

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        super().reset(seed=seed)
        check_reset_options(options)
        if seed is not None or self._generator is None:
            self._generator = seed_generator(self.np_random, self.device)
        as_o = 1 if self.agent_plays == "o" else 0  # "both" starts as X
        self._set_roles(torch.full((self.num_envs,), as_o, dtype=torch.int64, device=self.device))
        self._opponent_ids = self.opponents.sample(self.num_envs, self._generator, self.agent_marks)
        everyone = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._codes = self._openings(everyone)
        self._needs_reset = False
        return self._observations(), {"action_mask": self._tables.legal.index_select(0, self._codes)}

    def step(self, actions: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset(); call reset() first")
        tables = self._tables
        moves = self._checked_actions(actions)
        illegal = (tables.legal_bits.index_select(0, self._codes) >> moves) & 1 == 0
        codes = self._codes + torch.where(illegal, 0, self._digits * tables.powers.index_select(0, moves))
        codes = self._reply(codes, ~(illegal | tables.over.index_select(0, codes)))
        ended = illegal | tables.over.index_select(0, codes)
        seen = self._view_offsets + codes  # rows of the agent's view in the tables
        outcome = torch.where(illegal, -1, tables.outcomes.index_select(0, seen))  # int8
        final_obs = tables.views.index_select(0, seen)
        final_mask = tables.legal.index_select(0, torch.where(ended, FULL_CODE, codes))

        if self.agent_plays == "both":  # the next episode in the other role
            self._set_roles(self._as_o ^ ended.long())
        assert self._generator is not None
        if len(self.opponents.opponents) > 1:
            fresh_ids = self.opponents.sample(self.num_envs, self._generator, self.agent_marks)
            self._opponent_ids = torch.where(ended, fresh_ids, self._opponent_ids)
        self._codes = torch.where(ended, self._openings(ended), codes)

        info = {
            "action_mask": tables.legal.index_select(0, self._codes),
            "final_obs": final_obs,
            "final_action_mask": final_mask,
            "outcome": outcome,
            "illegal_move": illegal,
        }
        rewards = outcome.to(torch.float32)
        return self._observations(), rewards, ended, torch.zeros_like(ended), info

    def set_self_play_policy(self, policy: Policy | None) -> bool:
        """Give the self-play opponent a policy ``(obs, mask) -> actions``; False if there is none."""
        return self.opponents.set_self_play_policy(policy)

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(render_board(board) for board in self.boards.cpu())

    @property
    def boards(self) -> Tensor:
        """Absolute boards (+1 X, -1 O, 0 empty), a copy. Shapes: (B, 9) int8."""
        return self._tables.views.index_select(0, self._codes)

    @property
    def agent_marks(self) -> Tensor:
        """Agent's mark per board in the current episode. Shapes: (B,) int8, +1 X, -1 O."""
        return (1 - 2 * self._as_o).to(torch.int8)

    def _set_roles(self, as_o: Tensor) -> None:
        """The agent's role per board (1 where it plays O), with its base-3 digit (1 X, 2 O),
        the opponent's, and the row offset of the agent's view in the tables."""
        self._as_o = as_o
        self._digits = 1 + as_o
        self._opponent_digits = 2 - as_o
        self._view_offsets = as_o * NUM_BOARDS

    def _checked_actions(self, actions: Any) -> Tensor:
        moves = _as_action_tensor(actions, self.num_envs, self.device)
        low, high = torch.aminmax(moves)
        if self.illegal_move != "raise" and 0 <= int(low) and int(high) < NUM_CELLS:
            return moves
        in_range = (moves >= 0) & (moves < NUM_CELLS)
        bits = self._tables.legal_bits.index_select(0, self._codes)
        legal = (bits >> moves.clamp(0, NUM_CELLS - 1)) & 1 == 1
        if bool((in_range & legal).all()):
            return moves
        if not bool(in_range.all()):
            bad = torch.nonzero(~in_range).flatten().tolist()
            raise ValueError(
                f"actions out of range at env indices {bad}: {moves[bad].tolist()} (valid cells: 0..8)"
            )
        bad = torch.nonzero(~legal).flatten().tolist()
        boards = self.boards
        details = "; ".join(
            f"env {i}: move {int(moves[i])} (legal: {torch.nonzero(boards[i] == 0).flatten().tolist()})"
            for i in bad
        )
        raise ValueError(f"illegal moves, cells already taken at env indices {bad}: {details}")

    def _reply(self, codes: Tensor, rows: Tensor) -> Tensor:
        """``codes`` with each board's opponent's move added on ``rows``.

        The random and the perfect opponent are lookups (:mod:`rlenv.tictactoe.tables`); any
        other opponent is asked with its boards (from its side) on the rows it plays."""
        assert self._generator is not None
        tables = self._tables
        uniform = torch.rand(self.num_envs, generator=self._generator, device=self.device)
        ids = self._opponent_ids
        slot = ids * NUM_BOARDS + codes if self._bits.numel() > NUM_BOARDS else codes
        first = self._first_choice.index_select(0, ids) if self._any_first else False
        powers = tables.pick_power(self._bits.index_select(0, slot), uniform, first)
        for opponent_id in self._asked:
            selected = torch.nonzero(rows & (ids == opponent_id)).squeeze(1)
            if selected.numel() > 0:
                boards = tables.views[NUM_BOARDS - self._view_offsets[selected] + codes[selected]]
                cells = self.opponents.opponents[opponent_id].act(
                    boards, tables.legal[codes[selected]], self._generator
                )
                powers[selected] = tables.powers[cells]
        return codes + rows * self._opponent_digits * powers

    def _openings(self, rows: Tensor) -> Tensor:
        """New episodes' codes: 0..``random_opening_plies`` random plies, then the opponent's
        move where it is to move (asked only on ``rows``; the other rows' codes are unused).
        Shapes: rows (B,) bool -> (B,) int64."""
        tables = self._tables
        codes = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        if self.agent_plays == "x" and not self.random_opening_plies:
            return codes  # the empty board, the agent to move
        if not self.random_opening_plies:
            return self._reply(codes, rows & (self._as_o == 1))  # X opens: the opponent, where the agent is O
        assert self._generator is not None
        most = self.random_opening_plies
        plies = torch.randint(0, most + 1, codes.shape, generator=self._generator, device=self.device)
        for ply in range(most):
            uniform = torch.rand(self.num_envs, generator=self._generator, device=self.device)
            powers = tables.pick_power(tables.legal_bits.index_select(0, codes), uniform)
            codes = codes + torch.where(plies > ply, (1 if ply % 2 == 0 else 2) * powers, 0)
        opponent_first = (plies % 2) != self._as_o  # odd plies: O to move
        return self._reply(codes, rows & opponent_first)

    def _observations(self) -> Tensor:
        return self._tables.views.index_select(0, self._view_offsets + self._codes)
