"""Env-stepped text rollouts against ``model.generate``: tokens/s, linearity, peak memory.

The env path is the training path itself: the text vector env (``conf/env/text.yaml``, the
sentiment prompts, a cheap word-count reward so that scoring costs next to nothing) stepped
by the :class:`~agents.collect.collector.RolloutCollector` with the PPO agent's LoRA
language model acting through its KV cache, every step's observation, log-prob and value
stored time-major. ``generate`` samples from the full distribution (``top_k=0``) of the same
model for exactly as many new tokens, from the same prompts (the env's first observation).
Rows that end early in the env (EOS) restart with a new prompt, as in training, so both paths
produce ``batch * new_tokens`` tokens.

Prints, per batch and length: tokens/s of each path and their ratio (target >= 1.0x
``generate``), how time grows with length (2x tokens: target at most 2.2x time), and the
peak resident memory of the process while each path runs (in a fresh child process each,
after a first run has made the memory-mapped weights resident), plus the parameter memory of
a LoRA-shared reference against two full copies.

    python -m benchmarks.text_rollout --batch 1 16 64 --new-tokens 24 48 96 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

import conf
from agents import train
from agents.networks.lm_core import unique_parameter_bytes

PATHS = ("generate", "env")


def make_pair(model: str, batch: int, new_tokens: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """(collector, agent, prompts) of the text env with ``batch`` rows and ``new_tokens`` per episode."""
    overrides = [
        "env=text",
        "agent=ppo",
        f"env.model={model}",
        f"num_envs={batch}",
        f"env.vector.max_new_tokens={new_tokens}",
        f"env.vector.window={new_tokens + 40}",
        "task.reward_fn=length",
        "env.vector.autoreset_mode=same_step",
        f"seed={seed}",
    ]
    with initialize_config_dir(config_dir=str(Path(conf.__file__).parent), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    env, agent = train.build(cfg, torch.device("cpu"))
    collector = train.make_collector(cfg, env, agent, seed=seed)
    obs = collector.obs
    used = obs["attention_mask"].bool().any(0).nonzero().flatten()
    start = int(used[0]) if used.numel() else obs["input_ids"].shape[1] - 1
    prompts = {key: obs[key][:, start:].clone() for key in ("input_ids", "attention_mask")}
    return collector, agent, prompts


@torch.no_grad()
def generate(agent: Any, prompts: dict[str, Tensor], new_tokens: int) -> Tensor:
    lm = agent.network.core.policy_lm
    output = lm.generate(
        **prompts,
        do_sample=True,
        top_k=0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=agent.network.core.pad_token_id,
    )
    return output[:, prompts["input_ids"].shape[1] :]


def env_rollout(collector: Any, new_tokens: int) -> Tensor:
    rollout, _ = collector.collect(new_tokens)
    return rollout.actions


def runners(model: str, batch: int, new_tokens: int) -> dict[str, Callable[[], Any]]:
    collector, agent, prompts = make_pair(model, batch, new_tokens)
    return {
        "generate": lambda: generate(agent, prompts, new_tokens),
        "env": lambda: env_rollout(collector, new_tokens),
    }


def timed(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall seconds of each run over ``repeats`` interleaved rounds (after one warm-up each)."""
    for run in runs.values():
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def probe(model: str, batch: int, new_tokens: int, path: str) -> dict[str, float]:
    """Peak resident memory of the process during a second run of ``path`` (after a first has
    made the memory-mapped weights resident), and how far above the resident memory before it.

    Where the peak mark cannot be reset (not Linux), the peak of the whole process is used, so
    the number is an upper bound that includes loading the model.
    """
    runs = runners(model, batch, new_tokens)
    runs[path]()  # the weights are memory-mapped: the first pass makes them resident
    resident = _status_mib("VmRSS")
    if not reset_peak() or resident is None:
        resident = 0.0
    runs[path]()
    peak = _status_mib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"resident_mib": resident, "peak_mib": peak, "added_mib": peak - resident}


def probe_in_child(
    model: str, batch: int, new_tokens: int, path: str, threads: int | None
) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.text_rollout", "--model", model, "--probe", path]
    command += ["--batch", str(batch), "--new-tokens", str(new_tokens)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def parameter_memory(model: str) -> list[tuple[str, float]]:
    from gymnasium import spaces

    from agents.networks.lm import LMActorCritic

    _, agent, _ = make_pair(model, 1, 4)
    vocab = agent.network.core.policy_lm.get_output_embeddings().weight.shape[0]
    box = spaces.Box(0, vocab - 1, shape=(8,), dtype="int64")
    full = LMActorCritic(
        spaces.Dict({"input_ids": box, "attention_mask": box}), spaces.Discrete(vocab), model=model, lora=None
    )
    shared = unique_parameter_bytes(agent.network)
    return [
        ("LoRA policy + reference (adapter off)", shared),
        ("full policy + frozen copy", unique_parameter_bytes(full)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[24, 48])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--probe", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name, values in (("--batch", args.batch), ("--new-tokens", args.new_tokens)):
        if min(values) < 1:
            raise SystemExit(f"{name} values must be at least 1, got {values}")
    if args.probe:
        print(json.dumps(probe(args.model, args.batch[0], args.new_tokens[0], args.probe)))
        return
    torch.manual_seed(0)
    lengths = sorted(set(args.new_tokens))
    seconds: dict[tuple[int, int], dict[str, float]] = {}
    for batch in args.batch:
        for new_tokens in lengths:
            seconds[batch, new_tokens] = timed(runners(args.model, batch, new_tokens), args.repeats)
            times = ", ".join(f"{name} {value:.2f} s" for name, value in seconds[batch, new_tokens].items())
            print(f"# batch {batch}, {new_tokens} new tokens: {times}", flush=True)
    print(f"\nmodel={args.model} threads={torch.get_num_threads()} repeats={args.repeats} (best wall time)")
    print("\n| batch | new tokens | generate tok/s | env tok/s | env / generate |")
    print("|---|---|---|---|---|")
    for (batch, new_tokens), best in seconds.items():
        rates = {name: batch * new_tokens / value for name, value in best.items()}
        print(
            f"| {batch} | {new_tokens} | {rates['generate']:.1f} | {rates['env']:.1f} "
            f"| {rates['env'] / rates['generate']:.2f}x |"
        )
    print("\n| batch | tokens | env time ratio | generate time ratio |\n|---|---|---|---|")
    for batch in args.batch:
        for short, long in zip(lengths, lengths[1:], strict=False):
            ratio = {name: seconds[batch, long][name] / seconds[batch, short][name] for name in PATHS}
            print(f"| {batch} | {long} / {short} | {ratio['env']:.2f}x | {ratio['generate']:.2f}x |")
    if not args.no_memory:
        print(
            f"\nPeak resident memory of the process during a run, {lengths[-1]} new tokens "
            "(MiB, weights included):"
        )
        print("\n| batch | generate | env |\n|---|---|---|")
        for batch in args.batch:
            added = {
                path: probe_in_child(args.model, batch, lengths[-1], path, args.threads)["peak_mib"]
                for path in PATHS
            }
            print(f"| {batch} | {added['generate']:.0f} | {added['env']:.0f} |")
    print("\n| parameters in memory | MiB | ratio |\n|---|---|---|")
    memory = parameter_memory(args.model)
    for name, size in memory:
        print(f"| {name} | {size / 2**20:.1f} | {size / memory[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
