"""Plies per second of the table-driven vector env, against PettingZoo and OpenSpiel.

    python -m benchmarks.tictactoe_env [--seconds 2] [--batches 64 1024 4096 65536] [--device cpu]

Every row plays random legal moves for the agent (one thread unless ``--threads``): the
vector env ``TicTacToeVectorEnv`` (one step is the agent's move and the opponent's reply,
random or perfect), the single ``TicTacToeEnv`` in a Python loop, PettingZoo's
``tictactoe_v3`` (both players random, the AEC loop) and OpenSpiel's C++ ``tic_tac_toe``
stepped from Python, all in the same process, one after the other. A ply is one mark placed
on a board; the vector env's plies per step are counted on a calibration run with the same
seed. PettingZoo and OpenSpiel are not dependencies of the project: ``pip install
pettingzoo pygame open_spiel`` to include them (their rows are skipped otherwise).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from rlenv.tictactoe.env import TicTacToeEnv
from rlenv.tictactoe.tables import random_cells
from rlenv.tictactoe.vector_env import TicTacToeVectorEnv


def _timed(step, seconds: float) -> tuple[int, float]:
    count, started = 0, time.perf_counter()
    while True:
        count += step()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count, elapsed


def single_env_rate(opponent: str, seconds: float) -> float:
    env = TicTacToeEnv(opponent=opponent, agent_plays="both")
    rng = np.random.default_rng(0)
    state = {"info": env.reset(seed=0)[1]}

    def step() -> int:
        action = int(rng.choice(np.flatnonzero(state["info"]["action_mask"])))
        board_before = int(np.count_nonzero(env.board))
        _, _, terminated, truncated, state["info"] = env.step(action)
        plies = int(np.count_nonzero(env.board)) - board_before
        if terminated or truncated:
            state["info"] = env.reset()[1]
            plies = max(plies, 1) + int(np.count_nonzero(env.board))
        return plies

    plies, elapsed = _timed(step, seconds)
    return plies / elapsed


def plies_per_step(opponent: str, num_envs: int, device: str, steps: int = 200) -> float:
    """Marks placed per vector step (agent move, reply, the next opening's reply), measured."""
    env = TicTacToeVectorEnv(num_envs=num_envs, opponent=opponent, agent_plays="both", device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    obs, info = env.reset(seed=0)
    placed = 0
    for _ in range(steps):
        before = (obs != 0).sum(dim=1)
        obs, _, terminated, _, info = env.step(random_cells(info["action_mask"], generator))
        final = (info["final_obs"] != 0).sum(dim=1)
        placed += int((final - before).sum() + torch.where(terminated, (obs != 0).sum(dim=1), 0).sum())
    return placed / (steps * num_envs)


def vector_env_rate(opponent: str, num_envs: int, device: str, seconds: float) -> float:
    env = TicTacToeVectorEnv(num_envs=num_envs, opponent=opponent, agent_plays="both", device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    state = {"info": env.reset(seed=0)[1]}

    def step() -> int:
        state["info"] = env.step(random_cells(state["info"]["action_mask"], generator))[4]
        return 1

    for _ in range(5):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    steps, elapsed = _timed(step, seconds)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        elapsed = max(elapsed, 1e-9)
    return steps * num_envs * plies_per_step(opponent, min(num_envs, 4096), device) / elapsed


def pettingzoo_rate(seconds: float) -> float | None:
    try:
        from pettingzoo.classic import tictactoe_v3
    except ImportError:
        return None
    env = tictactoe_v3.env()
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def step() -> int:
        observation, _, terminated, truncated, _ = env.last()
        if terminated or truncated:
            env.reset()
            return 0
        env.step(int(rng.choice(np.flatnonzero(observation["action_mask"]))))
        return 1

    plies, elapsed = _timed(step, seconds)
    return plies / elapsed


def openspiel_rate(seconds: float) -> float | None:
    try:
        import pyspiel
    except ImportError:
        return None
    game = pyspiel.load_game("tic_tac_toe")
    chooser = random.Random(0)
    state = {"state": game.new_initial_state()}

    def step() -> int:
        current = state["state"]
        if current.is_terminal():
            state["state"] = game.new_initial_state()
            return 0
        current.apply_action(chooser.choice(current.legal_actions()))
        return 1

    plies, elapsed = _timed(step, seconds)
    return plies / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 4096, 65536])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    baselines = {"PettingZoo tictactoe_v3": pettingzoo_rate(args.seconds)}
    baselines["OpenSpiel tic_tac_toe"] = openspiel_rate(args.seconds)
    rows: list[tuple[str, float]] = [(name, rate) for name, rate in baselines.items() if rate is not None]
    for name, rate in baselines.items():
        if rate is None:
            print(f"{name}: not installed, left out")
    for opponent in ("random", "perfect"):
        rows.append((f"single env, {opponent}", single_env_rate(opponent, args.seconds)))
        for batch in args.batches:
            rate = vector_env_rate(opponent, batch, args.device, args.seconds)
            rows.append((f"vector B={batch}, {opponent}", rate))
    pettingzoo, openspiel = baselines.values()
    header = f"{'env':<32}{'plies/s':>14}"
    header += f"{'x PettingZoo':>14}" if pettingzoo else ""
    header += f"{'x OpenSpiel':>13}" if openspiel else ""
    print(header)
    for name, rate in rows:
        line = f"{name:<32}{rate:>14,.0f}"
        line += f"{rate / pettingzoo:>14,.1f}" if pettingzoo else ""
        line += f"{rate / openspiel:>13,.1f}" if openspiel else ""
        print(line)
    rates = dict(rows)
    for batch in args.batches:
        ratio = rates[f"vector B={batch}, random"] / rates[f"vector B={batch}, perfect"]
        print(f"B={batch}: random / perfect opponent {ratio:.2f}x (target at most 1.5x)")


if __name__ == "__main__":
    main()
