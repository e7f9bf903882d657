"""Token-by-token env-style rollouts through the KV-cache acting API versus ``generate``.

Same process, same LoRA policy model, same batch of left-padded prompts (random token ids,
lengths 8-24). The rollout does what a rollout loop does each step: the network's forward
pass without gradients (through its KV cache) on the env's window, sampling, log-probs,
time-major storage of actions / log-probs / values, shifting the window, tracking EOS.
``generate`` samples from the full distribution (``top_k=0``) for exactly ``--new-tokens``
tokens.

Prints tokens/s and their ratio (target >= 0.8x of generate), how rollout time scales when
the number of new tokens doubles from ``--new-tokens / 2`` (target <= 2.2x), and the
parameter memory of a LoRA-shared reference versus two full copies.

    python -m benchmarks.text_rollout --model smollm2 --batch 16 --new-tokens 48 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from agents.networks.lm import LMActorCritic
from agents.networks.lm_core import unique_parameter_bytes
from rlenv.text.models import load_causal_lm
from rlenv.text.tokens import push_tokens

MIN_PROMPT, MAX_PROMPT = 8, 24


def make_prompts(batch: int, window: int, vocab_size: int, seed: int = 0) -> dict[str, Tensor]:
    """Left-padded random prompts. Shapes: input_ids, attention_mask (batch, window)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(MIN_PROMPT, MAX_PROMPT + 1, (batch,), generator=generator)
    input_ids = torch.randint(3, vocab_size, (batch, window), generator=generator)
    attention_mask = (torch.arange(window) >= window - lengths[:, None]).long()
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


@torch.no_grad()
def env_rollout(net: LMActorCritic, prompts: dict[str, Tensor], new_tokens: int, eos: int) -> Tensor:
    """Sample ``new_tokens`` tokens per row the way a rollout loop does; returns actions (T, B)."""
    batch = prompts["input_ids"].shape[0]
    actions = torch.empty(new_tokens, batch, dtype=torch.long)
    log_probs, values = torch.empty(new_tokens, batch), torch.empty(new_tokens, batch)
    finished = torch.zeros(batch, dtype=torch.bool)
    window = dict(prompts)
    net.reset_cache()
    for step in range(new_tokens):
        logits, values[step] = net(window)  # without gradients: through the KV cache
        step_log_probs = torch.log_softmax(logits, dim=-1)
        actions[step] = torch.multinomial(step_log_probs.exp(), 1).squeeze(-1)
        log_probs[step] = step_log_probs.gather(-1, actions[step, :, None]).squeeze(-1)
        finished |= actions[step] == eos
        input_ids, attention_mask = push_tokens(
            window["input_ids"], window["attention_mask"], actions[step], torch.ones(batch, dtype=torch.bool)
        )
        window = {"input_ids": input_ids, "attention_mask": attention_mask}
    return actions


@torch.no_grad()
def generate(net: LMActorCritic, prompts: dict[str, Tensor], new_tokens: int, pad: int) -> Tensor:
    output = net.core.policy_lm.generate(
        **prompts,
        do_sample=True,
        top_k=0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=pad,
    )
    return output[:, prompts["input_ids"].shape[1] :]


def timed(
    runs: dict[str, Callable[[int], Tensor]], tokens: dict[str, int], repeats: int
) -> dict[str, tuple[float, float]]:
    """Best (wall, process CPU) seconds of each run over ``repeats`` interleaved rounds.

    CPU time is reported too because it barely moves when other processes load the machine.
    """
    for run in runs.values():
        run(4)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run(tokens[name])
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            wall, cpu = times[name][-1]
            print(f"# {name}: {tokens[name]} tokens, wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
    return {name: (min(w for w, _ in values), min(c for _, c in values)) for name, values in times.items()}


def build(model_name: str, window: int) -> tuple[LMActorCritic, int]:
    model = load_causal_lm(model_name)
    vocab = model.get_output_embeddings().weight.shape[0]
    box = spaces.Box(0, vocab - 1, shape=(window,), dtype=np.int64)
    observation_space = spaces.Dict({"input_ids": box, "attention_mask": box})
    return LMActorCritic(observation_space, spaces.Discrete(vocab), model=model).eval(), vocab


def memory_rows(model_name: str, window: int, net: LMActorCritic) -> list[tuple[str, float]]:
    shared = unique_parameter_bytes(net)
    model = load_causal_lm(model_name)
    vocab = model.get_output_embeddings().weight.shape[0]
    box = spaces.Box(0, vocab - 1, shape=(window,), dtype=np.int64)
    full = LMActorCritic(
        spaces.Dict({"input_ids": box, "attention_mask": box}), spaces.Discrete(vocab), model=model, lora=None
    )
    return [
        ("LoRA policy + reference (adapter off)", shared),
        ("full policy + frozen copy", unique_parameter_bytes(full)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full, half = args.new_tokens, args.new_tokens // 2
    window = MAX_PROMPT + full
    net, vocab = build(args.model, window)
    eos, pad = int(net.core.policy_lm.config.eos_token_id or 0), net.core.pad_token_id
    prompts = make_prompts(args.batch, window, vocab)
    gen_prompts = {key: value[:, window - MAX_PROMPT :] for key, value in prompts.items()}
    runs: dict[str, Callable[[int], Tensor]] = {
        "generate": lambda count: generate(net, gen_prompts, count, pad),
        "rollout": lambda count: env_rollout(net, prompts, count, eos),
        "rollout_half": lambda count: env_rollout(net, prompts, count, eos),
        "generate_half": lambda count: generate(net, gen_prompts, count, pad),
    }
    tokens = {"generate": full, "rollout": full, "rollout_half": half, "generate_half": half}
    seconds = timed(runs, tokens, args.repeats)
    print_report(args, seconds, tokens, memory_rows(args.model, window, net))


def print_report(
    args: argparse.Namespace,
    seconds: dict[str, tuple[float, float]],
    tokens: dict[str, int],
    memory: list[tuple[str, float]],
) -> None:
    print(f"\nmodel={args.model} batch={args.batch} threads={torch.get_num_threads()} repeats={args.repeats}")
    print("\n| path | new tokens | wall s | tokens/s | vs generate | CPU s | vs generate (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for name, path in (("generate", "generate"), ("rollout", "env rollout (KV cache)")):
        for key, baseline in ((name, "generate"), (f"{name}_half", "generate_half")):
            (wall, cpu), (base_wall, base_cpu) = seconds[key], seconds[baseline]
            rate = args.batch * tokens[key] / wall
            print(
                f"| {path} | {tokens[key]} | {wall:.2f} | {rate:.1f} | {base_wall / wall:.2f}x "
                f"| {cpu:.2f} | {base_cpu / cpu:.2f}x |"
            )
    half, full = tokens["rollout_half"], tokens["rollout"]
    print(f"\n| time at {full} / at {half} new tokens (target <= 2.2x) | wall | CPU |\n|---|---|---|")
    for name in ("rollout", "generate"):
        (wall, cpu), (half_wall, half_cpu) = seconds[name], seconds[f"{name}_half"]
        print(f"| {name} | {wall / half_wall:.2f}x | {cpu / half_cpu:.2f}x |")
    print("\n| parameters in memory | MiB | ratio |\n|---|---|---|")
    for name, size in memory:
        print(f"| {name} | {size / 2**20:.1f} | {size / memory[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
