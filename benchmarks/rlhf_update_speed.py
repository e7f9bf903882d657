"""Time per generated token of one RLHF update against a TRL GRPO step, in the same process.

One process builds TRL's GRPOTrainer (SmolLM2-135M-Instruct, LoRA r 16 on q/k/v/o, 16
completions = 4 prompts x 4 per step, 32 new tokens at temperature 1, beta 0.04, reward = VADER
compound) and our PPO agent on the text env with the same batch (16 completions x 32 tokens,
``env=text agent=ppo`` plus a variant's overrides). The two alternate: after every TRL step a
callback runs one of our updates (rollout, reference pass, reward, optimisation epochs), so
both see the same machine load. Each side's time is divided by the tokens it generated; the
first ``--warmup`` steps of each are left out. Prints ms per generated token for both and
their ratio (TRL / ours: above 1 means our update is faster per token).

TRL is not a dependency of this project; install it beside it as ``benchmarks/trl_grpo.py``
says, then:

    PYTHONPATH=benchmarks/.trl-site python -m benchmarks.rlhf_update_speed --steps 8
    PYTHONPATH=benchmarks/.trl-site python -m benchmarks.rlhf_update_speed --variant grpo -- \\
        agent.num_epochs=1 agent.num_minibatches=2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_module

from benchmarks.rlhf_kl_budget import VARIANTS, prompt_split
from benchmarks.trl_grpo import make_trainer


def build_ours(overrides: list[str], new_tokens: int):
    """Our text env, agent and collector from the Hydra config."""
    from agents import train

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "env=text",
                "agent=ppo",
                "train.progress=false",
                "num_envs=16",
                f"env.vector.max_new_tokens={new_tokens}",
                "env.vector.reward_fn=sentiment",
                *overrides,
            ],
        )
    train.seed_everything(0)
    env, agent = train.build(cfg, torch.device("cpu"))
    return agent, train.make_collector(cfg, env, agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="TRL steps (and our updates) timed")
    parser.add_argument("--warmup", type=int, default=1, help="first steps of each side left out")
    parser.add_argument("--variant", default="gae", choices=sorted(VARIANTS), help="our update's variant")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/trl_speed")
    parser.add_argument("overrides", nargs="*", help="extra overrides for our agent (after --)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import TrainerCallback

    from rlenv.text.scores import SCORES

    agent, collector = build_ours([*VARIANTS[args.variant], *args.overrides], args.new_tokens)
    trl_tokens: list[int] = []

    def vader(completions, completion_ids, **_):
        trl_tokens.append(sum(len(ids) for ids in completion_ids))
        return SCORES["sentiment"].fn(list(completions)).tolist()

    timings: dict[str, list[float]] = {"trl": [], "ours": []}
    tokens: dict[str, list[int]] = {"trl": [], "ours": []}

    class Alternate(TrainerCallback):
        def on_step_begin(self, args_, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            timings["trl"].append(time.perf_counter() - self.started)
            tokens["trl"].append(trl_tokens[-1])
            started = time.perf_counter()
            rollout, _ = collector.collect(agent.rollout_steps)
            agent.learn(rollout)
            timings["ours"].append(time.perf_counter() - started)
            tokens["ours"].append(int(rollout.num_valid))
            print(
                f"step {state.global_step}: TRL {timings['trl'][-1]:.1f} s / {tokens['trl'][-1]} tokens, "
                f"ours {timings['ours'][-1]:.1f} s / {tokens['ours'][-1]} tokens",
                flush=True,
            )
            return control

    train_prompts, _ = prompt_split()
    trainer = make_trainer(
        train_prompts,
        vader,
        lr=3e-4,
        beta=0.04,
        new_tokens=args.new_tokens,
        max_steps=args.steps + args.warmup,
        out=args.out,
        callbacks=[Alternate()],
        logging_steps=10_000,
    )
    trainer.train()
    per_token = {}
    for side in ("trl", "ours"):
        seconds, counts = timings[side][args.warmup :], tokens[side][args.warmup :]
        per_token[side] = 1000 * sum(seconds) / max(sum(counts), 1)
        print(
            f"{side:<5} {len(seconds)} steps: {statistics.mean(seconds):.2f} s per step, "
            f"{statistics.mean(counts):.0f} tokens per step, {per_token[side]:.1f} ms per generated token"
        )
    print(f"ratio TRL / ours (per generated token): {per_token['trl'] / per_token['ours']:.2f}")


if __name__ == "__main__":
    main()
