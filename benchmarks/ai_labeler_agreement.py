"""How often the AI labeler orders a pair of completions as the noise-free simulated labeler does.

The policy samples ``--completions`` completions for each of ``--prompts`` held-out prompts of
the task; the AI labeler (``rlenv.feedback.ai_labeler``, judge model ``--judge``, the task's
constitution unless ``--constitution``) and the task's simulated labeler with ``noise=0`` rank
them. Over the pairs the simulated labeler strictly orders, the agreement is the share the AI
labeler orders the same way (its ties count half). For scale, the same is printed for one
simulated labeler with the pipeline's default noise (0.1).

    python -m benchmarks.ai_labeler_agreement --task sentiment --prompts 64
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from rlenv.feedback.ai_labeler import make_ai_labeler
from rlenv.feedback.collect import SIMULATED, TASK_LABELERS, select_prompts
from rlenv.feedback.generate import generate_items
from rlenv.text.models import load_causal_lm
from rlenv.text.tokenizers import load_tokenizer


def agreement(reference: list[tuple[int, ...]], other: list[tuple[int, ...]]) -> tuple[float, int, float]:
    """(agreement, pairs counted, share of those pairs ``other`` ties) over strictly ordered pairs."""
    agree = ties = count = 0.0
    for ref, mine in zip(reference, other, strict=True):
        for i, j in itertools.combinations(range(len(ref)), 2):
            if ref[i] == ref[j]:
                continue
            count += 1
            if mine[i] == mine[j]:
                ties += 1
                agree += 0.5
            elif (mine[i] < mine[j]) == (ref[i] < ref[j]):
                agree += 1
    return (agree / count if count else float("nan")), int(count), (ties / count if count else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="sentiment", choices=sorted(TASK_LABELERS))
    parser.add_argument("--policy", default="smollm2", help="the model whose completions are ranked")
    parser.add_argument("--judge", default=None, help="the AI labeler's model (default: the policy's)")
    parser.add_argument("--constitution", default=None)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--completions", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = select_prompts(args.task, "heldout", args.prompts)
    policy, tokenizer = load_causal_lm(args.policy), load_tokenizer(args.policy)
    items = generate_items(
        policy,
        tokenizer,
        prompts,
        args.completions,
        max_new_tokens=args.new_tokens,
        batch_size=32,
        seed=args.seed,
    )
    settings = {"model": args.judge, "constitution": args.constitution}
    judge = make_ai_labeler(settings, args.policy, args.task)
    exact = SIMULATED[TASK_LABELERS[args.task]](noise=0.0)
    noisy = SIMULATED[TASK_LABELERS[args.task]](noise=0.1, seed=args.seed)
    started = time.perf_counter()
    ai_ranks = [judge.rank(p, c) for p, c in zip(prompts, items, strict=True)]
    seconds = time.perf_counter() - started
    exact_ranks = [exact.rank(p, c) for p, c in zip(prompts, items, strict=True)]
    noisy_ranks = [noisy.rank(p, c) for p, c in zip(prompts, items, strict=True)]
    print(
        f"task {args.task}, {len(prompts)} held-out prompts x {args.completions} completions of "
        f"{args.policy}; "
        f"judge {args.judge or args.policy} with constitution {judge.constitution.name!r} "
        f"({seconds:.1f} s to rank, {args.threads} threads)"
    )
    for name, ranks in (("AI labeler", ai_ranks), ("simulated labeler, noise 0.1", noisy_ranks)):
        value, count, ties = agreement(exact_ranks, ranks)
        print(f"{name:<30} agreement {value:.3f} on {count} strictly ordered pairs (ties {ties:.3f})")


if __name__ == "__main__":
    main()
