"""Generic learning agents (PPO, Q-learning) for any env with discrete actions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from agents.run.schema import register_configs

if TYPE_CHECKING:
    import torch

    from agents.core.base import Agent

__all__ = ["load_agent"]


def _num_updates(total_env_steps: float, num_envs: int, rollout_steps: int) -> int:
    """Updates in a run: ``${num_updates:${train.total_env_steps},${num_envs},${agent.rollout_steps}}``."""
    return max(1, int(float(total_env_steps)) // (int(num_envs) * int(rollout_steps)))


def _run_name(task_overrides: Any, exclude: Any = ()) -> str:
    from agents.run.jobs import run_name

    return run_name(task_overrides, exclude)


def _study_seed(seed: int, storage: str | None = None, study_name: str | None = None) -> int:
    from agents.run.jobs import study_seed

    return study_seed(seed, storage, study_name)


OmegaConf.register_new_resolver("num_updates", _num_updates, replace=True)
OmegaConf.register_new_resolver("study_seed", _study_seed, replace=True)
OmegaConf.register_new_resolver("run_name", _run_name, replace=True)
register_configs()


def load_agent(path: str | Path, device: str | torch.device | None = None) -> Agent:
    """A trained agent from a run directory, its ``checkpoints/`` folder, or one checkpoint.

    The agent is rebuilt from the config and env spaces stored in the checkpoint (no env is
    made) and its saved state is loaded; nothing is unpickled, and the saved config may only
    name registered classes (:mod:`agents.run.registry`).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: a damaged or foreign checkpoint (naming the file and the problem).
        UntrustedConfigError: the saved config names an unregistered class.

    Args:
        path: run directory (uses ``checkpoints/latest``) or checkpoint directory.
        device: where to put the agent; defaults to the device of the saved run, or CPU
            when that device is not available here.
    """
    import torch
    from hydra.utils import instantiate

    from agents.core.spaces import space_from_json
    from agents.run.checkpoint import META_FILE, CheckpointError, load_checkpoint, resolve_checkpoint
    from agents.run.registry import check_trusted

    directory = resolve_checkpoint(path)
    state, meta = load_checkpoint(directory)
    source = directory / META_FILE
    agent_cfg = meta.get("agent_config")
    if not isinstance(agent_cfg, dict) or "_target_" not in agent_cfg:
        raise CheckpointError(source, "has no agent config ('agent_config' with a '_target_')")
    check_trusted(agent_cfg, str(source))
    agent_cfg = dict(agent_cfg)
    if device is None:
        saved = str(agent_cfg.get("device", "cpu"))
        device = saved if not saved.startswith("cuda") or torch.cuda.is_available() else "cpu"
    agent_cfg["device"] = str(device)
    try:
        observation_space = space_from_json(meta["observation_space"])
        action_space = space_from_json(meta["action_space"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(source, f"has no valid env spaces ({type(error).__name__}: {error})") from None
    agent = instantiate(agent_cfg, observation_space=observation_space, action_space=action_space)
    load_agent_state(agent, state, directory)
    return agent


def load_agent_state(agent: Agent, state: dict[str, Any], directory: str | Path) -> None:
    """``agent.load_state_dict(state["agent"])``, with an error naming the checkpoint if it does not fit."""
    from agents.run.checkpoint import CheckpointError

    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        raise CheckpointError(
            directory,
            f"does not hold a {type(agent).__name__} of this configuration "
            f"({type(error).__name__}: {str(error)[:300]})",
        ) from None
