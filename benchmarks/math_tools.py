"""Held-out success rate on the word problems: PAL (program + sandbox) against chain of thought.

For each task (``conf/task/pal.yaml``, ``conf/task/math_cot.yaml``) the model completes the
first ``--problems`` held-out prompts (sampling at ``--temperature``, the task's token
budget unless ``--new-tokens``), the task's reward scores them, and the script prints the
success rate, why the others failed (the reward's details, grouped) and ``--samples`` full
completions.

    python -m benchmarks.math_tools --model smollm2 --problems 64
    python -m benchmarks.math_tools --model <exported model dir> --tasks pal
"""

from __future__ import annotations

import argparse
import collections
import re
import time

import torch

from rlenv.feedback.generate import sample_completions
from rlenv.text.models import load_causal_lm
from rlenv.text.tokenizers import load_tokenizer
from rlenv.tools.pal import MathReward, cut_at_stop, math_prompts, task_problems

BUDGETS = {"pal": 96, "math_cot": 64}


def reason_of(detail: str) -> str:
    """A detail without its numbers and quoted text, so that like failures group together."""
    head = detail.split(":")[0] if detail.startswith("sandbox") else detail.split(" (")[0]
    return re.sub(r"-?\d+(\.\d+)?", "N", head)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tasks", nargs="+", default=["pal", "math_cot"], choices=sorted(BUDGETS))
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model), load_tokenizer(args.model)
    for task in args.tasks:
        problems = task_problems(task)
        reward = MathReward(problems)
        prompts = math_prompts(problems).heldout[: args.problems]
        started = time.perf_counter()
        batches = sample_completions(
            model,
            tokenizer,
            prompts,
            max_new_tokens=args.new_tokens or BUDGETS[task],
            temperature=args.temperature,
            batch_size=16,
            seed=args.seed,
        )
        completions = [text for batch in batches for text in batch.completions]
        scores = reward(prompts, completions)
        seconds = time.perf_counter() - started
        reasons = collections.Counter(reason_of(d) for d in reward.last_details)
        print(
            f"{task}: {args.model}, {len(prompts)} held-out problems, temperature {args.temperature:g}: "
            f"success {sum(scores) / len(scores):.3f} ({int(sum(scores))}/{len(scores)}), {seconds:.0f} s"
        )
        for reason, count in reasons.most_common():
            print(f"  {count:>4}  {reason}")
        for k in range(min(args.samples, len(prompts))):
            question = prompts[k][len(problems["prefix"]) :].strip()
            program = cut_at_stop(completions[k], problems["stop"])
            print(f"--- {question}\n{program.rstrip()}\n>>> {reward.last_details[k]}")


if __name__ == "__main__":
    main()
