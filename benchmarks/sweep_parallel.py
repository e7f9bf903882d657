"""A 2 x 3 sweep (agent x seed) on Tic-Tac-Toe, jobs two at a time against one at a time.

Runs the same Hydra multirun twice: with the joblib launcher (``n_jobs`` jobs at once, each
with its share of the cores: ``agents/run/jobs.py``) and with Hydra's basic launcher (one job
after the other, every core each). Prints both wall times and their ratio, then the summary of
the parallel sweep (``agents.summarize``) and writes its learning-curve PNG.

    python -m benchmarks.sweep_parallel                         # 2 agents x 3 seeds, 200k steps each
    python -m benchmarks.sweep_parallel --steps 2000 --seeds 0  # smoke
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(out: Path, launcher: list[str], args: argparse.Namespace) -> float:
    """Run the sweep into ``out``; returns its wall time in seconds."""
    command = [
        sys.executable,
        "-m",
        "agents.train",
        "-m",
        *launcher,
        "env=tictactoe",
        f"agent={','.join(args.agents)}",
        f"seed={','.join(str(s) for s in args.seeds)}",
        f"train.total_env_steps={args.steps}",
        "train.progress=false",
        f"env.evaluation.episodes={args.episodes}",
        f"hydra.sweep.dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sweep failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=["ppo", "qlearning"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200_000, help="train.total_env_steps per job")
    parser.add_argument("--episodes", type=int, default=1000, help="evaluation episodes per setting")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once in the parallel sweep")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here (default: a temp dir)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="sweep_parallel_"))
    work.mkdir(parents=True, exist_ok=True)
    parallel = sweep(work / "parallel", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"], args)
    sequential = sweep(work / "sequential", ["hydra/launcher=basic"], args)
    jobs = len(args.agents) * len(args.seeds)
    print(f"{jobs} jobs of {args.steps} env steps on {os.cpu_count()} cores")
    print(f"  one at a time (basic launcher): {sequential:.0f} s")
    print(f"  {args.jobs} at a time (joblib):        {parallel:.0f} s")
    print(f"  ratio sequential / parallel: {sequential / parallel:.2f}")
    from agents.summarize import main as summarize

    summarize([str(work / "parallel"), "--png", str(work / "parallel_curves.png")])
    print(f"learning curves: {work / 'parallel_curves.png'}")


if __name__ == "__main__":
    main()
