"""DQN on the language model's head: held-out VADER of greedy completions before and after training.

    python -m benchmarks.text_dqn                               # the text_qlearning preset
    python -m benchmarks.text_dqn -- train.total_env_steps=4000 agent.temperature=0.5

Builds ``env=text agent=qlearning`` (the sentiment task, SmolLM2 with LoRA), evaluates the
untrained agent's greedy completions of the held-out prompts (it is the language model's own
greedy decoding), trains with ``agents.train`` and evaluates the same prompts again with the
same settings. Prints both mean scores (VADER compound of the completion), the gain, and the
wall time of training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import conf
from agents import train
from agents.evaluate import evaluate_agent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args()
    overrides = ["env=text", "agent=qlearning", f"seed={args.seed}", "train.progress=false", *args.overrides]
    with initialize_config_dir(config_dir=str(Path(conf.__file__).parent), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    torch.set_num_threads(int(cfg.train.torch_threads or torch.get_num_threads()))
    device = torch.device("cpu")
    train.seed_everything(int(cfg.seed))
    env, agent = train.build(cfg, device)
    env.close()
    seed = int(cfg.seed) + 1_000_003  # the seed train.run evaluates with
    before = evaluate_agent(agent, cfg.env, seed=seed, device=device)["eval/heldout/return_mean"]
    del agent
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.out or Path(scratch)
        started = time.perf_counter()
        after_metrics = train.run(cfg, run_dir)
        wall = time.perf_counter() - started
    after = after_metrics["eval/heldout/return_mean"]
    episodes = int(after_metrics["eval/heldout/episodes"])
    print(f"held-out greedy completions ({episodes} prompts), VADER compound")
    print(f"  before training {before:+.3f}")
    print(f"  after  training {after:+.3f}   gain {after - before:+.3f}")
    seconds, steps = after_metrics["perf/train_seconds"], after_metrics["perf/env_steps"]
    print(f"  training {seconds:.0f} s ({steps:.0f} env steps), wall {wall:.0f} s")


if __name__ == "__main__":
    main()
