"""TRL's GRPOTrainer on the same work as ``benchmarks/rlhf_kl_budget.py``, for a side-by-side.

SmolLM2-135M-Instruct with LoRA (r 16 on q/k/v/o), reward = VADER compound of the completion,
16 completions (4 prompts x 4) per step, 32 new tokens at temperature 1, beta 0.04, trained for
``--minutes`` of wall time; then the same held-out evaluation as our benchmark (the same 64
prompts, the same sampling seed, KL to the base model summed over each sampled completion).

TRL is not a dependency of this project. Install it beside the project's environment only:

    pip install --target benchmarks/.trl-site --no-deps trl==1.16.0 datasets==4.8.4 pandas \\
        pyarrow==21.0.0 dill==0.4.0 multiprocess==0.70.18 xxhash httpx httpcore anyio h11 sniffio
    PYTHONPATH=benchmarks/.trl-site python -m benchmarks.trl_grpo --minutes 10.5
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.rlhf_kl_budget import prompt_split, report


def make_trainer(
    prompts: list[str],
    reward,
    *,
    lr: float,
    beta: float,
    new_tokens: int,
    max_steps: int,
    out: str,
    callbacks: list,
    logging_steps: int = 5,
):
    """TRL's GRPOTrainer as both TRL benchmarks use it: SmolLM2-135M-Instruct with LoRA r 16 on
    q/k/v/o, 16 completions (4 prompts x 4) per step at temperature 1, on CPU."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import GRPOConfig, GRPOTrainer

    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    tokenizer.padding_side = "left"
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    config = GRPOConfig(
        output_dir=out,
        learning_rate=lr,
        beta=beta,
        num_generations=4,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=1,
        max_completion_length=new_tokens,
        temperature=1.0,
        max_steps=max_steps,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    return GRPOTrainer(
        model=get_peft_model(load_causal_lm("smollm2"), lora),
        reward_funcs=reward,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def evaluate_peft(model, tokenizer, prompts: list[str], new_tokens: int, seed: int) -> dict:
    """Held-out VADER, KL to the adapter-disabled base (k1 per completion) and length."""
    from agents.rlhf import sample_and_measure

    completions, kls, lengths = sample_and_measure(
        model, model.disable_adapter, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=32, seed=seed
    )
    return report(prompts, completions, kls, lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.5)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/trl_grpo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import TrainerCallback

    from rlenv.text.scores import SCORES

    train_prompts, heldout = prompt_split()

    def vader(completions, **_):
        return SCORES["sentiment"].fn(list(completions)).tolist()

    class WallClock(TrainerCallback):
        def __init__(self, seconds: float) -> None:
            self.seconds, self.started = seconds, time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()  # the base model's evaluation does not count

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.started >= self.seconds:
                control.should_training_stop = True
            return control

    trainer = make_trainer(
        train_prompts,
        vader,
        lr=args.lr,
        beta=args.beta,
        new_tokens=args.new_tokens,
        max_steps=10_000,
        out=args.out,
        callbacks=[WallClock(args.minutes * 60)],
    )
    tokenizer = trainer.processing_class
    before = evaluate_peft(trainer.model, tokenizer, heldout, args.new_tokens, args.seed)
    print(f"base policy: held-out VADER {before['vader']:.3f}, length {before['length']:.1f}", flush=True)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    steps = trainer.state.global_step
    after = evaluate_peft(trainer.model, tokenizer, heldout, args.new_tokens, args.seed)
    gain = after["vader"] - before["vader"]
    print(
        f"TRL GRPO: VADER {before['vader']:.3f} -> {after['vader']:.3f} ({gain:+.3f}), "
        f"KL {after['kl']:.2f}, length {after['length']:.1f}, {steps} steps in {seconds / 60:.1f} min "
        f"({seconds / max(steps, 1):.1f} s per step)"
    )
    for sample in after["samples"]:
        print(f"    {sample!r}")


if __name__ == "__main__":
    main()
