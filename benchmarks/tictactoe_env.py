"""Env steps per second: the batched vector env against a loop over the single env.

    python -m benchmarks.tictactoe_env [--device cpu] [--threads 1] [--seconds 2]

Each env step is one agent move (random legal) plus the opponent's reply. The baseline is
the single ``TicTacToeEnv`` stepped in a Python loop, measured in the same process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rlenv.tictactoe.env import TicTacToeEnv
from rlenv.tictactoe.opponents import random_legal_moves
from rlenv.tictactoe.vector_env import TicTacToeVectorEnv


def single_env_rate(opponent: str, seconds: float) -> float:
    env = TicTacToeEnv(opponent=opponent, agent_plays="both")
    rng = np.random.default_rng(0)
    _, info = env.reset(seed=0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        _, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated:
            _, info = env.reset()
    return steps / (time.perf_counter() - started)


def vector_env_rate(opponent: str, num_envs: int, device: str, seconds: float) -> float:
    env = TicTacToeVectorEnv(num_envs=num_envs, opponent=opponent, agent_plays="both", device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    _, info = env.reset(seed=0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        actions = random_legal_moves(info["action_mask"], generator)
        _, _, _, _, info = env.step(actions)
        steps += num_envs
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 8192])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'opponent':<10}{'form':<16}{'steps/s':>14}{'x single':>10}")
    for opponent in ("random", "perfect"):
        baseline = single_env_rate(opponent, args.seconds)
        print(f"{opponent:<10}{'single env':<16}{baseline:>14,.0f}{1.0:>10.1f}")
        for batch in args.batches:
            rate = vector_env_rate(opponent, batch, args.device, args.seconds)
            print(f"{opponent:<10}{f'vector B={batch}':<16}{rate:>14,.0f}{rate / baseline:>10.1f}")


if __name__ == "__main__":
    main()
