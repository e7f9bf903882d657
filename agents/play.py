"""Play Tic-Tac-Toe against a trained agent in the terminal.

    python -m agents.play run=<tictactoe run dir> [human=x|o] [games=1]

The agent plays its deterministic policy (``agent.act(..., deterministic=True)``). Type the
number of an empty cell (shown on the board, 0 top-left to 8 bottom-right) to move; ``q``
quits. The result of each game is printed from the human's side.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from rlenv.tictactoe.env import TicTacToeEnv
from rlenv.tictactoe.rules import render_board


class Quit(Exception):
    """The human quit."""


class HumanOpponent:
    """The env's opponent, played by a human: shows the board, reads a legal cell."""

    batch_safe = False

    def __init__(self, mark: int, read: Callable[[str], str], write: Callable[[str], Any]) -> None:
        self.mark, self.read, self.write = mark, read, write

    def act(self, boards: torch.Tensor, legal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        board = boards[0] * self.mark  # its own side -> absolute marks
        cells = torch.nonzero(legal[0]).flatten().tolist()
        self.write(render_board(board))
        question = f"your move ({'X' if self.mark > 0 else 'O'}), one of {cells} or q: "
        while True:
            try:
                answer = self.read(question).strip()
            except EOFError:
                raise Quit from None
            if answer.lower() in ("q", "quit", "exit"):
                raise Quit
            if answer.isdigit() and int(answer) in cells:
                return torch.tensor([int(answer)])
            self.write(f"{answer!r} is not an empty cell; choose one of {cells}\n")


def play(
    run: str | Path,
    human: str = "x",
    games: int = 1,
    read: Callable[[str], str] = input,
    write: Callable[[str], Any] = print,
) -> list[int]:
    """Play ``games`` games as ``human`` ("x" or "o"); returns the human's results (+1/0/-1)."""
    from agents import load_agent

    if human not in ("x", "o"):
        raise ValueError(f"human={human!r}: choose x or o")
    agent = load_agent(run)
    spaces = getattr(getattr(agent, "network", None), "core", None)
    try:
        if spaces is not None:  # a language model: it reads token windows, not boards
            raise TypeError("a language-model policy")
        _move(agent, np.zeros(9, dtype=np.int8), np.ones(9, dtype=np.int8))
    except Exception as error:
        raise ValueError(f"run={str(run)!r} does not hold a Tic-Tac-Toe agent ({error})") from None
    mark = 1 if human == "x" else -1
    env = TicTacToeEnv(agent_plays="o" if human == "x" else "x", opponent=HumanOpponent(mark, read, write))
    results: list[int] = []
    try:
        for game in range(games):
            obs, info = env.reset(seed=game)
            terminated = False
            while not terminated:
                obs, _, terminated, _, info = env.step(_move(agent, obs, info["action_mask"]))
            write(render_board(torch.as_tensor(env.board)))
            outcome = -int(info["outcome"])
            write({1: "you win", 0: "a draw", -1: "the agent wins"}[outcome] + "\n")
            results.append(outcome)
    except Quit:
        write("bye\n")
    return results


def _move(agent: Any, obs: np.ndarray, mask: np.ndarray) -> int:
    """The agent's deterministic move on one board (its own side) with legal ``mask``."""
    board = torch.as_tensor(obs).unsqueeze(0)
    action = agent.act(board, torch.as_tensor(mask, dtype=torch.bool).unsqueeze(0), True)
    return int(np.asarray(torch.as_tensor(action).cpu()).reshape(-1)[0])


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="play")
def _main(cfg: DictConfig) -> None:
    results = play(cfg.run, str(cfg.human), int(cfg.games), write=lambda text: print(text, end=""))
    if results:
        print(f"you: {results.count(1)} won, {results.count(0)} drawn, {results.count(-1)} lost")
    sys.stdout.flush()


def main() -> None:
    """The command line entry point (``python -m agents.play``, ``rlenv-play``)."""
    _main()


if __name__ == "__main__":
    main()
