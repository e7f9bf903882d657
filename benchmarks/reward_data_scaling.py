"""Reward-model held-out accuracy against the amount of labelled data.

    python -m rlenv.feedback.collect task=sentiment num_prompts=3072 generation.max_new_tokens=24 \\
        out=rankings.jsonl
    python -m benchmarks.reward_data_scaling --data rankings.jsonl --sizes 256 768 1536 all

One held-out set (``--val-fraction`` of the prompts, drawn with ``--seed``) is fixed first;
each run then trains a fresh reward model (the pipeline's settings, ``conf/rlhf.yaml``) on
the first N of the remaining prompts and is measured on that same held-out set, so the rows
differ only in training data. Each row prints the pairwise accuracy on the held-out pairs
every labeler ordered the same way (the filtered pairs the model trains on), on all held-out
consensus pairs, the labelers' own pairwise agreement, the filtered accuracy after each
epoch (the best epoch is the model kept, as in every reward-model run), and, with ``--labeler``, how often
the noise-free labeler itself orders the filtered held-out pairs as the labels do (the
ceiling a perfect copy of the labeler would reach).
"""

from __future__ import annotations

import argparse
import time

import torch

from rlenv.feedback.pairs import split_by_prompt
from rlenv.feedback.rankings import load_rankings
from rlenv.reward.pair_data import split_pairs
from rlenv.reward.train import build_model, train_reward_model

NS = "reward_model/"


def labeler_ceiling(kind: str, pairs: list) -> float:
    """Share of the filtered held-out ``pairs`` that the noise-free labeler orders as labelled."""
    from rlenv.feedback.collect import SIMULATED

    labeler = SIMULATED[kind](noise=0.0)
    if not pairs:
        return float("nan")
    prompts = [p.prompt for p in pairs]
    chosen = torch.as_tensor(labeler(prompts, [p.chosen for p in pairs]))
    rejected = torch.as_tensor(labeler(prompts, [p.rejected for p in pairs]))
    return float((chosen > rejected).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="rankings JSONL")
    parser.add_argument("--sizes", nargs="+", default=["256", "768", "all"], help="training prompts per run")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--trainable-layers", type=int, default=4)
    parser.add_argument("--pooling", default="completion")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--labeler", default=None, help="sentiment | toxicity: also print the labeler's ceiling"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    records = load_rankings(args.data)
    train, val = split_by_prompt(records, args.val_fraction, args.seed)
    held_out = split_pairs([], 0.0, 0, min_pair_agreement=1.0, val_data=val)
    print(
        f"{len(records)} ranked prompts: {len(train)} for training, {len(val)} held out "
        f"({len(held_out.val)} filtered held-out pairs, {len(held_out.val_all)} consensus pairs)"
    )
    if args.labeler:
        ceiling = labeler_ceiling(args.labeler, held_out.val)
        print(f"noise-free {args.labeler} labeler on the filtered held-out pairs: {ceiling:.3f}")
    print(f"{'prompts':>8} {'train pairs':>11} {'acc filtered':>12} {'acc all':>8} {'labelers':>8} {'s':>6}")
    for size in args.sizes:
        count = len(train) if size == "all" else int(size)
        if not 0 < count <= len(train):
            raise SystemExit(f"--sizes: {size!r} must be 'all' or in 1..{len(train)}")
        model = build_model(args.encoder, 64, args.seed, args.pooling)
        started = time.perf_counter()
        per_epoch: list[float] = []

        def log(name: str, value: float, step: int, per_epoch: list[float] = per_epoch) -> None:
            if name == NS + "val_accuracy" and step > 0:
                per_epoch.append(value)

        metrics = train_reward_model(
            train[:count],
            model,
            epochs=args.epochs,
            batch_size=16,
            lr=args.lr,
            weight_decay=0.01,
            trainable_layers=args.trainable_layers,
            seed=args.seed,
            min_pair_agreement=1.0,
            val_data=val,
            log=log,
            progress=False,
        )
        agreement = metrics.get(NS + "labeler_agreement", float("nan"))
        print(
            f"{count:>8} {int(metrics[NS + 'num_train_pairs']):>11} {metrics[NS + 'val_accuracy']:>12.3f} "
            f"{metrics[NS + 'val_accuracy_all']:>8.3f} {agreement:>8.3f} "
            f"{time.perf_counter() - started:>6.0f}   per epoch: "
            + " ".join(f"{value:.3f}" for value in per_epoch),
            flush=True,
        )


if __name__ == "__main__":
    main()
