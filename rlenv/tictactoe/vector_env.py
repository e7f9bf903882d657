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
    agent_mark_for_episode,
    check_choice,
    check_random_opening_plies,
    check_reset_options,
    opening_boards,
    seed_generator,
)
from rlenv.tictactoe.opponents import OpponentMixture, OpponentSpec, Policy
from rlenv.tictactoe.rules import (
    NUM_CELLS,
    Reply,
    legal_moves,
    perspective,
    play_turn,
    render_board,
)


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
        self._boards = torch.zeros(num_envs, NUM_CELLS, dtype=torch.int8, device=self.device)
        self._episodes = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._agent_marks = torch.ones(num_envs, dtype=torch.int8, device=self.device)
        self._opponent_ids = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        super().reset(seed=seed)
        check_reset_options(options)
        if seed is not None or self._generator is None:
            self._generator = seed_generator(self.np_random, self.device)
        self._episodes.zero_()
        self._agent_marks = self._marks_for(self._episodes)
        self._opponent_ids = self.opponents.sample(self.num_envs, self._generator, self._agent_marks)
        self._boards = opening_boards(
            self._agent_marks, self.random_opening_plies, self._generator, self._reply
        )
        self._needs_reset = False
        return self._observations(), {"action_mask": legal_moves(self._boards)}

    def step(self, actions: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset(); call reset() first")
        moves = self._checked_actions(actions)
        result = play_turn(self._boards, self._agent_marks, moves, self._reply)
        ended = result.terminated
        final_obs = perspective(result.boards, self._agent_marks)
        final_mask = legal_moves(result.boards) & ~ended.unsqueeze(1)

        self._episodes = self._episodes + ended.long()
        self._agent_marks = torch.where(ended, self._marks_for(self._episodes), self._agent_marks)
        assert self._generator is not None
        fresh_ids = self.opponents.sample(self.num_envs, self._generator, self._agent_marks)
        self._opponent_ids = torch.where(ended, fresh_ids, self._opponent_ids)
        fresh_boards = opening_boards(
            self._agent_marks, self.random_opening_plies, self._generator, self._masked_reply(ended)
        )
        self._boards = torch.where(ended.unsqueeze(1), fresh_boards, result.boards)

        info = {
            "action_mask": legal_moves(self._boards),
            "final_obs": final_obs,
            "final_action_mask": final_mask,
            "outcome": result.outcome,
            "illegal_move": result.illegal,
        }
        rewards = result.outcome.to(torch.float32)
        truncated = torch.zeros_like(ended)
        return self._observations(), rewards, ended.clone(), truncated, info

    def set_self_play_policy(self, policy: Policy | None) -> bool:
        """Give the self-play opponent a policy ``(obs, mask) -> actions``; False if there is none."""
        return self.opponents.set_self_play_policy(policy)

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(render_board(board) for board in self._boards.cpu())

    @property
    def boards(self) -> Tensor:
        """Absolute boards (+1 X, -1 O, 0 empty), a copy. Shapes: (B, 9) int8."""
        return self._boards.clone()

    @property
    def agent_marks(self) -> Tensor:
        """Agent's mark per board in the current episode. Shapes: (B,) int8, +1 X, -1 O."""
        return self._agent_marks.clone()

    def _marks_for(self, episodes: Tensor) -> Tensor:
        marks = agent_mark_for_episode(self.agent_plays, episodes)
        return torch.as_tensor(marks, dtype=torch.int8, device=self.device).expand(self.num_envs).clone()

    def _checked_actions(self, actions: Any) -> Tensor:
        moves = _as_action_tensor(actions, self.num_envs, self.device)
        in_range = (moves >= 0) & (moves < NUM_CELLS)
        legal = legal_moves(self._boards).gather(1, moves.clamp(0, NUM_CELLS - 1).unsqueeze(1)).squeeze(1)
        acceptable = in_range & legal if self.illegal_move == "raise" else in_range
        if bool(acceptable.all()):
            return moves
        if not bool(in_range.all()):
            bad = torch.nonzero(~in_range).flatten().tolist()
            raise ValueError(
                f"actions out of range at env indices {bad}: {moves[bad].tolist()} (valid cells: 0..8)"
            )
        bad = torch.nonzero(~legal).flatten().tolist()
        details = "; ".join(
            f"env {i}: move {int(moves[i])} (legal: {torch.nonzero(self._boards[i] == 0).flatten().tolist()})"
            for i in bad
        )
        raise ValueError(f"illegal moves, cells already taken at env indices {bad}: {details}")

    def _reply(self, boards: Tensor, legal: Tensor, rows: Tensor) -> Tensor:
        assert self._generator is not None
        return self.opponents.act(boards, legal, self._generator, self._opponent_ids, rows)

    def _masked_reply(self, allowed: Tensor) -> Reply:
        def reply(boards: Tensor, legal: Tensor, rows: Tensor) -> Tensor:
            return self._reply(boards, legal, rows & allowed)

        return reply

    def _observations(self) -> Tensor:
        return perspective(self._boards, self._agent_marks)
