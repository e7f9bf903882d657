"""Any registered Gymnasium env as a vector env of torch tensors: ``env=gym env.id=<id>``.

:func:`make_vector_env` calls ``gymnasium.make_vec`` (the env's own vector entry point when
it registers one, else a synchronous or asynchronous vector of copies) and wraps the result
in :class:`TorchVectorEnv`, so every vector env the agents meet speaks torch: observations,
rewards, flags and the arrays of ``info`` come back as tensors on ``device``, and actions go
in as tensors. The env's autoreset mode is kept in ``metadata["autoreset_mode"]``; the
collector reads it (same-step, next-step and disabled modes are all handled there).

Observation spaces: ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``, and ``Dict``
or ``Tuple`` of these (a ``Tuple`` is seen as a ``Dict`` with keys ``"0"``, ``"1"``, ... in
order); action space: ``Discrete`` (the agents choose one index per step). Other spaces are
refused with an error that names the space.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import TimeLimit
from torch import Tensor

VECTORIZATION_MODES = ("auto", "vector_entry_point", "sync", "async")
AUTORESET_MODES = {mode.name.lower(): mode for mode in AutoresetMode}
LEAF_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def to_torch(value: Any, device: torch.device) -> Any:
    """NumPy arrays (also inside dicts) as tensors on ``device``; other values unchanged."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.as_tensor(value, device=device)
    if isinstance(value, (np.bool_, np.number)):
        return torch.as_tensor(value, device=device)
    if isinstance(value, Mapping):
        return {key: to_torch(item, device) for key, item in value.items()}
    return value


def check_observation_space(space: gym.Space, env_id: str = "") -> None:
    """Raise a ValueError naming ``space`` unless the agents can read it."""
    where = f" of {env_id}" if env_id else ""
    if isinstance(space, spaces.Dict):
        for key, child in space.spaces.items():
            check_observation_space(child, f"{env_id}[{key!r}]" if env_id else repr(key))
        return
    if not isinstance(space, LEAF_SPACES):
        raise ValueError(
            f"observation space{where} is {space}; supported: Box, Discrete, MultiDiscrete, "
            "MultiBinary and Dict of them"
        )


def check_action_space(space: gym.Space, env_id: str = "") -> None:
    """Raise a ValueError naming ``space`` unless it is ``Discrete``."""
    if not isinstance(space, spaces.Discrete):
        where = f" of {env_id}" if env_id else ""
        raise ValueError(f"action space{where} is {space}; the agents need a Discrete action space")


class TorchVectorEnv(gym.vector.VectorWrapper):
    """A NumPy vector env seen through torch tensors on ``device``.

    The agents choose indices ``0 .. n - 1``: an action space ``Discrete(n, start=s)`` is seen
    as ``Discrete(n)`` and ``step`` adds ``s`` to the actions. Everything the env returns that
    is an array, including the entries of ``info`` and ``info["final_obs"]``, comes back as a
    tensor on ``device``.
    """

    def __init__(self, env: gym.vector.VectorEnv, device: str | torch.device = "cpu") -> None:
        super().__init__(env)
        self.device = torch.device(device)
        self.action_start = 0
        action_space = env.single_action_space
        if isinstance(action_space, spaces.Discrete) and int(action_space.start) != 0:
            self.action_start = int(action_space.start)
            self.single_action_space = spaces.Discrete(int(action_space.n))
            self.action_space = gym.vector.utils.batch_space(self.single_action_space, env.num_envs)
        self.tuple_observations = isinstance(env.single_observation_space, spaces.Tuple)
        if self.tuple_observations:
            self.single_observation_space = tuple_as_dict(env.single_observation_space)
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def _observation(self, obs: Any) -> Any:
        if self.tuple_observations and isinstance(obs, (tuple, list)):
            obs = {str(index): item for index, item in enumerate(obs)}
        return to_torch(obs, self.device)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs), to_torch(info, self.device)

    def step(self, actions: Any) -> tuple[Any, Tensor, Tensor, Tensor, dict[str, Any]]:
        if isinstance(actions, Tensor):
            actions = actions.detach().cpu().numpy()
        actions = np.asarray(actions) + self.action_start
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        info = dict(info)
        final_obs = info.get("final_obs")
        if isinstance(final_obs, np.ndarray) and final_obs.dtype == object:
            present = np.asarray(info.get("_final_obs", [item is not None for item in final_obs]))
            info["final_obs"] = _stack_rows(final_obs, present, obs)
        if "final_obs" in info:
            info["final_obs"] = self._observation(info["final_obs"])
        final_info = info.pop("final_info", None)
        present = info.pop("_final_info", None)
        if isinstance(final_info, Mapping) and "action_mask" in final_info and present is not None:
            ended = np.asarray(present, dtype=bool)
            masks = np.asarray(info.get("action_mask", final_info["action_mask"])).copy()
            masks[ended] = np.asarray(final_info["action_mask"])[ended]
            info["final_action_mask"] = masks
        return (
            self._observation(obs),
            torch.as_tensor(np.asarray(rewards), device=self.device).float(),
            torch.as_tensor(np.asarray(terminated), device=self.device).bool(),
            torch.as_tensor(np.asarray(truncated), device=self.device).bool(),
            to_torch(info, self.device),
        )


def tuple_as_dict(space: spaces.Tuple) -> spaces.Dict:
    """A ``Tuple`` space as a ``Dict`` with keys ``"0"``, ``"1"``, ... in the tuple's order."""
    return spaces.Dict(OrderedDict((str(index), child) for index, child in enumerate(space.spaces)))


def _stack_rows(rows: np.ndarray, present: np.ndarray, current: Any) -> Any:
    """Per-row final observations (an object array) as one batch; absent rows take ``current``."""
    if isinstance(current, (tuple, list)):
        return tuple(
            _stack_rows(
                np.array([row[i] if row is not None else None for row in rows], dtype=object), present, part
            )
            for i, part in enumerate(current)
        )
    if isinstance(current, Mapping):
        return {
            key: _stack_rows(
                np.array([row[key] if row is not None else None for row in rows], dtype=object),
                present,
                value,
            )
            for key, value in current.items()
        }
    batch = np.array(current, copy=True)
    for index in np.flatnonzero(present):
        batch[index] = rows[index]
    return batch


def make_vector_env(
    id: str,
    num_envs: int = 8,
    kwargs: Mapping[str, Any] | None = None,
    vectorization_mode: str = "auto",
    autoreset_mode: str | None = None,
    device: str | torch.device = "cpu",
    wrappers: list[Any] | None = None,
    max_episode_steps: int | None = None,
) -> gym.vector.VectorEnv:
    """``gymnasium.make_vec(id, num_envs, **kwargs)`` as a :class:`TorchVectorEnv`.

    Args:
        id: a registered Gymnasium id (``CartPole-v1``, ``Taxi-v4``, ``rlenv/TicTacToe-v0``,
            ``module:Id`` to import the module that registers it first).
        num_envs: envs stepped together.
        kwargs: constructor arguments of the env.
        vectorization_mode: ``auto`` (the env's vector entry point when it has one, else
            ``sync``), ``vector_entry_point``, ``sync`` or ``async``.
        autoreset_mode: ``same_step``, ``next_step`` or ``disabled`` for ``sync``/``async``
            vectors (``None``: Gymnasium's default); the env's own vector entry point keeps
            its mode.
        device: where the returned tensors live. Envs whose own vector form computes in
            torch get ``device`` as a constructor argument when they accept one.
        wrappers: single-env wrappers (classes or callables) for ``sync``/``async`` vectors.
        max_episode_steps: truncate episodes after this many steps (``None``: the env's
            registered limit, if any). Envs without any limit can run forever.
    """
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"vectorization_mode={vectorization_mode!r} is not one of {list(VECTORIZATION_MODES)}"
        )
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    if ":" in id:
        import importlib

        module_name, _, id = id.partition(":")
        importlib.import_module(module_name)
    try:
        spec = gym.spec(id)
    except gym.error.Error as error:
        raise ValueError(f"env.id={id!r} is not a registered Gymnasium env: {error}") from error
    env_kwargs = dict(kwargs or {})
    mode = vectorization_mode
    if mode == "auto":
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
    vector_kwargs: dict[str, Any] = {}
    if mode == "vector_entry_point":
        if spec.vector_entry_point is None:
            raise ValueError(f"{id} has no vector entry point; use vectorization_mode=sync or async")
        if _accepts(spec.vector_entry_point, "device"):
            env_kwargs.setdefault("device", str(device))
    elif autoreset_mode is not None:
        if autoreset_mode not in AUTORESET_MODES:
            raise ValueError(f"autoreset_mode={autoreset_mode!r} is not one of {list(AUTORESET_MODES)}")
        vector_kwargs["autoreset_mode"] = AUTORESET_MODES[autoreset_mode]
    if max_episode_steps is not None:
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be at least 1 or null, got {max_episode_steps}")
        if mode == "vector_entry_point":
            if not _accepts(spec.vector_entry_point, "max_episode_steps"):
                raise ValueError(
                    f"the vector entry point of {id} takes no max_episode_steps; use vectorization_mode=sync"
                )
            env_kwargs["max_episode_steps"] = int(max_episode_steps)
        else:
            limit = functools.partial(TimeLimit, max_episode_steps=int(max_episode_steps))
            wrappers = [*(wrappers or []), limit]
    if wrappers and mode == "vector_entry_point":
        raise ValueError(f"single-env wrappers need vectorization_mode=sync or async, not {mode}")
    env = gym.make_vec(
        id,
        num_envs=int(num_envs),
        vectorization_mode=mode,
        vector_kwargs=vector_kwargs or None,
        wrappers=list(wrappers) if wrappers else None,
        **env_kwargs,
    )
    wrapped = TorchVectorEnv(env, device)
    check_observation_space(wrapped.single_observation_space, id)
    check_action_space(wrapped.single_action_space, id)
    return wrapped


def _accepts(entry_point: Any, name: str) -> bool:
    """Whether the vector entry point's constructor takes the keyword ``name``."""
    import inspect

    if isinstance(entry_point, str):
        module_name, _, attribute = entry_point.partition(":")
        import importlib

        entry_point = getattr(importlib.import_module(module_name), attribute)
    try:
        parameters = inspect.signature(entry_point).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters
