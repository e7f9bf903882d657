"""Held-out success of a language model on a tool-use env (ShopBot, review QA): before and after.

Plays ``--episodes`` held-out episodes of ``conf/env/<env>.yaml`` (its evaluation setting) with
each policy: the base model (``--model``; its LoRA adapter starts at zero, so this is the model
itself) and, with ``--run``, a trained run's policy. Actions are the greedy token, as in the
training's final evaluation, or sampled at ``--temperature``. Prints the success rate, mean
turns and return, why episodes failed (the env's details, grouped), and ``--samples`` whole
trajectories (thoughts, actions, the env's observations).

    python -m benchmarks.tool_agents --env shopbot --episodes 32
    python -m benchmarks.tool_agents --env shopbot --run outputs/<date>/<time> --episodes 32
"""

from __future__ import annotations

import argparse
import collections
import re
import time
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from agents.collect.collector import as_observation


class LMPolicy:
    """An LM actor-critic as a policy: the greedy next token, or one sampled at ``temperature``."""

    def __init__(self, network: Any, temperature: float) -> None:
        self.network, self.temperature, self.device = network, temperature, torch.device("cpu")

    @torch.no_grad()
    def act(self, obs: Any, action_mask: Any = None, deterministic: bool = True) -> torch.Tensor:
        logits, _ = self.network(obs)
        if deterministic or self.temperature <= 0:
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits / self.temperature).sample()


def base_network(model: str, vocab_size: int) -> Any:
    """The base model in an LM actor-critic (its LoRA adapter starts at zero: the model itself)."""
    from gymnasium import spaces

    from agents.networks.lm import LMActorCritic

    return LMActorCritic(None, spaces.Discrete(vocab_size), model=model)


def run_network(run: str) -> Any:
    """The trained policy network of a run directory (its latest checkpoint)."""
    from agents import load_agent

    return load_agent(run, device="cpu").network


def play(policy: Any, env: Any, episodes: int, seed: int, deterministic: bool) -> list[dict[str, Any]]:
    """``episodes`` episodes in batches of ``env.num_envs`` whole episodes, batch ``k`` reset with
    ``seed + k``: every policy plays the same episodes. One record per episode."""
    records: list[dict[str, Any]] = []
    for batch in range(-(-episodes // env.num_envs)):
        obs, _ = env.reset(seed=seed + batch)
        returns = torch.zeros(env.num_envs)
        wanted = min(env.num_envs, episodes - batch * env.num_envs)
        done = False
        while not done:
            actions = policy.act(as_observation(obs, policy.device), None, deterministic=deterministic)
            obs, rewards, terminated, truncated, info = env.step(actions)
            returns += rewards.float().cpu()
            for row in (terminated | truncated).nonzero().flatten().tolist():
                if row < wanted:
                    records.append(
                        {
                            "success": float(info["episode_metrics"]["success"][row]),
                            "turns": float(info["episode_metrics"]["turns"][row]),
                            "return": float(returns[row]),
                            "detail": info["reward_detail"][row],
                            "prompt": info["prompt"][row],
                            "transcript": info["completion"][row],
                        }
                    )
            done = bool(info["all_done"])
    return records


def reason_of(detail: str) -> str:
    """A detail without its numbers, addresses and quotes, so that like failures group together."""
    text = re.sub(r"'[^']*'|\S+@\S+", "X", detail)
    return re.sub(r"-?\d+(\.\d+)?", "N", text)


def report(name: str, records: list[dict[str, Any]], seconds: float, samples: int, prefix: str) -> None:
    n = len(records)
    mean = {key: sum(r[key] for r in records) / n for key in ("success", "turns", "return")}
    print(
        f"\n## {name}: success {mean['success']:.3f} ({int(mean['success'] * n)}/{n}), "
        f"mean turns {mean['turns']:.2f}, mean return {mean['return']:.3f}, {seconds:.0f} s"
    )
    kinds = collections.defaultdict(list)  # details that start with "<kind>:" (ShopBot's requests)
    for record in records:
        kind = re.match(r"(\w+):", record["detail"])
        kinds[kind.group(1) if kind else ""].append(record["success"])
    if len(kinds) > 1 and "" not in kinds:
        print("  by kind: " + ", ".join(f"{k} {sum(v):.0f}/{len(v)}" for k, v in sorted(kinds.items())))
    reasons = collections.Counter(reason_of(r["detail"]) for r in records if not r["success"])
    for reason, count in reasons.most_common(6):
        print(f"  {count:3d} x {reason}")
    for record in records[:samples]:
        request = record["prompt"][len(prefix) :] if record["prompt"].startswith(prefix) else record["prompt"]
        print(f"\n--- success={record['success']:.0f} turns={record['turns']:.0f} ({record['detail']})")
        print(request + record["transcript"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="shopbot")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--run", default=None, help="a training run directory (its latest checkpoint)")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (as the evaluation)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--skip-base", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. env.vector.max_turns=4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"env={args.env}", f"env.model={args.model}", *args.overrides])
    setting = dict(next(iter(cfg.env.evaluation.settings.values())))
    setting["autoreset_mode"] = "disabled"  # batches of whole episodes, the same for every policy
    env = instantiate(cfg.env.vector, num_envs=args.num_envs, device="cpu", **setting)
    prefix = str(cfg.env.vector.task.get("prefix", ""))
    policies = (
        [] if args.skip_base else [(f"base {args.model}", lambda: base_network(args.model, env.vocab_size))]
    )
    if args.run:
        policies.append((f"trained ({args.run})", lambda: run_network(args.run)))
    mode = "greedy" if args.temperature <= 0 else f"temperature {args.temperature}"
    print(f"# {args.env}: {args.episodes} held-out episodes, {mode}")
    for name, make in policies:
        policy = LMPolicy(make(), args.temperature)
        started = time.perf_counter()
        records = play(policy, env, args.episodes, args.seed, deterministic=args.temperature <= 0)
        report(name, records, time.perf_counter() - started, args.samples, prefix)
    env.close()


if __name__ == "__main__":
    main()
