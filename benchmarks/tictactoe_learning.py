"""Train each agent on Tic-Tac-Toe with its default config and compare with the exact limits.

    python -m benchmarks.tictactoe_learning                       # ppo, qlearning, qlearning_tabular
    python -m benchmarks.tictactoe_learning --agents ppo --seeds 0 1 2 -- agent.optimizer.lr=1e-3

Prints, per agent and seed, the deterministic policy's win/draw/loss rates over 10,000
games per setting, the wall time of training, and whether the targets are met:
as X vs random >= 99 % wins and 0 losses; as O vs random >= 90 % wins and 0 losses;
vs the perfect opponent 0 losses as X and as O.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

import conf
from agents import train

# Exact values for a loss-free policy that maximises wins against the uniform random opponent.
LIMITS = {"random_as_x": 99.48, "random_as_o": 91.64, "perfect_as_x": 0.0, "perfect_as_o": 0.0}


def targets_met(metrics: dict[str, float]) -> bool:
    def rate(setting: str, name: str) -> float:
        return metrics[f"eval/{setting}/{name}"]

    no_losses = all(rate(s, "losses") == 0 for s in LIMITS)
    return no_losses and rate("random_as_x", "win_rate") >= 0.99 and rate("random_as_o", "win_rate") >= 0.90


def run_one(agent: str, seed: int, overrides: list[str], out_dir: Path) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(Path(conf.__file__).parent), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"agent={agent}", f"seed={seed}", "train.progress=false", *overrides]
        )
    started = time.perf_counter()
    metrics = train.run(cfg, out_dir / f"{agent}_seed{seed}")
    metrics["wall_seconds"] = time.perf_counter() - started
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", nargs="+", default=["ppo", "qlearning", "qlearning_tabular"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=None, help="run directories (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    args = parser.parse_args()
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="ttt_learning_"))
    rows = []
    for agent in args.agents:
        for seed in args.seeds:
            rows.append((agent, seed, run_one(agent, seed, args.overrides, out_dir)))
    header = f"{'agent':<18}{'seed':>5}" + "".join(f"{s:>22}" for s in LIMITS) + f"{'train s':>9}{'met':>5}"
    print("\nwin% / loss% of the deterministic policy over 10,000 games per setting")
    print(header)
    print("-" * len(header))
    limit_row = f"{'exact limit':<18}{'':>5}" + "".join(f"{f'{v:.2f} / 0.00':>22}" for v in LIMITS.values())
    print(limit_row)
    for agent, seed, m in rows:
        cells = "".join(
            f"{100 * m[f'eval/{s}/win_rate']:>13.2f} / {100 * m[f'eval/{s}/loss_rate']:>5.2f}" for s in LIMITS
        )
        met = "yes" if targets_met(m) else "no"
        print(f"{agent:<18}{seed:>5}{cells}{m['perf/train_seconds']:>9.0f}{met:>5}")
    print(f"\nrun directories: {out_dir}")


if __name__ == "__main__":
    main()
