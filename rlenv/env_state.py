"""Snapshot and restore the state of an env (single or vector) as plain data.

Resuming a run exactly needs the envs' state: boards, positions, step counters, the
generators that draw opponents and prompts. An env that defines ``get_state()`` and
``set_state(state)`` is asked for it. Any other env, wrapper or vector env is walked: every
attribute that holds plain data (numbers, strings, tensors, arrays, lists, tuples and dicts
of those) or a random generator (NumPy, torch, Python) is recorded, and the walk goes on
into the envs an object wraps (``env``, ``envs``, ...). Other attributes (spaces, models,
tokenizers, renderers, callables) and large Python containers (more than
``MAX_CONTAINER_ITEMS`` items, such as transition tables) are taken to be configuration and
left alone.

This covers Gymnasium's pure-Python envs (classic control, toy text), its wrappers and its
synchronous and NumPy-vectorized envs, and the envs of this project. An env whose state
lives in foreign objects (a physics engine, a subprocess) cannot be restored this way:
:func:`get_env_state` reports such vector envs in ``state["unsupported"]``.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch

_PLAIN = (bool, int, float, str, type(None))
_MAX_DEPTH = 32
# Python containers (lists, tuples, dicts, nested) with more items than this are taken to be
# configuration, not state: e.g. the transition tables ``P`` of Gymnasium's toy-text envs.
# Tensors and arrays count as state whatever their size.
MAX_CONTAINER_ITEMS = 4096


def _is_env(value: Any) -> bool:
    return isinstance(value, (gym.Env, gym.vector.VectorEnv, gym.Wrapper, gym.vector.VectorWrapper))


def _plain(value: Any) -> bool:
    """Whether ``value`` is plain data small enough to be state (see ``MAX_CONTAINER_ITEMS``)."""
    budget = [MAX_CONTAINER_ITEMS]
    return _plain_within(value, 0, budget)


def _plain_within(value: Any, depth: int, budget: list[int]) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (torch.Tensor, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, (list, tuple, dict)):
        budget[0] -= len(value)
        if budget[0] < 0:
            return False
        if isinstance(value, dict):
            items = value.items()
            return all(isinstance(k, _PLAIN) and _plain_within(v, depth + 1, budget) for k, v in items)
        return all(_plain_within(item, depth + 1, budget) for item in value)
    return False


def _generator_state(value: Any) -> dict[str, Any] | None:
    if isinstance(value, np.random.Generator):
        return {"numpy_generator": copy.deepcopy(value.bit_generator.state)}
    if isinstance(value, np.random.RandomState):
        name, keys, pos, has_gauss, cached = value.get_state()
        return {"numpy_random_state": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if isinstance(value, torch.Generator):
        return {"torch_generator": value.get_state(), "device": str(value.device)}
    if isinstance(value, random.Random):
        version, internal, gauss = value.getstate()
        return {"python_random": [version, list(internal), gauss]}
    return None


def _restore_generator(current: Any, state: dict[str, Any]) -> Any:
    if "numpy_generator" in state:
        bits = state["numpy_generator"]
        generator = current
        if not isinstance(current, np.random.Generator) or type(current.bit_generator).__name__ != bits.get(
            "bit_generator"
        ):
            generator = np.random.Generator(getattr(np.random, str(bits["bit_generator"]))())
        generator.bit_generator.state = bits
        return generator
    if "numpy_random_state" in state:
        generator = current if isinstance(current, np.random.RandomState) else np.random.RandomState()
        name, keys, pos, has_gauss, cached = state["numpy_random_state"]
        generator.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        return generator
    if "torch_generator" in state:
        generator = current if isinstance(current, torch.Generator) else torch.Generator(state["device"])
        generator.set_state(state["torch_generator"])
        return generator
    generator = current if isinstance(current, random.Random) else random.Random()
    version, internal, gauss = state["python_random"]
    generator.setstate((version, tuple(internal), gauss))
    return generator


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _restore_value(current: Any, saved: Any) -> Any:
    """``saved`` in the form ``current`` had (device, array vs tensor), copied."""
    if isinstance(current, torch.Tensor) and isinstance(saved, torch.Tensor):
        return saved.to(device=current.device, dtype=saved.dtype).clone()
    if isinstance(current, np.ndarray) and isinstance(saved, np.ndarray):
        return saved.astype(saved.dtype, copy=True)
    if isinstance(current, tuple) and isinstance(saved, list):
        return tuple(saved)
    return _copy(saved)


def _object_state(obj: Any, seen: set[int]) -> dict[str, Any]:
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if callable(getattr(obj, "get_state", None)) and callable(getattr(obj, "set_state", None)):
        return {"custom": obj.get_state()}
    values: dict[str, Any] = {}
    generators: dict[str, Any] = {}
    children: dict[str, Any] = {}
    for name, value in vars(obj).items():
        generator = _generator_state(value)
        if generator is not None:
            generators[name] = generator
        elif _is_env(value):
            children[name] = _object_state(value, seen)
        elif isinstance(value, (list, tuple)) and value and all(_is_env(v) for v in value):
            children[name] = [_object_state(v, seen) for v in value]
        elif _plain(value):
            values[name] = _copy(value)
    return {"values": values, "generators": generators, "children": children}


def _set_object_state(obj: Any, state: dict[str, Any]) -> None:
    if not state:
        return
    if "custom" in state:
        obj.set_state(state["custom"])
        return
    for name, saved in state.get("values", {}).items():
        setattr(obj, name, _restore_value(getattr(obj, name, None), saved))
    for name, saved in state.get("generators", {}).items():
        setattr(obj, name, _restore_generator(getattr(obj, name, None), saved))
    for name, child in state.get("children", {}).items():
        current = getattr(obj, name)
        if isinstance(child, list):
            if len(child) != len(current):
                raise ValueError(
                    f"saved env state has {len(child)} sub-envs in {name!r}, this env {len(current)}"
                )
            for sub, sub_state in zip(current, child, strict=True):
                _set_object_state(sub, sub_state)
        else:
            _set_object_state(current, child)


def _unsupported(env: Any, seen: set[int] | None = None) -> list[str]:
    """Vector envs in ``env`` whose state lives in other processes."""
    seen = seen if seen is not None else set()
    if id(env) in seen:
        return []
    seen.add(id(env))
    found = [type(env).__name__] if isinstance(env, gym.vector.AsyncVectorEnv) else []
    for value in vars(env).values():
        if _is_env(value):
            found.extend(_unsupported(value, seen))
    return found


def get_env_state(env: Any) -> dict[str, Any]:
    """The env's state as plain data (tensors, arrays, numbers, strings, lists, dicts)."""
    return {"state": _object_state(env, set()), "unsupported": _unsupported(env)}


def set_env_state(env: Any, state: dict[str, Any]) -> None:
    """Restore a state from :func:`get_env_state` into an env built from the same config."""
    _set_object_state(env, state["state"])
