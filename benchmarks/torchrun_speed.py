"""Data-parallel training: ``torchrun`` with N processes against one process, the same run.

Trains the same config (same total ``num_envs`` and env steps) once in one process and once
under ``torchrun --nproc_per_node=N`` (each process steps ``num_envs / N`` envs, one thread
each), then prints each run's env steps per second of training (``perf/env_steps`` over
``perf/train_seconds`` of ``metrics.json``; start-up and the final evaluation excluded), their
ratio and both evaluations.

    python -m benchmarks.torchrun_speed                                       # PPO, Tic-Tac-Toe
    python -m benchmarks.torchrun_speed -- agent=qlearning                    # DQN
    python -m benchmarks.torchrun_speed --steps 2048 -- agent.rollout_steps=16  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, processes: int, args: argparse.Namespace) -> dict[str, float]:
    """One training run into ``out``; its ``metrics.json``."""
    launch = [sys.executable, "-m"]
    if processes > 1:
        launch += ["torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m"]
    command = [
        *launch,
        "agents.train",
        f"env={args.env}",
        f"num_envs={args.num_envs}",
        f"train.total_env_steps={args.steps}",
        "train.torch_threads=1",
        "train.progress=false",
        f"hydra.run.dir={out}",
        *args.overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="tictactoe")
    parser.add_argument("--num-envs", type=int, default=128, help="envs in all (split over the processes)")
    parser.add_argument("--steps", type=int, default=500_000, help="train.total_env_steps")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs (after --)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="torchrun_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    rates = {}
    for processes in (1, args.processes):
        metrics = train(work / f"procs{processes}", processes, args)
        rates[processes] = metrics["perf/env_steps"] / metrics["perf/train_seconds"]
        evaluation = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("eval/")}
        shown = {k: round(v, 3) for k, v in evaluation.items() if k.endswith(("win_rate", "return_mean"))}
        print(
            f"{processes} process(es): {metrics['perf/env_steps']:.0f} env steps in "
            f"{metrics['perf/train_seconds']:.1f} s = {rates[processes]:.0f} steps/s; {shown}"
        )
    ratio = rates[args.processes] / rates[1]
    print(f"ratio {args.processes} processes / 1: {ratio:.2f} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
