"""Scoring whole episodes that open with the same prefix: the prefix once, or once per row.

Same process, same LoRA policy, same batch: ``--batch`` rows that open with ``--prefix``
shared tokens (the tokens of ShopBot's few-shot prefix, ``conf/env/shopbot.yaml``, with the
real tokenizer; random ids with the tiny model) followed by ``--rest`` random tokens of each
row's own, left-padded to different lengths. Times one forward and backward pass of the
episode scoring (``CausalLMCore.encode_at``: log-probs at the last ``--rest`` columns) with the
shared prefix encoded once, and with every row encoded whole; best of ``--repeats``
interleaved rounds; prints the ratio and the largest difference of the log-probs.

    python -m benchmarks.shared_prefix --model smollm2 --batch 8 --rest 300 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from gymnasium import spaces

from agents.networks import lm_core
from agents.networks.lm import LMActorCritic


def prefix_tokens(model: str, count: int | None, vocab: int) -> list[int]:
    if model == "tiny":
        return torch.randint(3, vocab, (count or 64,), generator=torch.Generator().manual_seed(0)).tolist()
    from omegaconf import OmegaConf

    from rlenv.text.tokenizers import load_tokenizer

    text = OmegaConf.load(
        os.path.join(os.path.dirname(lm_core.__file__), "..", "..", "conf", "env", "shopbot.yaml")
    )
    tokens = load_tokenizer(model)(str(text.vector.task.prefix))["input_ids"]
    return list(tokens[:count] if count else tokens)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prefix", type=int, default=None, help="shared tokens (default: the whole prefix)")
    parser.add_argument("--rest", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = 64 if args.model == "tiny" else 49152
    prefix = prefix_tokens(args.model, args.prefix, vocab)
    width = len(prefix) + args.rest
    box = spaces.Box(0, vocab - 1, shape=(width,), dtype=np.int64)
    net = LMActorCritic(
        spaces.Dict({"input_ids": box, "attention_mask": box}), spaces.Discrete(vocab), model=args.model
    )
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros(args.batch, width, dtype=torch.long)
    mask = torch.zeros(args.batch, width, dtype=torch.long)
    for row in range(args.batch):
        own = args.rest - int(torch.randint(0, max(1, args.rest // 2), (1,), generator=generator))
        sequence = prefix + torch.randint(3, vocab, (own,), generator=generator).tolist()
        ids[row, width - len(sequence) :] = torch.tensor(sequence)
        mask[row, width - len(sequence) :] = 1
    columns = torch.arange(width - args.rest // 2, width).expand(args.batch, -1)

    def score(minimum: int) -> torch.Tensor:
        lm_core.SHARED_PREFIX_MIN = minimum
        net.zero_grad()
        _, logits = net.core.encode_at(ids, mask, columns - 1)
        log_probs = torch.log_softmax(logits, -1).gather(-1, ids.gather(1, columns).unsqueeze(-1)).squeeze(-1)
        log_probs.sum().backward()
        return log_probs.detach()

    runs = {"each row whole": 10**9, "shared prefix once": 32}
    best = {name: float("inf") for name in runs}
    outputs = {name: score(minimum) for name, minimum in runs.items()}  # warm-up
    for _ in range(args.repeats):
        for name, minimum in runs.items():
            started = time.perf_counter()
            score(minimum)
            best[name] = min(best[name], time.perf_counter() - started)
    base = best["each row whole"]
    difference = (outputs["each row whole"] - outputs["shared prefix once"]).abs().max().item()
    threads = torch.get_num_threads()
    print(f"\nmodel={args.model} batch={args.batch} prefix={len(prefix)} rest<={args.rest} threads={threads}")
    print("\n| scoring (forward + backward) | best s | speed-up |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}x |")
    print(f"\nlargest log-prob difference: {difference:.2e}")


if __name__ == "__main__":
    main()
