"""Train PPO and DQN on any Gymnasium env with the defaults for generic envs (env=gym), several seeds.

    python -m benchmarks.gym_learning              # CartPole-v1, ppo and qlearning, seeds 0 1 2
    python -m benchmarks.gym_learning --env Acrobot-v1 --agents ppo --steps 200000 -- agent.entropy_coef=0

Each run is ``python -m agents.train env=gym env.id=<env> agent=<agent> seed=<s>
train.total_env_steps=<steps>`` in its own process and run directory. Prints, per agent and
seed, the deterministic policy's evaluation return (mean and standard deviation over
``env.evaluation.episodes`` episodes), the training wall time and env steps per second, then
the mean over seeds against ``--target`` (CleanRL reports 490.04 +- 6.12 for PPO and
488.69 +- 16.11 for DQN on CartPole-v1 after 500k steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_once(env_id: str, agent: str, seed: int, steps: int, extra: list[str], root: Path) -> dict:
    run_dir = root / f"{agent}_seed{seed}"
    command = [
        sys.executable,
        "-m",
        "agents.train",
        "env=gym",
        f"env.id={env_id}",
        f"agent={agent}",
        f"seed={seed}",
        f"train.total_env_steps={steps}",
        "train.progress=false",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "agent": agent,
        "seed": seed,
        "return_mean": metrics["eval/default/return_mean"],
        "return_std": metrics["eval/default/return_std"],
        "train_seconds": metrics["perf/train_seconds"],
        "steps_per_second": metrics["perf/env_steps"] / metrics["perf/train_seconds"],
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--agents", nargs="+", default=["ppo", "qlearning"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--target", type=float, default=475.0, help="mean evaluation return to reach")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        print(f"{args.env}, {args.steps:,} env steps per run")
        print(f"{'agent':<12}{'seed':>5}{'return':>10}{'± std':>9}{'train s':>10}{'steps/s':>10}")
        for agent in args.agents:
            for seed in args.seeds:
                row = train_once(args.env, agent, seed, args.steps, args.overrides, Path(root))
                rows.append(row)
                print(
                    f"{agent:<12}{seed:>5}{row['return_mean']:>10.1f}{row['return_std']:>9.1f}"
                    f"{row['train_seconds']:>10.0f}{row['steps_per_second']:>10.0f}",
                    flush=True,
                )
    print()
    for agent in args.agents:
        means = [row["return_mean"] for row in rows if row["agent"] == agent]
        mean = statistics.fmean(means)
        spread = statistics.pstdev(means) if len(means) > 1 else 0.0
        verdict = "met" if mean >= args.target else "NOT met"
        print(
            f"{agent:<12} mean over {len(means)} seeds {mean:7.1f} ± {spread:5.1f}, "
            f"target {args.target}: {verdict}"
        )


if __name__ == "__main__":
    main()
