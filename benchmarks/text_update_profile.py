"""Where the time of one RLHF update goes: generation, reward, reference pass, optimisation.

Builds the text env and PPO agent from the Hydra config (``env=text agent=ppo`` and any
overrides), runs ``--updates`` updates after one warm-up and times each phase in the same
process: acting (the policy's token-by-token forward passes through the KV cache), the env
(window shifts and the reward function), the reference model's pass over the completions,
the values for bootstrapping and GAE, and the optimisation epochs (forward and backward).
Prints a table of seconds per update and per generated token.

    python -m benchmarks.text_update_profile -- env.vector.max_new_tokens=32
    python -m benchmarks.text_update_profile --updates 1 -- env.model=tiny   # smoke
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from hydra import compose, initialize_config_module

PHASES = ("acting", "env + reward", "reference pass", "optimisation", "other")


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active: list[str] = []

    def wrap(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.active:  # nested: counted by the outer phase
                return function(*args, **kwargs)
            self.active.append(phase)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.active.pop()

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides (after --)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from agents import train
    from agents.ppo.batches import EpisodeBatch, StepBatch

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("config", overrides=["env=text", "agent=ppo", "train.progress=false", *args.overrides])
    train.seed_everything(0)
    env, agent = train.build(cfg, torch.device("cpu"))
    collector = train.make_collector(cfg, env, agent)
    timer = Timer()
    agent.explore = timer.wrap("acting", agent.explore)
    env.step = timer.wrap("env + reward", env.step)
    env.reset = timer.wrap("env + reward", env.reset)
    for layout in (EpisodeBatch, StepBatch):
        original = layout.reference_log_probs
        layout.reference_log_probs = staticmethod(timer.wrap("reference pass", original))
    import agents.ppo.agent as ppo_agent

    ppo_agent.ppo_update = timer.wrap("optimisation", ppo_agent.ppo_update)
    tokens = 0
    total = 0.0
    for update in range(args.updates + 1):
        if update == 1:  # the first update warms caches and allocators up
            timer.seconds.clear()
            tokens, total = 0, 0.0
        started = time.perf_counter()
        rollout, _ = collector.collect(agent.rollout_steps)
        agent.learn(rollout)
        total += time.perf_counter() - started
        tokens += rollout.num_valid
    measured = dict(timer.seconds)
    measured["other"] = total - sum(measured.values())
    print(
        f"{args.updates} updates of {env.num_envs} completions x up to {env.config.max_new_tokens} tokens: "
        f"{total / args.updates:.2f} s per update, {1000 * total / max(tokens, 1):.1f} ms per generated token"
    )
    print(f"{'phase':<16}{'s/update':>10}{'share':>8}")
    for phase in PHASES:
        seconds = measured.get(phase, 0.0)
        print(f"{phase:<16}{seconds / args.updates:>10.2f}{100 * seconds / total:>7.0f}%")


if __name__ == "__main__":
    main()
