"""Deployment optimizations of a fine-tuned policy, side by side: size, speed, score, KL.

Exports the run's policy merged in float (the baseline) and with each compression asked for
(``agents.export``: ``quantize=int8``, ``prune=<fraction>``, both), adds any model
directories given with ``--models`` (a distilled student of ``agents.distill``, say), and for
each prints:

- size on disk of its weight files, and its ratio to the baseline (an int8 export is measured
  twice: loaded dequantized, the default, and with torch's int8 kernels);
- sampling tokens/s (``model.generate`` through ``rlenv.feedback.generate``, one batch of
  held-out prompts, a fixed number of new tokens, best of ``--repeats`` interleaved rounds),
  and its ratio to the baseline measured in the same rounds;
- the task's held-out labeler score of its completions (same prompts and sampling seed);
- KL(baseline || model) in nats per completion, estimated on the baseline's own samples
  (``sum_t log p_base(y_t) - log p_model(y_t)``), and the perplexity of the model on them.

    python -m benchmarks.deploy --run <text or rlhf run dir> --prune 0.3 0.5 --models <student dir>
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import export
from rlenv.feedback.collect import select_prompts
from rlenv.feedback.generate import response_log_probs, sample_completions
from rlenv.text.compress import load_int8
from rlenv.text.models import load_causal_lm
from rlenv.text.tokenizers import load_tokenizer

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def size_on_disk(directory: Path) -> int:
    """Bytes of the weight files in ``directory``."""
    return sum(p.stat().st_size for p in directory.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))


def variants(run: Path, workdir: Path, prunes: list[float], models: list[str]) -> dict[str, Path]:
    """Name -> model directory: the float baseline, the compressed exports, the given models."""
    found = {"merged float32": export.export(run, workdir / "merged", "merged")}
    found["int8"] = export.export(run, workdir / "int8", "merged", quantize="int8")
    for fraction in prunes:
        found[f"pruned {fraction:g}"] = export.export(
            run, workdir / f"prune{fraction:g}", "merged", prune=fraction
        )
        found[f"pruned {fraction:g} + int8"] = export.export(
            run, workdir / f"prune{fraction:g}_int8", "merged", quantize="int8", prune=fraction
        )
    for k, model in enumerate(models):
        found[f"model {Path(model).name}"] = Path(model)
        found[f"model {Path(model).name} + int8"] = export.export(
            model, workdir / f"model{k}_int8", "merged", quantize="int8"
        )
    return found


def tokens_per_second(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int) -> float:
    """Generated tokens per second for one batch (EOS stops a row early; its tokens count as made)."""
    started = time.perf_counter()
    (batch,) = sample_completions(
        model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=len(prompts), seed=7
    )
    return float(batch.response_mask.shape[1] * len(prompts)) / (time.perf_counter() - started)


def score_and_divergence(
    model: Any, baseline: Any, tokenizer: Any, prompts: list[str], labeler: Any, new_tokens: int
) -> dict[str, float]:
    """Held-out labeler score of ``model``'s samples; KL(baseline || model) and perplexity on the
    baseline's samples."""
    from rlenv.reward.scoring import as_array

    own = sample_completions(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=32, seed=1234)
    completions = [text for batch in own for text in batch.completions]
    reference = sample_completions(
        baseline, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=32, seed=1234
    )
    kls, nll, tokens = [], 0.0, 0
    with torch.no_grad():
        for batch in reference:
            base = response_log_probs(baseline, batch)
            mine = response_log_probs(model, batch)
            kls += (base - mine).sum(dim=1).tolist()
            nll -= float(mine.sum())
            tokens += int(batch.response_mask.sum())
    return {
        "score": float(as_array(labeler(prompts, completions)).mean()),
        "kl": float(np.mean(kls)),
        "perplexity": math.exp(nll / max(tokens, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a text / agents.rlhf / agents.dpo run directory")
    parser.add_argument("--prune", type=float, nargs="*", default=[0.3, 0.5])
    parser.add_argument(
        "--models", nargs="*", default=[], help="more model directories (a distilled student)"
    )
    parser.add_argument("--task", default="sentiment", help="held-out prompts and labeler: sentiment | detox")
    parser.add_argument("--prompts", type=int, default=64, help="held-out prompts scored")
    parser.add_argument("--new-tokens", type=int, default=24, help="new tokens per scored completion")
    parser.add_argument("--speed-batch", type=int, default=16)
    parser.add_argument("--speed-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from agents.rlhf import labeler_score_fn
    from rlenv.feedback.collect import TASK_LABELERS

    labeler = labeler_score_fn(TASK_LABELERS[args.task])
    prompts = select_prompts(args.task, "heldout", args.prompts)
    with tempfile.TemporaryDirectory(prefix="rlenv-deploy-") as workdir:
        paths = variants(Path(args.run), Path(workdir), list(args.prune), list(args.models))
        tokenizer = load_tokenizer(str(paths["merged float32"]))
        models = {name: load_causal_lm(str(path)) for name, path in paths.items()}
        for name in [n for n in list(models) if n.endswith("int8")]:  # the same files, int8 products
            models[f"{name} (int8 kernels)"] = load_int8(paths[name], kernels=True)
            paths[f"{name} (int8 kernels)"] = paths[name]
        baseline = models["merged float32"]
        speed: dict[str, float] = {name: 0.0 for name in models}
        speed_prompts = (prompts * args.speed_batch)[: args.speed_batch]
        for _ in range(args.repeats):  # interleaved rounds, best of each
            for name, model in models.items():
                speed[name] = max(
                    speed[name], tokens_per_second(model, tokenizer, speed_prompts, args.speed_tokens)
                )
        rows = {}
        for name, model in models.items():
            rows[name] = score_and_divergence(model, baseline, tokenizer, prompts, labeler, args.new_tokens)
            rows[name]["size"] = size_on_disk(paths[name])
    base_size, base_speed = rows["merged float32"]["size"], speed["merged float32"]
    print(
        f"task {args.task}, {args.prompts} held-out prompts x {args.new_tokens} tokens; speed: batch "
        f"{args.speed_batch} x {args.speed_tokens} new tokens, {args.threads} threads, best of {args.repeats}"
    )
    header = f"{'model':<36}{'MB':>9}{'size':>8}{'tok/s':>9}{'speed':>8}{'score':>8}{'KL':>8}{'ppl':>8}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(
            f"{name:<36}{row['size'] / 2**20:>9.1f}{row['size'] / base_size:>7.2f}x{speed[name]:>9.1f}"
            f"{speed[name] / base_speed:>7.2f}x{row['score']:>8.3f}{row['kl']:>8.3f}{row['perplexity']:>8.2f}"
        )


if __name__ == "__main__":
    main()
