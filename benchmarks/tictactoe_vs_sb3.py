"""Time to 95 % wins as X against random: our PPO preset against Stable-Baselines3 MaskablePPO.

    python -m benchmarks.tictactoe_vs_sb3                     # threshold 0.95, up to 600 s each
    python -m benchmarks.tictactoe_vs_sb3 --seeds 0 1 2 --threshold 0.9

Both learners train on the same Tic-Tac-Toe game: the opponents, roles and exploring starts of
our preset (``conf/preset/tictactoe_ppo.yaml``). Ours runs as ``agents.train`` would run it
(the vector env, the collector and the preset's agent); MaskablePPO (sb3-contrib, its default
settings) runs on the single-board :class:`rlenv.tictactoe.env.TicTacToeEnv` with its legal-move
mask. Every ``--check-every`` seconds of training the clock stops and the deterministic policy
plays ``--games`` games as X against the uniform random opponent (the same evaluation code for
both); the first check at or above ``--threshold`` gives the time to threshold. Training time
excludes the checks. Both use one torch thread. Needs ``pip install sb3-contrib`` (its row is
skipped otherwise).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import conf
from agents import train
from agents.evaluate import play_episodes
from rlenv.tictactoe.env import TicTacToeEnv
from rlenv.tictactoe.vector_env import TicTacToeVectorEnv

ENV_KEYS = ("agent_plays", "opponent", "random_opening_plies", "illegal_move")


class Clock:
    """Training seconds with the checks left out, and the first time a check reached the threshold."""

    def __init__(self, check: Callable[[], float], every: float, threshold: float, max_seconds: float):
        self.check, self.every, self.threshold, self.max_seconds = check, every, threshold, max_seconds
        self.trained = 0.0
        self.started = time.perf_counter()
        self.next_check = every
        self.reached: float | None = None
        self.history: list[tuple[float, float]] = []

    def tick(self) -> bool:
        """Account the time since the last tick; run a check when due. True: stop training."""
        now = time.perf_counter()
        self.trained += now - self.started
        if self.trained >= self.next_check:
            win_rate = self.check()
            self.history.append((self.trained, win_rate))
            self.next_check = self.trained + self.every
            if win_rate >= self.threshold:
                self.reached = self.trained
        self.started = time.perf_counter()
        return self.reached is not None or self.trained >= self.max_seconds


def win_rate_as_x(act: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], games: int, seed: int) -> float:
    """Win rate of the deterministic policy ``act(obs, mask)`` as X against the random opponent."""

    class Policy:
        device = torch.device("cpu")

        def act(self, obs: Any, mask: Any, deterministic: bool = True) -> torch.Tensor:
            return act(obs, mask)

    env = TicTacToeVectorEnv(num_envs=min(games, 1000), agent_plays="x", opponent="random")
    return play_episodes(Policy(), env, games, seed=seed)["win_rate"]


def preset_config(seed: int) -> Any:
    with initialize_config_dir(config_dir=str(Path(conf.__file__).parent), version_base="1.3"):
        return compose(
            "config", overrides=["env=tictactoe", "agent=ppo", f"seed={seed}", "train.progress=false"]
        )


def time_ours(cfg: Any, args: argparse.Namespace) -> tuple[Clock, int]:
    train.seed_everything(int(cfg.seed))
    env, agent = train.build(cfg, torch.device("cpu"))
    collector = train.make_collector(cfg, env, agent)

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return agent.act(obs, mask, deterministic=True)

    clock = Clock(
        lambda: win_rate_as_x(act, args.games, args.eval_seed),
        args.check_every,
        args.threshold,
        args.max_seconds,
    )
    steps = 0
    while True:
        rollout, _ = collector.collect(agent.rollout_steps)
        agent.learn(rollout)
        steps += rollout.num_valid
        if clock.tick():
            break
    env.close()
    return clock, steps


class MaskedBoard(gymnasium.Wrapper):
    """The single-board env with ``action_masks()``, which MaskablePPO asks for before each step."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.mask = info["action_mask"].astype(bool)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.mask = info["action_mask"].astype(bool)
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.mask


def time_sb3(env_kwargs: dict[str, Any], seed: int, args: argparse.Namespace) -> tuple[Clock, int] | None:
    try:
        from sb3_contrib import MaskablePPO
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError:
        return None
    env = MaskedBoard(TicTacToeEnv(**env_kwargs))
    model = MaskablePPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        actions, _ = model.predict(obs.numpy(), action_masks=mask.numpy(), deterministic=True)
        return torch.as_tensor(actions, dtype=torch.long)

    clock = Clock(
        lambda: win_rate_as_x(act, args.games, args.eval_seed),
        args.check_every,
        args.threshold,
        args.max_seconds,
    )

    class Checks(BaseCallback):
        def _on_step(self) -> bool:
            return not clock.tick()

    clock.started = time.perf_counter()
    model.learn(total_timesteps=10**9, callback=Checks())
    return clock, int(model.num_timesteps)


def describe(name: str, seed: int, result: tuple[Clock, int] | None) -> tuple[str, float | None]:
    if result is None:
        return f"{name:<22}{seed:>5}   not installed (pip install sb3-contrib)", None
    clock, steps = result
    reached = clock.reached
    when = f"{reached:>10.1f}" if reached is not None else f"{'>' + format(clock.trained, '.0f'):>10}"
    best = max((rate for _, rate in clock.history), default=float("nan"))
    rate = steps / max(clock.trained, 1e-9)
    line = f"{name:<22}{seed:>5}{when}{steps:>12,}{rate:>12,.0f}{100 * best:>10.2f}"
    return line, reached


def main(argv: list[str] | None = None) -> dict[str, list[float | None]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threshold", type=float, default=0.95, help="win rate as X against random")
    parser.add_argument("--games", type=int, default=2000, help="games per check")
    parser.add_argument("--check-every", type=float, default=2.0, help="training seconds between checks")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="training seconds before giving up")
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"time to {100 * args.threshold:.0f} % wins as X against random ({args.games} games per check)")
    header = f"{'learner':<22}{'seed':>5}{'train s':>10}{'env steps':>12}{'steps/s':>12}{'best %':>10}"
    print(header + "\n" + "-" * len(header))
    times: dict[str, list[float | None]] = {"ours": [], "sb3": []}
    for seed in args.seeds:
        cfg = preset_config(seed)
        vector = OmegaConf.to_container(cfg.env.vector, resolve=True)
        env_kwargs = {key: vector[key] for key in ENV_KEYS if key in vector}
        line, reached = describe("rlenv PPO (preset)", seed, time_ours(cfg, args))
        print(line, flush=True)
        times["ours"].append(reached)
        if not args.skip_sb3:
            line, reached = describe("SB3 MaskablePPO", seed, time_sb3(env_kwargs, seed, args))
            print(line, flush=True)
            times["sb3"].append(reached)
    pairs = [(o, s) for o, s in zip(times["ours"], times["sb3"], strict=False) if o and s]
    if pairs:
        ratios = [s / o for o, s in pairs]
        print(f"\nSB3 time / our time: {', '.join(f'{r:.1f}x' for r in ratios)}")
    return times


if __name__ == "__main__":
    main()
