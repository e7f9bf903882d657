"""Kill a real training run with a signal at random points, resume it, compare with a run never killed.

For each agent and each signal (SIGTERM, SIGINT, SIGKILL) and each of ``--points`` kill
points: start ``python -m agents.train`` in a subprocess, wait a random time after its first
checkpoint, send the signal, then resume the run from its directory with ``resume=`` and let
it finish. The finished run must equal the uninterrupted run of the same config: every tensor
of the final checkpoint (weights, optimizer moments, replay buffer, env and RNG state) bit for
bit, the counters, ``metrics.json`` (timings aside) and every scalar logged to TensorBoard.

    python -m benchmarks.kill_resume --agents ppo qlearning --points 3
    python -m benchmarks.kill_resume --agents ppo -- env=gym env.id=CartPole-v1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}
BASE = [
    "num_envs=8",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=2",
    "train.progress=false",
    "train.torch_threads=1",
    "env.evaluation.episodes=20",
    "env.evaluation.num_envs=10",
]
AGENT_ARGS = {
    "ppo": ["agent=ppo", "agent.rollout_steps=16", "train.total_env_steps=6144"],
    "qlearning": [
        "agent=qlearning",
        "agent.rollout_steps=4",
        "agent.learning_starts=64",
        "agent.batch_size=32",
        "train.total_env_steps=6144",
    ],
    "qlearning_tabular": ["agent=qlearning_tabular", "agent.rollout_steps=4", "train.total_env_steps=6144"],
}


@dataclass
class Outcome:
    agent: str
    signal: str
    delay: float
    killed_at_update: int | None  # the update of the checkpoint the run resumed from
    exit_code: int
    identical: bool
    problems: list[str]


def _train(args: list[str], run_dir: Path, **popen: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "agents.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _finish(process: subprocess.Popen, what: str, timeout: float = 600) -> int:
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0 and what:
        raise RuntimeError(f"{what} failed with exit code {process.returncode}:\n{err[-3000:]}")
    return int(process.returncode)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for index, item in enumerate(value):
            out |= _flat(item, f"{prefix}[{index}]")
        return out
    return {prefix: value}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def scalars(run_dir: Path, up_to: float = float("inf"), after: float = -1.0) -> dict[tuple[str, int], float]:
    """TensorBoard scalars of a run, ``perf/`` timings left out, by (tag, step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[tuple[str, int], float] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag.startswith("perf/"):
                continue
            for event in accumulator.Scalars(tag):
                if after < event.step <= up_to:
                    found[(tag, event.step)] = event.value
    return found


def compare(reference: Path, resumed: Path, killed: Path, resumed_step: int) -> list[str]:
    """Differences between an uninterrupted run and a killed-then-resumed one (empty: identical)."""
    from agents.run.checkpoint import load_checkpoint

    problems = []
    state_a, _ = load_checkpoint(reference)
    state_b, _ = load_checkpoint(resumed)
    flat_a, flat_b = _flat(state_a), _flat(state_b)
    skip = ("train_seconds",)
    for key in sorted(set(flat_a) | set(flat_b)):
        if any(s in key for s in skip):
            continue
        if key not in flat_a or key not in flat_b or not _same(flat_a[key], flat_b[key]):
            problems.append(f"checkpoint {key} differs")
    metrics_a = json.loads((reference / "metrics.json").read_text())
    metrics_b = json.loads((resumed / "metrics.json").read_text())
    for key in sorted(set(metrics_a) | set(metrics_b)):
        if not key.startswith("perf/train_seconds") and metrics_a.get(key) != metrics_b.get(key):
            problems.append(f"metrics.json {key}: {metrics_a.get(key)} vs {metrics_b.get(key)}")
    logged = scalars(killed, up_to=resumed_step) | scalars(resumed, after=resumed_step)
    expected = scalars(reference)
    if logged != expected:
        missing = sorted(set(expected) - set(logged))[:3]
        changed = sorted(k for k in expected if k in logged and logged[k] != expected[k])[:3]
        problems.append(f"logged scalars differ: missing {missing}, changed {changed}")
    return problems


def kill_and_resume(
    agent: str, signame: str, work: Path, reference: Path, extra: list[str], rng: random.Random, window: float
) -> Outcome:
    from agents.run.checkpoint import load_checkpoint

    args = [*BASE, *AGENT_ARGS[agent], *extra]
    killed = work / f"{agent}-{signame}-{rng.randrange(10**9)}"
    process = _train(args, killed)
    started = time.monotonic()
    while not (killed / "checkpoints" / "latest").exists():
        if process.poll() is not None or time.monotonic() - started > 300:
            _finish(process, "training before the kill")
            raise RuntimeError("training ended before its first checkpoint; give it more steps")
        time.sleep(0.02)
    delay = rng.uniform(0.0, window)
    time.sleep(delay)
    process.send_signal(SIGNALS[signame])
    code = _finish(process, "")
    out = killed.with_name(killed.name + "-resumed")
    state, _ = load_checkpoint(killed)
    resumed_step = int(state["trainer"]["env_steps"])
    _finish(_train([f"resume={killed}"], out), "the resumed run")
    problems = compare(reference, out, killed, resumed_step)
    if code == 0:
        problems.append("the signal came after the run had finished (no kill point)")
    expected_code = -signal.SIGKILL if signame == "SIGKILL" else 128 + SIGNALS[signame]
    if code not in (0, expected_code):
        problems.append(f"exit code {code}, expected {expected_code}")
    return Outcome(agent, signame, delay, int(state["trainer"]["updates"]), code, not problems, problems)


def run(agents: list[str], points: int, extra: list[str], seed: int, window: float) -> list[Outcome]:
    rng = random.Random(seed)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for agent in agents:
            reference = work / f"{agent}-reference"
            _finish(_train([*BASE, *AGENT_ARGS[agent], *extra], reference), "the reference run")
            for signame in SIGNALS:
                for _ in range(points):
                    outcomes.append(kill_and_resume(agent, signame, work, reference, extra, rng, window))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=["ppo", "qlearning"], choices=sorted(AGENT_ARGS))
    parser.add_argument("--points", type=int, default=3, help="kill points per agent and signal")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random kill times")
    parser.add_argument("--window", type=float, default=2.0, help="seconds after the first checkpoint")
    parser.add_argument("overrides", nargs="*", help="extra config overrides (after --)")
    args = parser.parse_args()
    outcomes = run(args.agents, args.points, args.overrides, args.seed, args.window)
    print(f"{'agent':<20}{'signal':<9}{'delay s':>8}{'resumed at':>12}{'exit':>6}  identical")
    for o in outcomes:
        print(
            f"{o.agent:<20}{o.signal:<9}{o.delay:>8.2f}{o.killed_at_update or 0:>12}{o.exit_code:>6}  "
            f"{'yes' if o.identical else 'NO: ' + '; '.join(o.problems)[:300]}"
        )
    same = sum(o.identical for o in outcomes)
    print(f"{same} of {len(outcomes)} kill points resumed identically")
    sys.exit(0 if same == len(outcomes) else 1)


if __name__ == "__main__":
    main()
