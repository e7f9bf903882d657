"""Train any agent on any env: ``python -m agents.train env=tictactoe agent=ppo``.

The loop: collect ``agent.rollout_steps`` steps from the vector env, ``agent.learn`` on
them, log, checkpoint every ``train.checkpoint_every`` updates, and evaluate at the end.
Every run directory holds the composed config, TensorBoard events, checkpoints and a final
``metrics.json``. ``resume=<run dir>`` continues a run from its latest checkpoint; Ctrl-C
writes a checkpoint before the process exits.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agents.collect.collector import RolloutCollector
from agents.core.base import Agent
from agents.core.spaces import space_to_json
from agents.evaluate import evaluate_agent, format_table
from agents.run.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_latest
from agents.run.compat import IncompatiblePairError, check_pair
from agents.run.schema import check_config
from rlenv.logger import NullLogger, flatten

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(
            f"device={name!r} is not a valid torch device (try cpu, cuda, cuda:0, auto)"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA, but this machine has none; use device=cpu")
    return device


def build(cfg: DictConfig, device: torch.device, **env_overrides: Any) -> tuple[Any, Agent]:
    """The vector env (``cfg.env.vector`` with ``env_overrides``) and the agent, built from its spaces.

    The agent's and its network's needs are checked against the env's spaces before the agent
    is built (:func:`agents.run.compat.check_pair`).
    """
    env = instantiate(cfg.env.vector, device=str(device), **env_overrides)
    try:
        check_pair(
            cfg.agent,
            env.single_observation_space,
            env.single_action_space,
            env_name=str(cfg.env.get("name", "env")),
            agent_name=_choice("agent"),
        )
    except IncompatiblePairError:
        env.close()
        raise
    agent = instantiate(
        cfg.agent,
        observation_space=env.single_observation_space,
        action_space=env.single_action_space,
        device=str(device),
    )
    return env, agent


def _choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (``None`` outside one)."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice is not None else None


def checkpoint_meta(cfg: DictConfig, env: Any, trainer: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "agent_config": OmegaConf.to_container(cfg.agent, resolve=True),
        "observation_space": space_to_json(env.single_observation_space),
        "action_space": space_to_json(env.single_action_space),
        "trainer": trainer,
    }


def write_checkpoint(run_dir: Path, cfg: DictConfig, env: Any, agent: Agent, trainer: dict[str, Any]) -> Path:
    name = f"update_{trainer['updates']:07d}"
    state = {"agent": agent.state_dict(), "rng": rng_state(), "trainer": dict(trainer)}
    directory = save_checkpoint(run_dir / "checkpoints" / name, state, checkpoint_meta(cfg, env, trainer))
    write_latest(run_dir / "checkpoints", name)
    return directory


def refresh_self_play(env: Any, agent: Agent) -> None:
    """Hand a frozen copy of the learning agent to envs that play against it."""
    setter = getattr(env, "set_self_play_policy", None)
    if setter is None:
        return
    snapshot_fn = getattr(agent, "policy_snapshot", None)
    if snapshot_fn is not None:
        setter(snapshot_fn())
        return
    snapshot = copy.deepcopy(agent)
    setter(lambda obs, mask: snapshot.act(obs, mask, deterministic=False))


def train_loop(
    cfg: DictConfig, run_dir: Path, env: Any, agent: Agent, logger: Any, trainer: dict[str, Any]
) -> dict[str, Any]:
    """Collect and learn until ``train.total_env_steps``; returns the trainer counters."""
    collector = RolloutCollector(
        env,
        agent,
        seed=cfg.seed + trainer["updates"],
        samples_every=int(cfg.train.get("samples_every", 10)),
        num_samples=int(cfg.train.get("num_samples", 4)),
    )
    total = int(cfg.train.total_env_steps)
    bar = tqdm(
        total=total,
        initial=min(trainer["env_steps"], total),
        unit="step",
        disable=not cfg.train.progress,
        desc=f"{cfg.env.name}/{type(agent).__name__}",
        dynamic_ncols=True,
    )
    refresh_self_play(env, agent)
    started = time.perf_counter()
    steps_at_start = trainer["env_steps"]
    try:
        while trainer["env_steps"] < total:
            rollout, episodes = collector.collect(agent.rollout_steps)
            metrics = agent.learn(rollout)
            trainer["env_steps"] += rollout.num_valid
            trainer["updates"] += 1
            bar.update(rollout.num_valid)
            if trainer["updates"] % cfg.train.self_play_every == 0:
                refresh_self_play(env, agent)
            elapsed = time.perf_counter() - started
            metrics |= episodes.metrics()
            metrics["perf/steps_per_second"] = (trainer["env_steps"] - steps_at_start) / max(elapsed, 1e-9)
            if trainer["updates"] % cfg.train.log_every == 0:
                logger.log(metrics, trainer["env_steps"])
                if "charts/win_rate" in metrics:
                    bar.set_postfix(
                        win=f"{metrics['charts/win_rate']:.2f}", loss=f"{metrics['charts/loss_rate']:.2f}"
                    )
            for tag, text in getattr(episodes, "texts", {}).items():
                logger.text(tag, text, trainer["env_steps"])
            if trainer["updates"] % cfg.train.checkpoint_every == 0:
                write_checkpoint(run_dir, cfg, env, agent, trainer)
    except KeyboardInterrupt:
        bar.close()
        path = write_checkpoint(run_dir, cfg, env, agent, trainer)
        log.warning("interrupted at %d env steps; checkpoint written to %s", trainer["env_steps"], path)
        raise
    bar.close()
    trainer["train_seconds"] = trainer.get("train_seconds", 0.0) + time.perf_counter() - started
    return trainer


def restore(cfg: DictConfig, agent: Agent) -> dict[str, Any]:
    """Load agent, RNG and counters from ``cfg.resume``; fresh counters when it is unset."""
    if not cfg.resume:
        return {"env_steps": 0, "updates": 0}
    state, _ = load_checkpoint(cfg.resume)
    agent.load_state_dict(state["agent"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at %d env steps", cfg.resume, state["trainer"]["env_steps"])
    return dict(state["trainer"])


def resume_config(cfg: DictConfig) -> DictConfig:
    """For ``resume=<run>``: the saved run's config, with this command's run length and device."""
    if not cfg.resume:
        return cfg
    _, meta = load_checkpoint(cfg.resume)
    saved = OmegaConf.create(meta["config"])
    saved.resume = cfg.resume
    saved.device = cfg.device
    saved.train.total_env_steps = cfg.train.total_env_steps
    saved.train.progress = cfg.train.progress
    return saved


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, checkpoint and evaluate as ``cfg`` says; returns the final metrics."""
    run_dir = Path(run_dir)
    check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = resume_config(cfg)
    if cfg.train.torch_threads:
        torch.set_num_threads(int(cfg.train.torch_threads))
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    env, agent = build(cfg, device)
    logger = instantiate(cfg.logger, log_dir=str(run_dir)) if cfg.logger else NullLogger()
    logger.text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    trainer = restore(cfg, agent)
    try:
        trainer = train_loop(cfg, run_dir, env, agent, logger, trainer)
        write_checkpoint(run_dir, cfg, env, agent, trainer)
        results = evaluate_agent(
            agent, cfg.env, seed=int(cfg.seed) + 1_000_003, device=device, progress=bool(cfg.train.progress)
        )
        print(format_table(results, title=f"{cfg.env.name} / {type(agent).__name__}: deterministic policy"))
        final = {
            **results,
            "perf/train_seconds": trainer["train_seconds"],
            "perf/env_steps": trainer["env_steps"],
        }
        logger.log(final, trainer["env_steps"])
        logger.hparams(flatten(OmegaConf.to_container(cfg, resolve=True)), results)
        write_metrics(run_dir / "metrics.json", final)
    finally:
        logger.close()
        env.close()
    return final


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> float:
    metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    return float(metrics.get(cfg.get("objective") or "", 0.0))


if __name__ == "__main__":
    main()
