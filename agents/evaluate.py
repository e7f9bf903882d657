"""Evaluate a policy deterministically: ``python -m agents.evaluate run=<run dir>``.

The env config names its evaluation settings (for Tic-Tac-Toe: against the random and the
perfect opponent, as X and as O); each is played for ``episodes`` episodes and reported as
win / draw / loss rates (when the env reports outcomes) and the mean and standard deviation of
the episode return.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agents.collect.collector import action_mask_from_info, as_observation, as_tensor
from agents.core.base import Agent

log = logging.getLogger(__name__)
MAX_EVALUATION_STEPS = 100_000  # vector steps per setting (env.evaluation.max_steps)


@torch.no_grad()
def play_episodes(
    agent: Agent,
    env: Any,
    episodes: int,
    seed: int,
    progress: bool = False,
    max_steps: int = MAX_EVALUATION_STEPS,
) -> dict[str, float]:
    """Play exactly ``episodes`` episodes, an equal quota per env slot.

    Counting the first episodes to finish would over-count short games; quotas do not. Numbers
    an env reports per finished episode in ``info["episode_metrics"]`` (a dict of (B,) arrays,
    e.g. a tool-use env's ``success`` and ``turns``) are averaged under their names. After
    ``max_steps`` vector steps the evaluation stops with the episodes finished so far (an env
    without a time limit and a policy that never ends an episode would otherwise run forever)
    and warns; ``episodes`` in the result says how many were played.
    """
    num_envs = env.num_envs
    quota = torch.full((num_envs,), episodes // num_envs, dtype=torch.long)
    quota[: episodes % num_envs] += 1
    num_actions = int(env.single_action_space.n)
    obs, info = env.reset(seed=seed)
    device = agent.device
    played = torch.zeros(num_envs, dtype=torch.long)
    running = torch.zeros(num_envs)
    returns: list[float] = []
    outcomes: list[int] = []
    extras: dict[str, list[float]] = {}  # info["episode_metrics"]: per-episode numbers an env reports
    bar = tqdm(total=episodes, disable=not progress, leave=False, unit="ep")
    masked = "action_mask" in info  # envs without masks: every action legal, no (B, A) mask built
    steps = 0
    while bool((played < quota).any()):
        if steps >= max_steps:
            log.warning(
                "evaluation stopped after %d steps with %d of %d episodes finished; the policy may never "
                "end an episode (limit episodes with env.vector.max_episode_steps or raise "
                "env.evaluation.max_steps)",
                steps,
                len(returns),
                episodes,
            )
            break
        steps += 1
        mask = action_mask_from_info(info, "action_mask", num_envs, num_actions, device) if masked else None
        actions = agent.act(as_observation(obs, device), mask, deterministic=True)
        obs, rewards, terminated, truncated, info = env.step(actions)
        running += as_tensor(rewards, torch.device("cpu")).float()
        done = (as_tensor(terminated, torch.device("cpu")) | as_tensor(truncated, torch.device("cpu"))).bool()
        counted = done & (played < quota)
        returns.extend(running[counted].tolist())
        if "outcome" in info:
            outcomes.extend(as_tensor(info["outcome"], torch.device("cpu"))[counted].long().tolist())
        for name, values in info.get("episode_metrics", {}).items():
            extras.setdefault(name, []).extend(as_tensor(values, torch.device("cpu"))[counted].tolist())
        played += counted.long()
        running[done] = 0.0
        bar.update(int(counted.sum()))
    bar.close()
    values = np.asarray(returns, dtype=np.float64)
    result = {
        "episodes": float(len(returns)),
        "return_mean": float(values.mean()) if len(values) else math.nan,
        "return_std": float(values.std()) if len(values) else math.nan,
    }
    result |= {name: float(np.mean(values)) for name, values in extras.items() if values}
    if outcomes:
        n = len(outcomes)
        result |= {
            "win_rate": sum(o > 0 for o in outcomes) / n,
            "draw_rate": sum(o == 0 for o in outcomes) / n,
            "loss_rate": sum(o < 0 for o in outcomes) / n,
            "losses": float(sum(o < 0 for o in outcomes)),
        }
    return result


def evaluate_agent(
    agent: Agent,
    env_cfg: DictConfig,
    *,
    seed: int,
    device: torch.device | str,
    episodes: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics ``eval/<setting>/<name>`` for every setting in ``env_cfg.evaluation.settings``."""
    evaluation = env_cfg.evaluation
    episodes = int(episodes or evaluation.episodes)
    results: dict[str, float] = {}
    for index, (setting, overrides) in enumerate(evaluation.settings.items()):
        kwargs = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
        env = instantiate(
            env_cfg.vector, num_envs=min(int(evaluation.num_envs), episodes), device=str(device), **kwargs
        )
        try:
            metrics = play_episodes(
                agent,
                env,
                episodes,
                seed=seed + index,
                progress=progress,
                max_steps=int(evaluation.get("max_steps", MAX_EVALUATION_STEPS)),
            )
        finally:
            env.close()
        results |= {f"eval/{setting}/{name}": value for name, value in metrics.items()}
    return results


def format_table(results: dict[str, float], title: str = "") -> str:
    """A plain-text table, one row per evaluation setting."""
    settings = sorted({key.split("/")[1] for key in results if key.startswith("eval/")})
    has_outcomes = any(key.endswith("/win_rate") for key in results)
    header = f"{'setting':<16}{'episodes':>10}" + (
        f"{'win %':>10}{'draw %':>10}{'loss %':>10}" if has_outcomes else ""
    )
    header += f"{'return':>10}{'± std':>10}"
    known = {"episodes", "return_mean", "return_std", "win_rate", "draw_rate", "loss_rate", "losses"}
    extras = sorted({key.split("/")[2] for key in results if key.count("/") == 2} - known)
    header += "".join(f"{name:>10}" for name in extras)  # an env's info["episode_metrics"]
    lines = [title, header, "-" * len(header)] if title else [header, "-" * len(header)]
    for setting in settings:
        row = results
        line = f"{setting:<16}{int(row[f'eval/{setting}/episodes']):>10}"
        if has_outcomes:
            for name in ("win_rate", "draw_rate", "loss_rate"):
                line += f"{100 * row.get(f'eval/{setting}/{name}', float('nan')):>10.2f}"
        line += f"{row[f'eval/{setting}/return_mean']:>10.3f}{row[f'eval/{setting}/return_std']:>10.3f}"
        line += "".join(f"{row.get(f'eval/{setting}/{name}', float('nan')):>10.3f}" for name in extras)
        lines.append(line)
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from agents import load_agent
    from agents.run.checkpoint import META_FILE, CheckpointError, load_checkpoint, resolve_checkpoint
    from agents.run.registry import check_trusted
    from agents.train import resolve_device

    device = resolve_device(cfg.device)
    directory = resolve_checkpoint(cfg.run)
    _, meta = load_checkpoint(directory)
    saved = meta.get("config")
    if not isinstance(saved, dict) or not isinstance(saved.get("env"), dict):
        raise CheckpointError(directory / META_FILE, "has no saved run config with an env ('config.env')")
    check_trusted(saved, str(directory / META_FILE))
    run_cfg = OmegaConf.create(saved)
    agent = load_agent(directory, device=device)
    results = evaluate_agent(
        agent, run_cfg.env, seed=int(cfg.seed), device=device, episodes=cfg.episodes, progress=True
    )
    print(format_table(results, title=f"{cfg.run}: deterministic policy"))
    out = Path(HydraConfig.get().runtime.output_dir) / "eval_metrics.json"
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
