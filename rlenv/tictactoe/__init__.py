"""Tic-Tac-Toe: batched rules, opponents, a single Gymnasium env and a torch vector env."""

from rlenv.tictactoe.env import TicTacToeEnv
from rlenv.tictactoe.opponents import (
    OpponentMixture,
    PerfectOpponent,
    RandomOpponent,
    SelfPlayOpponent,
    minimax_value,
    minimax_values,
    move_values,
    optimal_moves,
)
from rlenv.tictactoe.vector_env import TicTacToeVectorEnv

__all__ = [
    "OpponentMixture",
    "PerfectOpponent",
    "RandomOpponent",
    "SelfPlayOpponent",
    "TicTacToeEnv",
    "TicTacToeVectorEnv",
    "minimax_value",
    "minimax_values",
    "move_values",
    "optimal_moves",
]
