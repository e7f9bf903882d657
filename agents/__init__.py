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


OmegaConf.register_new_resolver("num_updates", _num_updates, replace=True)
register_configs()


def load_agent(path: str | Path, device: str | torch.device | None = None) -> Agent:
    """A trained agent from a run directory, its ``checkpoints/`` folder, or one checkpoint.

    The agent is rebuilt from the config and env spaces stored in the checkpoint (no env is
    made) and its saved state is loaded; nothing is unpickled.

    Args:
        path: run directory (uses ``checkpoints/latest``) or checkpoint directory.
        device: where to put the agent; defaults to the device of the saved run, or CPU
            when that device is not available here.
    """
    import torch
    from hydra.utils import instantiate

    from agents.core.spaces import space_from_json
    from agents.run.checkpoint import load_checkpoint

    state, meta = load_checkpoint(path)
    agent_cfg: dict[str, Any] = dict(meta["agent_config"])
    if device is None:
        saved = str(agent_cfg.get("device", "cpu"))
        device = saved if not saved.startswith("cuda") or torch.cuda.is_available() else "cpu"
    agent_cfg["device"] = str(device)
    agent = instantiate(
        agent_cfg,
        observation_space=space_from_json(meta["observation_space"]),
        action_space=space_from_json(meta["action_space"]),
    )
    agent.load_state_dict(state["agent"])
    return agent
