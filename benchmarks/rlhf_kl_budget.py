"""Held-out VADER gain against KL to the base model, in a fixed wall-time budget.

The measurement of the RLHF issue: SmolLM2-135M-Instruct with LoRA, reward = VADER compound of
the completion, 32 new tokens. Held-out prompts: the first 6 words of the Rotten Tomatoes
``fresh``/``rotten`` snippets after ``random.seed(0); random.shuffle(rows)``, the last 64;
training prompts: the rest. Each variant trains ``python -m agents.train env=text agent=ppo``
for ``--minutes`` of training time, then the saved policy samples one completion per held-out
prompt at temperature 1 (the same seed before and after), scored by VADER, with the KL to the
base model summed over each sampled completion (k1, nats per completion), and its length.

    python -m benchmarks.rlhf_kl_budget --targets 1 --minutes 10.5
    python -m benchmarks.rlhf_kl_budget --targets 0.5 1 2 4 --variants gae grpo
    python -m benchmarks.rlhf_kl_budget --model tiny --minutes 0.2 --targets 1   # smoke
    python -m benchmarks.rlhf_kl_budget --bound 16 --targets 0.5 1 2   # what the optimum gains
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "gae": [],
    "gae_dense": ["env.vector.reward_shaping=potential"],
    "grpo": ["agent.advantage=grpo", "agent.group_size=4"],
    "rloo": ["agent.advantage=rloo", "agent.group_size=4"],
}


def prompt_split(num_words: int = 6, heldout: int = 64) -> tuple[list[str], list[str]]:
    """(train, held-out) prompts as the issue defines them."""
    from rlenv.text.prompts import _review_snippets

    rows = list(_review_snippets())
    random.seed(0)
    random.shuffle(rows)
    prompts = [" ".join(row.split()[:num_words]) for row in rows]
    return prompts[:-heldout], prompts[-heldout:]


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def _base_network(model: str, tokenizer):
    import gymnasium

    from agents.networks.lm import LMActorCritic

    spaces = gymnasium.spaces.Dict(
        {
            "input_ids": gymnasium.spaces.Box(0, len(tokenizer) - 1, (96,), dtype="int64"),
            "attention_mask": gymnasium.spaces.Box(0, 1, (96,), dtype="int64"),
        }
    )
    return LMActorCritic(spaces, gymnasium.spaces.Discrete(len(tokenizer)), model=model)


def _sample(network, tokenizer, prompts: list[str], new_tokens: int, batch_size: int, seed: int):
    from agents.rlhf import sample_and_measure

    core = network.core
    return sample_and_measure(
        core.policy_lm,
        lambda: core.using(reference=True),
        tokenizer,
        prompts,
        max_new_tokens=new_tokens,
        batch_size=batch_size,
        seed=seed,
    )


def evaluate(run_dir: Path | None, model: str, prompts: list[str], new_tokens: int, seed: int) -> dict:
    """Sampled completions of ``prompts`` (temperature 1) from the run's policy (base if None)."""
    import torch

    from agents import load_agent
    from rlenv.text.tokenizers import load_tokenizer

    torch.set_num_threads(2)
    tokenizer = load_tokenizer(model)
    network = _base_network(model, tokenizer) if run_dir is None else load_agent(run_dir).network
    completions, kls, lengths = _sample(network, tokenizer, prompts, new_tokens, 32, seed)
    return report(prompts, completions, kls, lengths)


def tilted_gains(scores, targets: list[float]) -> dict[float, tuple[float, float]]:
    """What the best policy could gain at each KL, per prompt, on the base model's samples.

    ``scores`` (prompts, n): n base-model samples per prompt. The KL-regularised optimum is the
    base distribution tilted by ``exp(score / beta)``; over the n samples its weights are a
    softmax of ``score / beta`` and its KL to the base ``sum w log(n w)``. For each target KL
    (nats per completion) ``1/beta`` is found by bisection; returns ``{target: (gain, kl)}``,
    the gain of the tilted mean score over the base mean (an estimate from n samples: at most
    ``log n`` nats can be reached).
    """
    import torch

    n = scores.shape[1]

    def at(inverse_beta: float) -> tuple[float, float]:
        weights = torch.softmax(scores * inverse_beta, dim=1)
        kl = float((weights * torch.log(weights * n + 1e-30)).sum(dim=1).mean())
        return float((weights * scores).sum(dim=1).mean() - scores.mean()), kl

    out = {}
    for target in targets:
        low, high = 0.0, 1000.0
        if at(high)[1] < target:
            out[target] = at(high)
            continue
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if at(middle)[1] < target else (low, middle)
        out[target] = at(high)
    return out


def bound(
    model: str, prompts: list[str], new_tokens: int, samples: int, seed: int, targets: list[float]
) -> None:
    """Print the tilted optimum's gain at each target KL, and best-of-n, from ``samples``
    base-model completions per held-out prompt."""
    import math

    import torch

    from rlenv.text.scores import SCORES
    from rlenv.text.tokenizers import load_tokenizer

    torch.set_num_threads(2)
    tokenizer = load_tokenizer(model)
    network = _base_network(model, tokenizer)
    completions, _, _ = _sample(network, tokenizer, prompts * samples, new_tokens, 64, seed)
    scores = torch.as_tensor(SCORES["sentiment"].fn(completions), dtype=torch.float32)
    scores = scores.view(samples, len(prompts)).T  # (prompts, samples)
    print(f"base samples: {samples} per prompt, mean VADER {scores.mean():.3f}, std {scores.std():.3f}")
    for target, (gain, kl) in tilted_gains(scores, targets).items():
        print(f"tilted optimum at KL {target:g}: gain {gain:+.3f} (KL {kl:.2f})")
    for n in (2, 4, 6, 8, 16, 32):
        if n <= samples:
            gain = float(scores[:, :n].max(dim=1).values.mean() - scores.mean())
            print(f"best-of-{n}: KL {math.log(n) - (n - 1) / n:.2f}, gain {gain:+.3f}")


def report(prompts: list[str], completions: list[str], kls: list[float], lengths: list[float]) -> dict:
    """Mean VADER, KL and length of sampled completions, and a few samples."""
    from rlenv.text.scores import SCORES

    scores = SCORES["sentiment"].fn(completions).tolist()
    return {
        "vader": float(sum(scores) / len(scores)),
        "kl": float(sum(kls) / len(kls)),
        "length": float(sum(lengths) / len(lengths)),
        "samples": [f"{p} | {c}" for p, c in zip(prompts[:4], completions[:4], strict=True)],
    }


def train(run_dir: Path, args: argparse.Namespace, target: float, variant: str, train_file: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "agents.train",
        "env=text",
        "agent=ppo",
        f"env.model={args.model}",
        f"env.vector.prompts={train_file}",
        "env.vector.reward_fn=sentiment",
        f"env.vector.max_new_tokens={args.new_tokens}",
        f"agent.kl.target={target}",
        f"train.max_seconds={args.minutes * 60}",
        "train.total_env_steps=1e9",
        "train.progress=false",
        "env.evaluation.episodes=4",
        "env.evaluation.num_envs=4",
        f"hydra.run.dir={run_dir}",
        *VARIANTS[variant],
        *args.overrides,
    ]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def training_kl(run_dir: Path, target: float) -> dict[str, float]:
    """The per-update training KL (``charts/kl``) after warm-up, the updates until it first
    reached the +-25 % band of ``target`` (``warm_up``): its mean, range and the share of
    those updates within the band."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    values = [event.value for event in events.Scalars("charts/kl")]
    warm_up = next((i for i, v in enumerate(values) if v >= 0.75 * target), len(values))
    held = values[warm_up:]
    if not held:
        nan = float("nan")
        return {"warm_up": float(warm_up), "mean": nan, "low": nan, "high": nan, "within": nan}
    within = sum(abs(v / target - 1) <= 0.25 for v in held) / len(held)
    return {
        "warm_up": float(warm_up),
        "mean": sum(held) / len(held),
        "low": min(held),
        "high": max(held),
        "within": within,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[1.0], help="agent.kl.target values")
    parser.add_argument("--variants", nargs="+", default=["gae"], choices=sorted(VARIANTS))
    parser.add_argument("--minutes", type=float, default=10.5, help="training time per run")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument(
        "--bound",
        type=int,
        default=0,
        metavar="N",
        help="instead of training: N base samples per held-out prompt, and the gain of the tilted "
        "optimum at each --targets KL (what any policy could reach there) and of best-of-n "
        "(sampling seed --seed + 1)",
    )
    parser.add_argument("overrides", nargs="*", help="extra overrides for agents.train (after --)")
    args = parser.parse_args()
    train_prompts, heldout = prompt_split()
    if args.bound:
        bound(args.model, heldout, args.new_tokens, args.bound, args.seed + 1, args.targets)
        return
    work = args.out or Path(tempfile.mkdtemp(prefix="rlhf_kl_"))
    work.mkdir(parents=True, exist_ok=True)
    train_file = write_prompts(work / "train_prompts.jsonl", train_prompts)
    before = evaluate(None, args.model, heldout, args.new_tokens, args.seed)
    print(f"base policy: held-out VADER {before['vader']:.3f}, length {before['length']:.1f}")
    rows = []
    for variant in args.variants:
        for target in args.targets:
            run_dir = work / f"{variant}_kl{target:g}"
            seconds = train(run_dir, args, target, variant, train_file)
            after = evaluate(run_dir, args.model, heldout, args.new_tokens, args.seed)
            updates = json.loads((run_dir / "metrics.json").read_text())["perf/env_steps"]
            held = training_kl(run_dir, target)
            rows.append((variant, target, after, seconds, updates, held))
            print(
                f"{variant:<6} target {target:<4g} VADER {before['vader']:.3f} -> {after['vader']:.3f} "
                f"({after['vader'] - before['vader']:+.3f}), KL {after['kl']:.2f}, "
                f"length {after['length']:.1f}, {seconds / 60:.1f} min wall, {updates:.0f} tokens trained; "
                f"training KL after {held['warm_up']:.0f} warm-up updates: mean {held['mean']:.2f}, "
                f"{held['low']:.2f}-{held['high']:.2f}, "
                f"{held['within']:.0%} of updates within +-25 %",
                flush=True,
            )
            for sample in after["samples"]:
                print(f"    {sample!r}")
    print(f"\n{'variant':<8}{'target':>7}{'VADER gain':>12}{'KL':>8}{'train KL':>10}{'length':>8}")
    for variant, target, after, _, _, held in rows:
        gain = after["vader"] - before["vader"]
        line = f"{variant:<8}{target:>7g}{gain:>+12.3f}{after['kl']:>8.2f}{held['mean']:>10.2f}"
        print(line + f"{after['length']:>8.1f}")


if __name__ == "__main__":
    main()
