"""Which agents and networks fit which envs, checked before anything heavy is built.

Every agent class and network class may define ``check_spaces(observation_space,
action_space)``: a static method that raises ``TypeError`` or ``ValueError`` saying what it
needs when the spaces do not fit. :func:`check_pair` calls the agent's and its network's
checks on an env's spaces and turns a refusal into :class:`IncompatiblePairError`, which
names the env, the agent and what the agent needs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium
from hydra.utils import get_class


class IncompatiblePairError(ValueError):
    """An env and an agent (or its network) that cannot work together."""


def target_class(config: Any) -> type | None:
    """The class a config node or factory builds: ``_target_`` of a mapping, ``func`` of a partial."""
    if isinstance(config, functools.partial):
        config = config.func
    if isinstance(config, type):
        return config
    if isinstance(config, Mapping) or hasattr(config, "get"):
        target = config.get("_target_")
        if isinstance(target, str):
            try:
                return get_class(target)
            except Exception:  # not a class (a function), or not importable: nothing to check
                return None
    return None


def check_pair(
    agent_config: Any,
    observation_space: gymnasium.Space,
    action_space: gymnasium.Space,
    env_name: str = "env",
    agent_name: str | None = None,
) -> None:
    """Raise :class:`IncompatiblePairError` unless the agent and its network accept the spaces."""
    agent_class = target_class(agent_config)
    network_config = agent_config.get("network") if hasattr(agent_config, "get") else None
    parts = [("agent", agent_class), ("network", target_class(network_config))]
    name = agent_name or (agent_class.__name__ if agent_class else "agent")
    for role, cls in parts:
        check = getattr(cls, "check_spaces", None) if cls is not None else None
        if check is None:
            continue
        try:
            check(observation_space, action_space)
        except (TypeError, ValueError) as error:
            what = cls.__name__ if role == "agent" else f"its network {cls.__name__}"
            raise IncompatiblePairError(
                f"env={env_name} and agent={name} do not fit together ({what}): {error}"
            ) from error
